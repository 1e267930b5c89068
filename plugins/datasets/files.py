"""The ``file`` dataset: a CSV or Parquet file read with pandas / pyarrow."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from forgeline.core import Dataset, InputError, Params, StageContext, Table

if TYPE_CHECKING:  # pragma: no cover
    import dask.dataframe as dd
    import pandas as pd

    from forgeline.core.pipeline import DaskSettings

# compressed CSVs keep their inner extension (x.csv.gz); pandas infers the compression itself
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


def detect_format(path: Path) -> Literal["csv", "parquet"] | None:
    """The format a file's extension names, or None when the extension is unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    if not suffixes:
        return None
    if suffixes[-1] in _CSV_SUFFIXES:
        return "csv"
    if suffixes[-1] in _PARQUET_SUFFIXES:
        return "parquet"
    return None


class FileParams(Params):
    path: str = Field(description="the CSV or Parquet file to read (a partitioned Parquet "
                      "dataset may be a folder, with format: parquet)")
    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="file format; auto: from the extension (.csv/.tsv/.txt, optionally "
        "compressed as .gz/.bz2/.zip/.xz/.zst, or .parquet/.pq)")
    columns: list[str] | None = Field(None, min_length=1,
                                      description="read only these columns (default: all)")
    sep: str | None = Field(None, min_length=1,
                            description="csv: field separator (default: tab for .tsv, else comma)")
    na_values: list[str] = Field(default_factory=list, description="csv: strings read as missing, "
                                 "besides pandas' defaults ('', 'NA', 'NaN', 'null', ...)")
    encoding: str = Field("utf-8", description="csv: text encoding of the file")


class FileDataset(Dataset):
    """Rows of a CSV or Parquet file."""

    name = "file"
    Params = FileParams

    # ------------------------------------------------------------------ resolution
    @property
    def path(self) -> Path:
        return Path(self.params.path).expanduser()

    @property
    def pattern(self) -> bool:
        """The path is a glob (``data/*.parquet``): every matching file, in name order."""
        return glob.has_magic(str(self.path))

    def files(self) -> list[str]:
        """The files (or Parquet folder) read: the glob's matches in name order, else the path."""
        return sorted(glob.glob(str(self.path))) if self.pattern else [str(self.path)]

    def partitions(self, settings: DaskSettings) -> dd.DataFrame:
        """Engine dask: the rows read lazily, a partition per Parquet file (or row group) or per
        ``settings.blocksize`` bytes of CSV, in file order."""
        import dask.dataframe as dd

        found = self.problems()
        if found:
            raise InputError("; ".join(msg for _, msg in found))
        files = self.files()
        if self.resolved_format() == "parquet":
            return dd.read_parquet(files if self.pattern else files[0], columns=self.params.columns)
        return dd.read_csv(files, usecols=self.params.columns, blocksize=settings.blocksize,
                           **self._csv_options())

    def resolved_format(self) -> Literal["csv", "parquet"] | None:
        if self.params.format != "auto":
            return self.params.format
        return detect_format(self.path)

    def _csv_options(self) -> dict:
        sep = self.params.sep or ("\t" if ".tsv" in [s.lower() for s in self.path.suffixes] else ",")
        return {"sep": sep, "encoding": self.params.encoding,
                "na_values": self.params.na_values or None}

    def _header(self) -> list[str]:
        """Column names, reading only the header (CSV) or the schema (Parquet)."""
        if self.resolved_format() == "parquet":
            import pyarrow.dataset as ds

            return list(ds.dataset(self.files(), format="parquet").schema.names)
        import pandas as pd

        # the first row as values: read as a header, pandas renames repeated names ("a", "a.1")
        first = pd.read_csv(self.files()[0], nrows=1, header=None, dtype=str, keep_default_na=False,
                            **{k: v for k, v in self._csv_options().items() if k != "na_values"})
        return [str(c) for c in first.iloc[0]] if len(first) else []

    # ------------------------------------------------------------------ Dataset protocol
    def problems(self) -> list[tuple[str, str]]:
        path, fmt = self.path, self.resolved_format()
        if self.pattern:
            if not self.files():
                return [("path", f"{path}: no file matches this pattern; give a glob matching .csv or "
                                 ".parquet files")]
            path = Path(self.files()[0])
        if not path.exists():
            return [("path", f"{path}: no such file; give the path of an existing .csv or .parquet file")]
        if path.is_dir() and fmt != "parquet":
            return [("path", f"{path} is a folder; give a file, or set format: parquet "
                             "for a partitioned Parquet dataset")]
        if path.is_file() and path.stat().st_size == 0:
            return [("path", f"{path} is empty (0 bytes); it has no rows: give a file with a header "
                             "and at least one row")]
        if fmt is None:
            return [("format", f"{path}: unknown extension {''.join(path.suffixes)!r}; use a .csv, .tsv "
                               "or .parquet file, or set format: csv or format: parquet")]
        try:
            header = self._header()
        except Exception as err:  # any reader failure means the same thing to the user
            return [("path", f"{path}: cannot read the {fmt.upper()} header "
                             f"({type(err).__name__}: {err}); is it a valid {fmt.upper()} file?")]
        if not header:
            return [("path", f"{path} has no columns; a {fmt.upper()} file needs a header row")]
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            return [("path", f"{path}: duplicate column names {', '.join(map(repr, twice))}; every column "
                             f"needs its own name (rename them in the file)")]
        nested = self._nested_columns()
        if nested:
            return [("path", f"{path}: columns {', '.join(map(repr, nested))} hold lists or records, one value "
                             f"per cell is needed; flatten them or read the others with columns: [...]")]
        missing = [c for c in self.params.columns or () if c not in header]
        if missing:
            return [("columns", f"{path} has no column {', '.join(map(repr, missing))}; "
                                f"it has: {', '.join(header)}")]
        return []

    def _nested_columns(self) -> list[str]:
        """Parquet columns of list/struct/map type (among those read)."""
        if self.resolved_format() != "parquet":
            return []
        import pyarrow as pa
        import pyarrow.dataset as ds

        schema = ds.dataset(self.files() if self.pattern else str(self.path), format="parquet").schema
        return [f.name for f in schema if pa.types.is_nested(f.type)
                and (not self.params.columns or f.name in self.params.columns)]

    def columns(self) -> list[str] | None:
        try:
            header = self._header()
        except Exception:
            return None  # problems() says why
        return [c for c in header if c in self.params.columns] if self.params.columns else header

    def load(self, ctx: StageContext | None = None) -> Table:
        found = self.problems()
        if found:
            raise InputError("; ".join(msg for _, msg in found))
        fmt = self.resolved_format()
        frame = self._read(fmt)
        if len(frame) == 0:
            raise InputError(f"{self.path} has no rows; a dataset file needs a header and at least one row")
        return Table.from_frame(frame, meta={"source": {"path": str(self.path), "format": fmt}})

    def _read(self, fmt: str) -> pd.DataFrame:
        import pandas as pd

        try:
            if fmt == "parquet":
                import pyarrow.dataset as ds

                source = self.files() if self.pattern else str(self.path)
                return ds.dataset(source, format="parquet").to_table(columns=self.params.columns).to_pandas()
            frame = pd.concat([pd.read_csv(f, usecols=self.params.columns, **self._csv_options())
                               for f in self.files()], ignore_index=True)
        except pd.errors.EmptyDataError:
            raise InputError(f"{self.path} has no rows; a dataset file needs a header and at least one row") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise InputError(f"{self.path}: cannot read it as {fmt.upper()} ({type(err).__name__}: {err}); "
                             "check sep/encoding or the file's contents") from None
        if self.params.columns:  # usecols keeps file order; honour the order the user gave
            frame = frame[self.params.columns]
        return frame
