"""The ``credit-files`` dataset: the credit table generated file by file into Parquet, read back.

A table larger than memory cannot be generated in memory: this one is written as ``files``
Parquet files, each an independent ``credit`` table of ``rows / files`` rows drawn with the
seed plus the file's number, one at a time, into a folder named by the parameters (reused
when complete). Engine dask reads the files lazily, a partition each; engine pandas reads
them all. The injected faults of every file are kept beside it, so both engines can score
the cleaners against the ground truth (pandas) or report it (dask).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field

from forgeline.core import Dataset, InputError, StageContext, Table

from .credit import COLUMNS, TARGET, Credit, CreditParams

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd

    from forgeline.core.pipeline import DaskSettings


class CreditFilesParams(CreditParams):
    rows: int = Field(1_000_000, ge=10, description="rows in all, shared evenly among the files")
    files: int = Field(16, ge=1, le=100_000, description="Parquet files written (one in memory at a time)")
    folder: str = Field("~/.cache/forgeline/credit-files", description="where the files go: a subfolder "
                        "per parameters and seed, reused when complete")


class CreditFiles(Dataset):
    """The credit table (injected faults included) generated file by file into Parquet files."""

    name = "credit-files"
    Params = CreditFilesParams
    default_target = TARGET
    modalities = Credit.modalities

    def _rows(self, i: int) -> int:
        base, extra = divmod(self.params.rows, self.params.files)
        return base + (i < extra)

    def _part(self, i: int) -> Credit:
        p = self.params.model_dump(exclude={"files", "folder"})
        return Credit(**{**p, "rows": self._rows(i)})

    def problems(self) -> list[tuple[str, str]]:
        if self.params.rows // self.params.files < 10:
            return [("files", f"{self.params.files} files of {self.params.rows} rows leave fewer than 10 rows "
                              f"a file; use fewer files")]
        return self._part(0).problems()

    def columns(self) -> list[str] | None:
        return list(COLUMNS)

    def files(self, ctx: StageContext | None = None) -> list[Path]:
        """The Parquet files, generated now where missing (each written to a temporary name first)."""
        found = self.problems()
        if found:
            raise InputError(found[0][1])
        seed = self.using(ctx).seed
        key = json.dumps({**self.params.model_dump(exclude={"folder"}), "seed": seed}, sort_keys=True)
        folder = Path(os.path.expanduser(self.params.folder)) / hashlib.sha256(key.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for i in range(self.params.files):
            path = folder / f"part-{i:05d}.parquet"
            if not path.exists():
                table = self._part(i).load(StageContext(seed=seed + i))
                tmp = folder / f".part-{i:05d}.{os.getpid()}.tmp"
                table.frame.reset_index(drop=True).to_parquet(tmp, index=False)
                table.meta["ground_truth"].reset_index(drop=True).to_parquet(folder / f"truth-{i:05d}.parquet")
                os.replace(tmp, path)
            out.append(path)
        return out

    def partitions(self, settings: DaskSettings) -> dd.DataFrame:
        """Engine dask: the files read lazily, one partition each."""
        import dask.dataframe as dd

        return dd.read_parquet([str(f) for f in self.files(self.context)])

    def load(self, ctx: StageContext | None = None) -> Table:
        import pandas as pd

        files = self.files(ctx)
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        truth = pd.concat([pd.read_parquet(f.with_name(f.name.replace("part-", "truth-"))) for f in files],
                          ignore_index=True)
        table = Table.from_frame(frame, TARGET, meta={"task": "classification"})
        truth.index = table.frame.index.copy()
        table.meta["ground_truth"] = truth
        return table
