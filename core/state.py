"""Fitted state as data: save and reload a component without running code from the run folder.

A fitted component is saved as a folder ``stages/<stage>/``: ``state.json`` names its class
(kind, registered name, distribution) and parameters and holds its fitted state (by default
the ``_``-suffixed instance attributes, see :meth:`Component.state`) as JSON, with numpy
arrays in ``.npy`` files (read with ``allow_pickle=False``) and fitted scikit-learn objects
in ``.skops`` files (read with skops, trusting only the scikit-learn/numpy types listed in
:data:`TRUSTED_TYPES`). On load the class comes from the installed catalog, never from the
file, and every file the state names must lie inside the run folder.

Why not pickle: unpickling runs whatever the file says (``__reduce__``), so a replaced
stage file would run its payload when someone applies the run. Everything here reads data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .components import Component, Kind
from .data import Schema
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .catalog import Catalog

FORMAT = "forgeline-state/1"
STATE_FILE = "state.json"

#: types a ``.skops`` file may hold beyond skops' own defaults: the scikit-learn estimators the
#: built-ins fit and what they are made of. A component needing more lists them in its class
#: attribute ``trusted_types`` (installed code, so trusted); anything else is refused.
TRUSTED_TYPES = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler", "sklearn.preprocessing._data.RobustScaler",
    "sklearn.impute._base.SimpleImputer", "sklearn.impute._iterative.IterativeImputer",
    "sklearn.impute._iterative._ImputerTriplet", "sklearn.linear_model._bayes.BayesianRidge",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._forest.RandomForestClassifier", "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit", "sklearn._loss.link.Interval",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.feature_selection._rfe.RFECV", "sklearn.feature_selection._rfe.RFE",
    "sklearn.model_selection._split.StratifiedKFold", "sklearn.model_selection._split.KFold",
    "sklearn.linear_model._coordinate_descent.Lasso", "sklearn.linear_model._ridge.Ridge",
    "numpy.random._mt19937.MT19937", "numpy.random.mtrand.RandomState", "numpy.random.RandomState",
    "numpy.dtype", "numpy.ndarray", "builtins.slice",
})


def fitted_attributes(component: Any) -> dict[str, Any]:
    """The ``_``-suffixed public instance attributes: scikit-learn's convention for fitted state."""
    return {k: v for k, v in vars(component).items() if k.endswith("_") and not k.startswith("_")}


def save_component(folder: Path, component: Component, distribution: str,
                   write: Callable[[Path, bytes | Callable], None]) -> None:
    """Write ``component``'s identity, parameters and fitted state into ``folder``.

    ``write`` writes one file atomically (``runfolder.write_atomic``)."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = _Writer(folder, write, type(component).__name__)
    state = writer.encode(component.state(), "state")
    doc = {"format": FORMAT, "kind": str(component.kind), "name": component.name, "distribution": distribution,
           "class": f"{type(component).__module__}.{type(component).__qualname__}",  # for people, never imported
           "params": component.params.model_dump(mode="json"), "state": state}
    write(folder / STATE_FILE, json.dumps(doc, indent=1, allow_nan=True).encode())


def load_component(file: Path, catalog: Catalog, root: Path) -> Component:
    """Rebuild a component from its ``state.json`` (inside ``root``): class from ``catalog``, data only."""
    from .runfolder import inside

    file = inside(root, file)
    where = file.relative_to(root.resolve())
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{where}: not a forgeline state file ({type(e).__name__}: {e}); "
                         f"stage state is JSON written by forgeline, rerun the pipeline to recreate it") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"{where}: not a forgeline state file (format {FORMAT!r} expected); "
                         f"rerun the pipeline to recreate it")
    try:
        entry = catalog.get(Kind(doc["kind"]), f"{doc['distribution']}:{doc['name']}")
    except (KeyError, ValueError, LookupError) as e:
        raise InputError(f"{where}: cannot rebuild {doc.get('kind')} {doc.get('name')!r} from "
                         f"{doc.get('distribution')}: {e}; install the plugin the run used") from None
    try:
        component = entry.cls(entry.cls.Params.model_validate(doc.get("params") or {}))
        trusted = TRUSTED_TYPES | frozenset(getattr(entry.cls, "trusted_types", ()))
        state = _Reader(file.parent, root, trusted, str(where)).decode(doc.get("state") or {})
        component.load_state(state)
    except InputError:
        raise
    except Exception as e:  # a damaged or hand-edited state: say which file, not "internal error"
        raise InputError(f"{where}: the saved state of {doc['name']!r} cannot be loaded "
                         f"({type(e).__name__}: {e}); rerun the pipeline to recreate it") from None
    return component


# --------------------------------------------------------------------------- encoding

_PLAIN = (type(None), bool, int, float, str)


class _Writer:
    def __init__(self, folder: Path, write: Callable, owner: str) -> None:
        self.folder, self.write, self.owner, self.n = folder, write, owner, 0

    def _file(self, suffix: str) -> str:
        self.n += 1
        return f"{self.n}{suffix}"

    def encode(self, value: Any, where: str) -> Any:
        import pandas as pd

        if isinstance(value, np.generic):  # before the plain types: np.float64 is a float
            if value.dtype.kind not in "biufUS":
                raise self._refuse(value, where)
            return {"__numpy__": value.dtype.str, "value": value.item()}
        if type(value) in _PLAIN:
            return value
        if isinstance(value, np.ndarray):
            return self._array(value, where)
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self.encode(v, f"{where}.{k}") for k, v in value.items()}
            return {"__dict__": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
        if isinstance(value, pd.Series):
            return {"__series__": {"values": self._values(value, where), "index": self.encode(value.index, where),
                                   "name": self.encode(value.name, where)}}
        if isinstance(value, pd.DataFrame):
            return {"__frame__": {"columns": self.encode(value.columns, where), "index": self.encode(value.index, where),
                                  "data": [self._values(value.iloc[:, j], f"{where}[{j}]")
                                           for j in range(value.shape[1])]}}
        if isinstance(value, pd.Index) and not isinstance(value, pd.MultiIndex):
            return {"__index__": {"values": self._values(value, where), "name": self.encode(value.name, where)}}
        if isinstance(value, Schema):  # forgeline's own column specs: plain strings
            return {"__schema__": value.to_dict()}
        if type(value).__module__.split(".")[0] == "sklearn" and hasattr(value, "get_params"):
            import skops.io

            name = self._file(".skops")
            self.write(self.folder / name, skops.io.dumps(value))
            return {"__sklearn__": name}
        raise self._refuse(value, where)

    def _values(self, values: Any, where: str) -> dict[str, Any]:
        """A Series' or Index's values with their pandas dtype (categoricals as codes + categories)."""
        import pandas as pd

        if isinstance(values.dtype, pd.CategoricalDtype):
            cat = pd.Categorical(values)
            return {"codes": self._array(np.asarray(cat.codes), where), "categories": self.encode(cat.categories, where),
                    "ordered": bool(cat.ordered)}
        return {"array": self._array(np.asarray(values.to_numpy()), where), "dtype": str(values.dtype)}

    def _array(self, arr: np.ndarray, where: str) -> dict[str, Any]:
        if arr.dtype.kind == "O":  # plain Python values (e.g. string labels) go to JSON, never to a pickle
            items = arr.ravel().tolist()
            if not all(type(v) in _PLAIN for v in items):
                raise self._refuse(arr, where, "an object array of non-plain values")
            return {"__objects__": items, "shape": list(arr.shape)}
        if arr.dtype.kind not in "biufcUSMm" or arr.dtype.fields is not None:
            raise self._refuse(arr, where)
        name = self._file(".npy")
        self.write(self.folder / name, lambda f: np.save(f, arr, allow_pickle=False))
        return {"__ndarray__": name}

    def _refuse(self, value: Any, where: str, what: str | None = None) -> TypeError:
        return TypeError(f"{self.owner}: fitted state {where} is {what or type(value).__qualname__}, which cannot be "
                         f"saved as data; keep numbers, strings, numpy arrays, pandas objects or scikit-learn "
                         f"estimators in '_' attributes, or override state()/load_state()")


class _Reader:
    def __init__(self, folder: Path, root: Path, trusted: frozenset[str], where: str) -> None:
        self.folder, self.root, self.trusted, self.where = folder, root, trusted, where

    def _path(self, name: Any) -> Path:
        from .runfolder import inside

        if not isinstance(name, str):
            raise InputError(f"{self.where}: a state file name must be a string, got {name!r}")
        path = inside(self.folder, name)
        inside(self.root, path)  # and so inside the run folder
        return path

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__numpy__" in value:
            dtype = np.dtype(str(value["__numpy__"]))
            if dtype.kind not in "biufUS" or dtype.itemsize > 1024:
                raise ValueError(f"numpy scalar of dtype {dtype} is not a plain value")
            return dtype.type(value["value"])
        if "__tuple__" in value:
            return tuple(self.decode(v) for v in value["__tuple__"])
        if "__schema__" in value:
            return Schema.from_dict(value["__schema__"])
        if "__dict__" in value:
            return {self.decode(k): self.decode(v) for k, v in value["__dict__"]}
        if "__ndarray__" in value or "__objects__" in value:
            return self._array(value)
        if "__series__" in value:
            import pandas as pd

            s = value["__series__"]
            return pd.Series(self._values(s["values"]), index=self.decode(s["index"]), name=self.decode(s["name"]))
        if "__frame__" in value:
            import pandas as pd

            f = value["__frame__"]
            columns = self.decode(f["columns"])
            data = {j: self._values(v) for j, v in enumerate(f["data"])}
            frame = pd.DataFrame(data, index=self.decode(f["index"]))
            frame.columns = columns
            return frame
        if "__index__" in value:
            import pandas as pd

            i = value["__index__"]
            return pd.Index(self._values(i["values"]), name=self.decode(i["name"]))
        if "__sklearn__" in value:
            return self._sklearn(self._path(value["__sklearn__"]))
        return {k: self.decode(v) for k, v in value.items()}

    def _array(self, value: dict[str, Any]) -> np.ndarray:
        if "__objects__" in value:
            arr = np.empty(len(value["__objects__"]), dtype=object)
            arr[:] = value["__objects__"]
            return arr.reshape(value["shape"])
        path = self._path(value["__ndarray__"])
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:  # a pickled (object) array is refused here, never unpickled
            raise InputError(f"{path.relative_to(self.root.resolve())}: not a plain numpy array ({e}); "
                             f"rerun the pipeline to recreate it") from None

    def _values(self, value: dict[str, Any]) -> Any:
        import pandas as pd

        if "codes" in value:
            return pd.Categorical.from_codes(self._array(value["codes"]), self.decode(value["categories"]),
                                             ordered=bool(value["ordered"]))
        arr = self._array(value["array"])
        # a dtype *name* (e.g. "string", "Int64"): pandas parses it, nothing is imported or run
        return pd.array(arr, dtype=pd.api.types.pandas_dtype(value["dtype"]))

    def _sklearn(self, path: Path) -> Any:
        import skops.io

        data = path.read_bytes()
        untrusted = skops.io.get_untrusted_types(data=data)
        refused = sorted(set(untrusted) - self.trusted)
        if refused:
            raise InputError(f"{path.relative_to(self.root.resolve())}: holds types forgeline does not load: "
                             f"{', '.join(refused)}; only scikit-learn/numpy types are trusted")
        return skops.io.loads(data, trusted=list(untrusted))
