"""Small classic datasets shipped inside scikit-learn (read from its package files, offline).

Only ``sklearn.datasets.load_*`` is used: those read files installed with scikit-learn.
The ``fetch_*`` loaders download and are never used.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from forgeline.core import Dataset, Modality, Params, StageContext, Table

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.utils import Bunch

TARGET = "target"


class SklearnDataset(Dataset):
    """Base of the scikit-learn datasets: subclasses name the ``load_*`` function."""

    default_target = TARGET
    modalities = frozenset({Modality.NUMERIC})
    #: name of the function in ``sklearn.datasets``
    loader: ClassVar[str]
    task: ClassVar[str] = "classification"

    def _bunch(self) -> Bunch:
        import sklearn.datasets

        return getattr(sklearn.datasets, self.loader)(**self._loader_kwargs())

    def _loader_kwargs(self) -> dict[str, Any]:
        return {}

    def problems(self) -> list[tuple[str, str]]:
        if importlib.util.find_spec("sklearn") is None:
            return [("source", f"dataset {self.name!r} needs scikit-learn; pip install scikit-learn")]
        return []

    def columns(self) -> list[str] | None:
        return [*self._bunch().feature_names, TARGET]

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        bunch = self._bunch()
        frame = pd.DataFrame(np.asarray(bunch.data), columns=list(bunch.feature_names))
        frame[TARGET] = bunch.target
        return Table.from_frame(frame, TARGET, meta=self._meta(bunch))

    def _meta(self, bunch: Bunch) -> dict[str, Any]:
        meta: dict[str, Any] = {"task": self.task, "source": f"sklearn.datasets.{self.loader}"}
        if "target_names" in bunch:
            meta["target_names"] = [str(t) for t in bunch.target_names]
        return meta


class BreastCancer(SklearnDataset):
    """Wisconsin breast-cancer diagnosis: 569 tumours, 30 numeric features, binary target."""

    name = "breast-cancer"
    loader = "load_breast_cancer"


class Wine(SklearnDataset):
    """Wine recognition: 178 wines, 13 chemical measurements, 3 cultivars."""

    name = "wine"
    loader = "load_wine"


class DiabetesParams(Params):
    scaled: bool = Field(True, description="features mean-centred and scaled as scikit-learn ships "
                         "them; false: the original units (age in years, bmi, blood pressure ...)")


class Diabetes(SklearnDataset):
    """Diabetes progression (regression): 442 patients, 10 baseline measurements."""

    name = "diabetes"
    loader = "load_diabetes"
    task = "regression"
    Params = DiabetesParams

    def _loader_kwargs(self) -> dict[str, Any]:
        return {"scaled": self.params.scaled}


class DigitsParams(Params):
    as_image: bool = Field(False, description="give each digit as an 'image' array (N x 1 x 8 x 8 "
                           "float32) instead of 64 pixel columns")
    scale: bool = Field(False, description="divide pixel intensities (0-16) by 16 so they lie in [0, 1]")


class Digits(SklearnDataset):
    """Handwritten digits: 1,797 8x8 greyscale images of 0-9, as pixel columns or an image array."""

    name = "digits"
    loader = "load_digits"
    Params = DigitsParams
    # the class declares every modality it can produce; each instance narrows it to its own
    modalities = frozenset({Modality.NUMERIC, Modality.IMAGE})

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.modalities = frozenset({Modality.IMAGE if self.params.as_image else Modality.NUMERIC})

    def columns(self) -> list[str] | None:
        return [TARGET] if self.params.as_image else super().columns()

    def load(self, ctx: StageContext | None = None) -> Table:
        if not self.params.as_image:
            table = super().load(ctx)
            if self.params.scale:
                pixels = table.schema.features()
                table.frame[pixels] = table.frame[pixels] / 16.0
            return table
        import pandas as pd

        bunch = self._bunch()
        images = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :]
        if self.params.scale:
            images /= 16.0
        frame = pd.DataFrame({TARGET: bunch.target})
        return Table.from_frame(frame, TARGET, arrays={"image": images}, meta=self._meta(bunch))


DATASETS = [BreastCancer, Digits, Wine, Diabetes]
