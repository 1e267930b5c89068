"""Built-in datasets: CSV/Parquet files, scikit-learn's bundled sets, and generators."""

from __future__ import annotations

from forgeline.core import hookimpl

from .credit import Credit
from .credit_files import CreditFiles
from .files import FileDataset
from .sklearn_builtin import DATASETS as SKLEARN_DATASETS
from .synthetic import DATASETS as SYNTHETIC_DATASETS


@hookimpl
def forgeline_datasets() -> list[type]:
    return [FileDataset, *SKLEARN_DATASETS, Credit, CreditFiles, *SYNTHETIC_DATASETS]
