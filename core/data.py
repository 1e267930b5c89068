"""The one data handle every stage speaks: a table of rows with a schema and stable row ids.

A :class:`Table` is a pandas frame whose index is the **row id** (int64, named ``row_id``),
given once when the data is loaded and kept through every stage. Array modalities (images,
series, volumes) live beside the frame in :attr:`Table.arrays` as contiguous numpy arrays,
row-aligned with the frame (``arrays[col][i]`` belongs to ``frame.iloc[i]``).

pandas is imported lazily so that importing this module (and so listing plugins) stays cheap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ROW_ID = "row_id"


def hash_split(row_ids: np.ndarray, test: float, valid: float, seed: int) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) per row, from a hash of its row id and the seed.

    splitmix64 of ``row_id + seed * 2^32`` read as a number u in [0, 1): test when u < test,
    validation when u < test + valid. Every process, worker and engine computes the same
    assignment from the row ids alone; shares hold in expectation (not stratified).
    """
    with np.errstate(over="ignore"):
        z = np.asarray(row_ids, dtype=np.int64).astype(np.uint64) + np.uint64(seed % 2**32) * np.uint64(2**32)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.where(u < test, 2, np.where(u < test + valid, 1, 0)).astype(np.int8)


class Role(StrEnum):
    """What a column is for."""

    FEATURE = "feature"
    TARGET = "target"
    ID = "id"
    WEIGHT = "weight"
    GROUP = "group"
    TIME = "time"


class Modality(StrEnum):
    """What kind of values a column holds."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"
    TEXT = "text"
    DATETIME = "datetime"
    IMAGE = "image"
    SERIES = "series"
    VOLUME = "volume"


#: Modalities stored as row-aligned numpy arrays beside the frame, not as frame columns.
ARRAY_MODALITIES = frozenset({Modality.IMAGE, Modality.SERIES, Modality.VOLUME})


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    role: Role = Role.FEATURE
    modality: Modality = Modality.NUMERIC


@dataclass(frozen=True)
class Schema:
    """Role and modality of every column, in order."""

    columns: tuple[ColumnSpec, ...] = ()

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.columns)

    def __getitem__(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def names(self, role: Role | None = None, modality: Modality | Iterable[Modality] | None = None) -> list[str]:
        """Column names, optionally filtered by role and modality (one or several)."""
        mods = {modality} if isinstance(modality, Modality) else set(modality) if modality else None
        return [c.name for c in self.columns
                if (role is None or c.role == role) and (mods is None or c.modality in mods)]

    def features(self, modality: Modality | Iterable[Modality] | None = None) -> list[str]:
        return self.names(Role.FEATURE, modality)

    @property
    def target(self) -> str | None:
        t = self.names(Role.TARGET)
        return t[0] if t else None

    @property
    def modalities(self) -> frozenset[Modality]:
        """Modalities of the feature columns."""
        return frozenset(c.modality for c in self.columns if c.role == Role.FEATURE)

    def without(self, names: Iterable[str]) -> Schema:
        drop = set(names)
        return Schema(tuple(c for c in self.columns if c.name not in drop))

    def with_columns(self, specs: Iterable[ColumnSpec]) -> Schema:
        """This schema with ``specs`` added (or replacing columns of the same name)."""
        specs = list(specs)
        new = {s.name for s in specs}
        return Schema(tuple(c for c in self.columns if c.name not in new) + tuple(specs))

    def to_dict(self) -> list[dict[str, str]]:
        return [{"name": c.name, "role": str(c.role), "modality": str(c.modality)} for c in self.columns]

    @classmethod
    def from_dict(cls, items: Iterable[Mapping[str, str]]) -> Schema:
        """The schema :meth:`to_dict` wrote (KeyError/ValueError on a damaged one)."""
        return cls(tuple(ColumnSpec(str(c["name"]), Role(c["role"]), Modality(c["modality"])) for c in items))

    @classmethod
    def infer(cls, frame: pd.DataFrame, target: str | None = None,
              arrays: Mapping[str, np.ndarray] | None = None,
              overrides: Mapping[str, Mapping[str, str]] | None = None) -> Schema:
        """Guess each column's modality from its dtype; ``overrides`` maps name -> {role, modality}."""
        import pandas as pd

        overrides = overrides or {}
        specs = []
        for name in frame.columns:
            s = frame[name]
            if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
                mod = Modality.CATEGORICAL
            elif pd.api.types.is_numeric_dtype(s):
                mod = Modality.NUMERIC
            elif pd.api.types.is_datetime64_any_dtype(s):
                mod = Modality.DATETIME
            else:
                # object/string: free text when values are long or mostly unique, else categories
                vals = s.dropna().astype(str)
                text = len(vals) and (vals.str.len().mean() > 30 or vals.nunique() > 0.5 * len(vals))
                mod = Modality.TEXT if text else Modality.CATEGORICAL
            role = Role.TARGET if name == target else Role.FEATURE
            o = overrides.get(name, {})
            specs.append(ColumnSpec(str(name), Role(o.get("role", role)), Modality(o.get("modality", mod))))
        for name, arr in (arrays or {}).items():
            mod = {3: Modality.SERIES, 4: Modality.IMAGE}.get(arr.ndim, Modality.VOLUME) if arr.ndim > 2 else Modality.SERIES
            o = overrides.get(name, {})
            specs.append(ColumnSpec(name, Role(o.get("role", Role.FEATURE)), Modality(o.get("modality", mod))))
        return cls(tuple(specs))


@dataclass
class Table:
    """Rows (pandas, indexed by row id) + schema + row-aligned arrays + metadata.

    ``meta`` carries what travels with the data but is not a column, e.g.
    ``meta["ground_truth"]``: a frame indexed by row id with the faults a generator injected.
    """

    frame: pd.DataFrame
    schema: Schema
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frame.index.name != ROW_ID:
            raise ValueError(f"Table.frame must be indexed by {ROW_ID!r} (use Table.from_frame)")
        for name, arr in self.arrays.items():
            if len(arr) != len(self.frame):
                raise ValueError(f"array {name!r} has {len(arr)} rows, the table has {len(self.frame)}")

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, target: str | None = None, *,
                   arrays: Mapping[str, np.ndarray] | None = None, schema: Schema | None = None,
                   overrides: Mapping[str, Mapping[str, str]] | None = None,
                   meta: dict[str, Any] | None = None, first_id: int = 0) -> Table:
        """A new table with fresh row ids ``first_id, first_id+1, ...``."""
        twice = frame.columns[frame.columns.duplicated()]
        if len(twice):
            from .errors import InputError
            raise InputError(f"duplicate column names {', '.join(map(repr, dict.fromkeys(twice)))}; "
                             f"every column needs its own name")
        frame = frame.reset_index(drop=True)
        frame.index = np.arange(first_id, first_id + len(frame), dtype=np.int64)
        frame.index.name = ROW_ID
        arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
        schema = schema or Schema.infer(frame, target, arrays, overrides)
        return cls(frame, schema, arrays, dict(meta or {}))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def row_ids(self) -> np.ndarray:
        return self.frame.index.to_numpy()

    @property
    def target(self) -> str | None:
        return self.schema.target

    @property
    def X(self) -> pd.DataFrame:
        """The frame's feature columns (array modalities excluded)."""
        return self.frame[[c for c in self.schema.features() if c in self.frame.columns]]

    @property
    def y(self) -> pd.Series | None:
        return self.frame[self.target] if self.target else None

    def positions(self, row_ids: Iterable[int]) -> np.ndarray:
        """Positions of ``row_ids`` in this table (KeyError if one is missing)."""
        return self.frame.index.get_indexer_for(np.asarray(list(row_ids) if not isinstance(row_ids, np.ndarray) else row_ids))

    def take(self, row_ids: Iterable[int]) -> Table:
        """The rows with these ids, in the order given."""
        pos = self.positions(row_ids)
        if (pos < 0).any():
            raise KeyError("some row ids are not in the table")
        return self._at(pos)

    def take_positions(self, positions: np.ndarray) -> Table:
        """The rows at these positions (0 .. len-1), in the order given."""
        return self._at(np.asarray(positions, dtype=np.int64))

    def take_mask(self, mask: np.ndarray) -> Table:
        """The rows where the boolean ``mask`` (row-aligned) is true."""
        return self._at(np.flatnonzero(mask))

    def without(self, row_ids: Iterable[int]) -> Table:
        """All rows except these ids."""
        ids = np.asarray(list(row_ids) if not isinstance(row_ids, np.ndarray) else row_ids)
        return self.take_mask(~np.isin(self.row_ids, ids))

    def _at(self, pos: np.ndarray) -> Table:
        return replace(self, frame=self.frame.iloc[pos], arrays={k: v[pos] for k, v in self.arrays.items()})

    def with_frame(self, frame: pd.DataFrame, schema: Schema | None = None) -> Table:
        """Same rows, new columns (``frame`` must keep this table's row ids, in order)."""
        if not frame.index.equals(self.frame.index):
            raise ValueError("with_frame: the new frame must keep the table's row ids and order")
        return replace(self, frame=frame, schema=schema or self.schema)

    def append(self, other: Table) -> Table:
        """Rows of ``other`` after these (row ids must not collide)."""
        import pandas as pd

        if np.isin(other.row_ids, self.row_ids).any():
            raise ValueError("append: row ids collide")
        frame = pd.concat([self.frame, other.frame[self.frame.columns]])
        arrays = {k: np.concatenate([v, other.arrays[k]]) for k, v in self.arrays.items()}
        return replace(self, frame=frame, arrays=arrays)

    def fingerprint(self) -> dict[str, Any]:
        """sha256 over the frame and arrays, with the shape: identifies an input in the manifest."""
        import pandas as pd

        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.frame, index=True).to_numpy().tobytes())
        for name in sorted(self.arrays):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.arrays[name]).tobytes())
        return {"sha256": h.hexdigest(), "rows": len(self), "columns": len(self.schema.columns)}
