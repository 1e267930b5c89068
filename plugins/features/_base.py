"""What the built-in feature transforms share: input handling, schema, fitted checks, reports.

:class:`FeatureStep` turns the scikit-learn protocol into three small methods per component
(``_fit``, ``_transform``, ``_report``) and does the rest once: numpy input becomes a frame
with sklearn's ``x0, x1, ...`` names, the schema is inferred when none is given (plain sklearn
``Pipeline``), transforming before fitting raises sklearn's ``NotFittedError``, and
``get_feature_names_out``/``output_schema``/``report`` read the fitted ``features_out_`` and
``modalities_out_``. Fitted state is plain data in ``_`` attributes (lists, str, numpy
arrays, fitted sklearn estimators), so the stage codec can save it without pickles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from forgeline.core import (ColumnSpec, FeatureTransform, InputError, Modality, Role, Schema,
                            StageContext)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: modalities a model can score directly (others pass through the selecting transforms)
SCORABLE = (Modality.NUMERIC, Modality.CATEGORICAL)


class FeatureInputError(InputError, ValueError):
    """Bad input to a feature transform: an ``InputError`` for forgeline (one line, exit 2) and a
    ``ValueError`` for scikit-learn tooling, which expects that type for bad input."""


def as_frame(X: Any) -> pd.DataFrame:
    """``X`` as a DataFrame; array-likes must be numeric and are validated by sklearn's
    ``check_array`` (its usual ValueErrors for empty, 1-D or complex input) and named
    ``x0, x1, ...`` like sklearn does. Categorical or text columns come as a DataFrame."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        return X
    from sklearn.utils import check_array

    array = check_array(X, dtype="numeric", ensure_all_finite="allow-nan")
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])


def task_of(y: Any) -> str:
    """``classification`` for binary/multiclass targets, ``regression`` for continuous ones."""
    from sklearn.utils.multiclass import type_of_target

    kind = type_of_target(np.asarray(y))
    if kind in ("binary", "multiclass"):
        return "classification"
    if kind == "continuous":
        return "regression"
    raise FeatureInputError(f"Unknown label type: the target is {kind}; a single column of classes or numbers "
                            f"is needed")


def numeric_matrix(frame: pd.DataFrame, columns: list[str], stage: str) -> np.ndarray:
    """The columns as float64; a non-numeric column is a one-line error naming it."""
    import pandas as pd

    for col in columns:
        s = frame[col]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            raise FeatureInputError(f"{stage}: column {col!r} has dtype {s.dtype}; only numeric columns can be used "
                             f"(choose numeric columns with 'group'/'columns', or encode it first)")
    return frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)


def check_count(stage: str, field: str, k: int, n: int, what: str = "features") -> None:
    """A requested count must fit in what there is."""
    if k > n:
        raise FeatureInputError(f"{stage}: {field}={k} is larger than the {n} {what} there are; use at most {n}")


class FeatureStep(FeatureTransform):
    """Base of the built-in feature transforms (see the module docstring)."""

    #: needs a target to fit (tags: ``target_tags.required``)
    supervised: bool = False

    # ------------------------------------------------------------- the sklearn protocol

    def fit(self, X: Any, y: Any = None, schema: Schema | None = None) -> FeatureStep:
        X = as_frame(X)
        if len(X) == 0:
            raise FeatureInputError(f"{self.name}: the training data is empty (0 rows); it needs rows to fit")
        if self.supervised and y is None:
            raise FeatureInputError(f"{self.name} requires y to be passed, but the target y is None "
                                    f"(set data.target)")
        if y is not None:
            y = np.asarray(y)
            if len(y) != len(X):
                raise ValueError(f"{self.name}: X has {len(X)} rows but y has {len(y)}")
        schema = self._schema_of(X, schema)
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=str)
        self.n_features_in_ = X.shape[1]
        self._fit(X, y, schema, self.context)
        return self

    def transform(self, X: Any) -> pd.DataFrame:
        import pandas as pd

        self._check_fitted()
        named = isinstance(X, pd.DataFrame)
        X = as_frame(X)
        if not named and X.shape[1] != self.n_features_in_:  # sklearn's wording for unnamed input
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        missing = [c for c in self.needed_columns_ if c not in X.columns]
        if missing:
            raise FeatureInputError(f"{self.name}: columns {missing} were fitted on but are not in this data")
        out = self._transform(X)
        return out[self.features_out_] if list(out.columns) != self.features_out_ else out

    def fit_transform(self, X: Any, y: Any = None, schema: Schema | None = None) -> pd.DataFrame:
        return self.fit(X, y, schema).transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        self._check_fitted()
        return np.asarray(self.features_out_, dtype=object)

    def output_schema(self) -> Schema:
        """Role FEATURE and the modality of every output column (a cross can make categoricals)."""
        self._check_fitted()
        return Schema(tuple(ColumnSpec(n, Role.FEATURE, Modality(m))
                            for n, m in zip(self.features_out_, self.modalities_out_, strict=True)))

    def report(self) -> dict[str, Any]:
        self._check_fitted()
        names_in = [str(c) for c in self.feature_names_in_]
        out = set(self.features_out_)
        return {"features_in": len(names_in), "features_out": len(self.features_out_),
                "kept": [c for c in names_in if c in out], "dropped": [c for c in names_in if c not in out],
                "added": [c for c in self.features_out_ if c not in set(names_in)], **self._report()}

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are handled (cleaning may leave some)
        tags.target_tags.required = self.supervised
        return tags

    # ------------------------------------------------------------- for subclasses

    def _fit(self, X: pd.DataFrame, y: np.ndarray | None, schema: Schema, ctx: StageContext) -> None:
        """Learn on the training rows; set ``features_out_``, ``modalities_out_``, ``needed_columns_``."""
        raise NotImplementedError

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def _report(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------- helpers

    def _seed(self, ctx: StageContext) -> int:
        seed = getattr(self.params, "random_state", None)
        return ctx.seed if seed is None else seed

    def _check_fitted(self) -> None:
        if not hasattr(self, "features_out_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"{self.name}: call fit before transform")

    @staticmethod
    def _schema_of(X: pd.DataFrame, schema: Schema | None) -> Schema:
        """The specs of X's columns: from ``schema`` where it has them, else inferred from dtypes."""
        inferred = Schema.infer(X)
        if schema is None:
            return inferred
        return Schema(tuple(schema[str(c)] if str(c) in schema else inferred[str(c)] for c in X.columns))

    def _passthrough(self, X: pd.DataFrame, schema: Schema, columns: Iterable[str]) -> None:
        """Output = ``columns`` of X unchanged, with their input modalities."""
        self.features_out_ = [str(c) for c in columns]
        self.modalities_out_ = [str(schema[c].modality) for c in self.features_out_]
        self.needed_columns_ = list(self.features_out_)


class SelectingStep(FeatureStep):
    """A transform that keeps a subset of the input columns unchanged (shap-select, l1-rfe).

    Columns it cannot score (text, datetime, ...) pass through and are listed in the report.
    """

    supervised = True

    def _split_scorable(self, schema: Schema, modalities: Iterable[Modality] = SCORABLE) -> tuple[list[str], list[str]]:
        """(columns scored, columns passed through), in input order."""
        mods = set(modalities)
        names = [c.name for c in schema.columns]
        scored = [c.name for c in schema.columns if c.modality in mods]
        if not scored:
            raise FeatureInputError(f"{self.name}: no feature column can be scored (needs {', '.join(sorted(mods))} "
                             f"columns; features: {names[:12]})")
        return scored, [n for n in names if n not in set(scored)]

    def _keep(self, X: pd.DataFrame, schema: Schema, kept: list[str], passed: list[str]) -> None:
        kept_set = set(kept) | set(passed)
        self.selected_ = list(kept)
        self.passed_through_ = list(passed)
        self._passthrough(X, schema, [c for c in map(str, X.columns) if c in kept_set])

    def _transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return X[self.features_out_]
