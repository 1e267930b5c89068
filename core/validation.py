"""Load a pipeline file and check it whole: every problem at once, each with its line.

``load_plan`` reads YAML safely, applies ``--set path=value`` overrides, checks the file's
structure (``forgeline.core.pipeline.Pipeline``), resolves every component through the
catalog, checks each component's ``with:`` against its ``Params`` and the dataset's columns
and modalities, and returns a :class:`Plan`. Problems are raised together as one
:class:`~forgeline.core.errors.InputError`, each printed as ``FILE:LINE: path: message``.

Line numbers come from the composed YAML node tree, so they point at what the user wrote.
"""

from __future__ import annotations

import copy
import difflib
import enum
import functools
import glob
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import click
import yaml
from pydantic import BaseModel, ValidationError

from .catalog import Catalog, Entry, LookupProblem
from .components import Component, DistInfo, Kind, Params
from .errors import InputError, Problem
from .kinds import KindSpec, as_kind, by_attr, kinds
from .pipeline import NAME_PATTERN, PipelineBase, pipeline_model

PathT = tuple[str | int, ...]



def section_rank(section: str) -> int:
    """Place of a section (``clean``, ``train.model``, ``data.source``) in the pipeline file."""
    fields = list(pipeline_model().model_fields)
    head = section.split(".")[0]
    return fields.index(head) if head in fields else -1


def list_sections() -> tuple[tuple[str, str], ...]:
    """``(section, kind)`` of every list section, in pipeline order (from the kind table)."""
    specs = sorted((s for s in kinds() if s.many and s.top_level), key=lambda s: section_rank(s.section))
    return tuple((s.section, as_kind(s.kind)) for s in specs)


_PATH_SUFFIXES = (".csv", ".parquet", ".pq")
#: ``pkg.mod:callable`` — a model factory named by import path (the ``module`` model's shorthand)
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# ============================================================================ the plan

@dataclass
class Resolved:
    """One component of the pipeline, resolved: where it sits, who provides it, its parameters."""

    section: str  # "data", "clean.0", "train.model", "train.precision", "tune", "monitor.1", ...
    entry: Entry
    params: Params

    @property
    def name(self) -> str:
        return self.entry.name

    def build(self) -> Component:
        """A fresh component instance (its own copy of the parameters)."""
        return self.entry.cls(self.params.model_copy(deep=True))

    def as_dict(self) -> dict[str, Any]:
        return {"use": self.entry.name, "kind": str(self.entry.kind), "provider": self.entry.distribution,
                "version": self.entry.version, "with": plain(self.params.model_dump())}


@dataclass
class Plan:
    """A validated pipeline: the file's model, what was given, and every resolved component.

    ``parts`` holds each kind's components under its plan attribute (from the kind table):
    ``plan.clean`` is a list, ``plan.model``/``plan.tune`` one component or None.
    """

    pipeline: Any  # an instance of ``pipeline_model()``
    given: dict[str, Any]  # as written, overrides applied
    file: Path | None
    dataset: Resolved
    parts: dict[str, Resolved | list[Resolved] | None] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        parts = self.__dict__.get("parts", {})
        if name in parts:
            return parts[name]
        spec = by_attr().get(name)
        if spec is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return [] if spec.many else None

    def of(self, spec: KindSpec) -> list[Resolved]:
        """The components of one kind, as a list."""
        if spec.plan_attr == "dataset":
            return [self.dataset]
        value = getattr(self, spec.plan_attr)
        return list(value) if spec.many else [value] if value is not None else []

    def _in_order(self, specs: Iterable[KindSpec]) -> list[Resolved]:
        return [r for s in sorted(specs, key=lambda s: section_rank(s.section)) for r in self.of(s)]

    def stages(self) -> list[Resolved]:
        """Components that are stages, in run order: data, clean, augment, features, train, tune, compress."""
        return self._in_order(s for s in kinds() if s.stage)

    def components(self) -> list[Resolved]:
        """Every resolved component, stages and the rest (precision, parallel, monitors)."""
        return [*self.stages(), *self._in_order(s for s in kinds() if not s.stage)]

    def resolved(self) -> dict[str, Any]:
        """The whole pipeline with each component's provider, version and full parameters."""
        out = plain(self.pipeline.model_dump(by_alias=True))
        data = out["data"]
        data.pop("with", None)
        data["source"] = self.dataset.as_dict()
        data["target"] = data.get("target") or self.dataset.entry.cls.default_target
        for spec in kinds():
            head, _, leaf = spec.section.rpartition(".")
            value = getattr(self, spec.plan_attr)
            parent = out if not head else out.get(head)
            if spec.plan_attr == "dataset" or not isinstance(parent, dict):
                continue
            if spec.many:
                parent[leaf] = [r.as_dict() for r in value]
            elif value is not None:
                parent[leaf] = value.as_dict()
        return out


def plain(value: Any) -> Any:
    """``value`` as plain YAML/JSON data: enums to values, tuples/sets to lists, paths to str."""
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, (int, float, bool)) else k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, BaseModel):
        return plain(value.model_dump())
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# ============================================================================ YAML with lines

@dataclass
class _Lines:
    """Line numbers of every key and item of a YAML document, by path."""

    root: int = 1
    at: dict[PathT, int] = field(default_factory=dict)

    def line(self, path: PathT) -> int:
        """The line of ``path``, or of its closest written ancestor (a missing field: its parent)."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.at:
                return self.at[path[:n]]
        return self.root


#: pipeline files are a few KiB; these bounds refuse hostile ones ("billion laughs": nested
#: aliases that expand exponentially) before anything is built from them
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
#: components a stage list (``clean:``, ``augment:``, ``features:``) may hold: each is a stage
#: with its own record, fitted state and resume snapshot; real pipelines have a handful
MAX_SECTION_STAGES = 1_000


def _expanded_nodes(root: yaml.Node, file: str | None) -> int:
    """Nodes of the document with every alias expanded, counted in time linear in the file
    (each distinct node once, memoised); a recursive alias is refused."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise InputError([Problem("", "recursive YAML alias (an anchor used inside itself)", file,
                                      n.start_mark.line + 1)])
        open_.add(key)
        children = ([c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode)
                    else n.value if isinstance(n, yaml.SequenceNode) else [])
        total = 1 + sum(size(c) for c in children)
        open_.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _read_yaml(text: str, file: str | None) -> tuple[Any, _Lines, list[Problem]]:
    """Parse ``text`` safely: the data, its line map and duplicate keys; malformed YAML raises InputError."""
    if len(text) > MAX_YAML_BYTES:
        raise InputError([Problem("", f"the pipeline file is {len(text):,} characters; the limit is "
                                      f"{MAX_YAML_BYTES:,} (a pipeline is a few KiB)", file)])
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and (n := _expanded_nodes(node, file)) > MAX_YAML_NODES:
            raise InputError([Problem("", f"YAML aliases expand to {n:,} values, over the limit of "
                                          f"{MAX_YAML_NODES:,}; write the values out instead of nesting aliases",
                                      file)])
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:
        raise InputError([Problem("", "YAML nested too deeply", file)]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        what = " ".join(str(s) for s in (getattr(err, "context", None), getattr(err, "problem", None)) if s)
        raise InputError([Problem("", f"malformed YAML: {what or err}", file,
                                  mark.line + 1 if mark else None)]) from None
    finally:
        loader.dispose()
    lines, problems = _Lines(root=node.start_mark.line + 1 if node is not None else 1), []

    def walk(n: yaml.Node, path: PathT) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in n.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
                line = key.start_mark.line + 1
                if name in seen:
                    problems.append(Problem(_dotted(path + (name,)),
                                            f"duplicate key (also on line {seen[name]}); write it once",
                                            file, line))
                seen[name] = line
                lines.at[path + (name,)] = line
                walk(value, path + (name,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines.at[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if node is not None:
        walk(node, ())
    return data, lines, problems


def _dotted(path: Iterable[str | int]) -> str:
    return ".".join(str(p) for p in path)


# ============================================================================ overrides

def _split_path(text: str) -> PathT:
    return tuple(int(p) if p.isdigit() else p for p in text.split("."))


def _override_problems(raw: dict, overrides: Sequence[str]) -> tuple[dict, list[tuple[PathT, str]], list[Problem]]:
    out = copy.deepcopy(raw)
    applied: list[tuple[PathT, str]] = []
    problems: list[Problem] = []
    for text in overrides:
        path_text, eq, value_text = text.partition("=")
        where = f"--set {path_text.strip() or text}"
        if not eq or not path_text.strip() or any(not p for p in path_text.strip().split(".")):
            problems.append(Problem(where, "expected --set path.to.field=value (e.g. train.optimizer.lr=0.01)"))
            continue
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError as err:
            problems.append(Problem(where, f"value {value_text!r} is not valid YAML ({getattr(err, 'problem', err)})"))
            continue
        path = _split_path(path_text.strip())
        error = _set_path(out, path, value)
        if error:
            problems.append(Problem(where, error))
        else:
            applied.append((path, text))
    return out, applied, problems


def _set_path(data: dict, path: PathT, value: Any) -> str | None:
    """Set ``data[path] = value`` in place, creating missing mappings; a message when it cannot."""
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        here = _dotted(path[:depth]) or "the pipeline"
        if isinstance(node, list):
            if not isinstance(part, int):
                return f"{here} is a list; index it with a number, not {part!r}"
            if not -len(node) <= part < len(node):
                return f"{here} has {len(node)} item(s); index {part} is out of range"
            if last:
                node[part] = value
                return None
            if isinstance(node[part], str) and path[depth + 1] in ("use", "with"):
                node[part] = {"use": node[part]}  # `- robust-scale` short form, expanded to set a field
            node = node[part]
        elif isinstance(node, dict):
            key = str(part)
            if last:
                node[key] = value
                return None
            child = node.get(key)
            if child is None and isinstance(path[depth + 1], int):
                return f"{_dotted(path[:depth + 1])} has 0 item(s); index {path[depth + 1]} is out of range"
            if child is None:
                child = node[key] = {}
            elif isinstance(child, str) and path[depth + 1] in ("use", "with"):
                child = node[key] = {"use": child}  # `precision: bf16` short form
            node = child
        else:
            return f"{here} is a value ({node!r}), not a mapping or list; it has no field {part!r}"
    return None


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``raw`` with ``--set path=value`` overrides applied (values parsed as YAML); raises InputError."""
    out, _, problems = _override_problems(dict(raw), overrides)
    if problems:
        raise InputError(problems)
    return out


# ============================================================================ pydantic errors

def _describe(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(word: str, known: Iterable[str], *, list_known: bool = True) -> str:
    """``; did you mean 'x'?`` for close names, else (when ``list_known``) every known name."""
    known = sorted(set(known))
    close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"; expected one of: {', '.join(known)}" if known and list_known else ""


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None``; a union of one model and others gives the model."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(args) == 1:
                tp = args[0]
            elif len(models) == 1:
                tp = models[0]
            else:
                return tp
        else:
            return tp


def _field_named(model: type[BaseModel], name: Any) -> Any:
    for fname, info in model.model_fields.items():
        if name in (fname, info.alias):
            return info
    return None


def _model_at(model: type[BaseModel], path: PathT) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``path`` below ``model``, if any."""
    tp: Any = model
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field_named(tp, part)
            if info is None:
                return None
            tp = info.annotation
            continue
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (list, tuple, typing.Sequence) and args:
            tp = args[0]
        elif origin in (dict, typing.Mapping) and len(args) == 2:
            tp = args[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _clean_loc(loc: Sequence[Any], data: Any) -> PathT:
    """pydantic's ``loc`` with union/validator tags removed, keeping only real keys and indices."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, Mapping) and part in node:
            out.append(part)
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, Mapping) and isinstance(part, str):
            out.append(part)  # a missing field: named, though not written
        # anything else is a tag pydantic adds for union members and validators: skip it
    return tuple(out)


_TYPE_WORDS = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "a whole number",
    "float_parsing": "a number", "float_type": "a number", "bool_parsing": "true or false",
    "bool_type": "true or false", "string_type": "a string", "list_type": "a list",
    "tuple_type": "a list", "set_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "none_required": "null",
}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
           "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}


def _message(err: Mapping[str, Any], model: type[BaseModel], path: PathT, what: str) -> str:
    """A readable message for one pydantic error at ``path`` below ``model``."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    got = f", got {_describe(value)}"
    if kind == "missing":
        return f"required {what} is missing"
    if kind == "extra_forbidden":
        parent = _model_at(model, path[:-1])
        if parent is not None and not parent.model_fields:
            return f"unknown {what}: it takes no parameters" if what.startswith("parameter") else f"unknown {what}"
        label = "section" if issubclass(model, PipelineBase) and len(path) == 1 else what
        return f"unknown {label}" + (_suggest(str(path[-1]), _field_names(parent)) if parent else "")
    if kind in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[kind]}{got}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"expected a value {op} {ctx.get(key)}{got}"
    if kind in ("literal_error", "enum"):
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = _suggest(str(value), options).replace("; expected one of: ", "; ") if isinstance(value, str) else ""
        hint = hint if "did you mean" in hint else ""
        return f"expected one of {', '.join(repr(o) for o in options)}{got}{hint}"
    if kind == "invalid_key":
        return f"expected a name (text) as key{got}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return f"expected letters, digits, '.', '_' or '-', starting with a letter or digit{got}"
    if kind == "string_pattern_mismatch":
        return f"expected a value matching {ctx.get('pattern')}{got}"
    msg = str(err.get("msg", kind))
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    msg = re.sub(r"^Input should be", "expected", msg)
    return msg + (got if msg.startswith("expected") else "")


def _validation_problems(error: ValidationError, model: type[BaseModel], data: Any, prefix: PathT,
                         what: str, locate: Callable[[PathT], Problem]) -> list[Problem]:
    problems, seen = [], set()
    for err in error.errors():
        path = _clean_loc(err["loc"], data)
        if path in seen:  # a union reports each member's error: the first says enough
            continue
        seen.add(path)
        problems.append(_at(locate, prefix + path, _message(err, model, path, what)))
    return problems


def _at(locate: Callable[[PathT], Problem], path: PathT, message: str) -> Problem:
    base = locate(path)
    return Problem(base.path, message, base.file, base.line)


# ============================================================================ loading

def looks_like_path(source: str) -> bool:
    """Is a `data.source` a file path (.csv/.parquet/.pq, or with a folder) rather than a dataset name?"""
    return source.lower().endswith(_PATH_SUFFIXES) or "/" in source or os.sep in source


class _Checker:
    """Collects problems while resolving one pipeline against a catalog."""

    def __init__(self, catalog: Catalog, file: str | None, lines: _Lines, applied: list[tuple[PathT, str]]):
        self.catalog, self.file, self.lines, self.applied = catalog, file, lines, applied
        self.problems: list[Problem] = []

    def locate(self, path: PathT) -> Problem:
        """Where ``path`` was given: the ``--set`` that wrote it, or its line in the file."""
        for target, text in reversed(self.applied):
            if path[:len(target)] == target:
                return Problem(_dotted(path), "", f"--set {text}", None)
        return Problem(_dotted(path), "", self.file, self.lines.line(path) if self.file else None)

    def add(self, path: PathT, message: str) -> None:
        self.problems.append(_at(self.locate, path, message))

    def resolve(self, kind: Kind, ref: Any, with_: Any, section: PathT, ref_key: str = "use",
                with_key: str = "with") -> Resolved | None:
        """Look ``ref`` up and check ``with_`` against its Params; None (and problems) when it fails."""
        if not isinstance(ref, str) or (with_ is not None and not isinstance(with_, Mapping)):
            return None  # the structure check reports it
        try:
            entry = self.catalog.get(kind, ref)
        except LookupProblem as err:
            self.add(section + (ref_key,), str(err))
            return None
        try:
            params = entry.cls.Params.model_validate(dict(with_ or {}))
        except ValidationError as err:
            self.problems += _validation_problems(err, entry.cls.Params, dict(with_ or {}),
                                                  section + (with_key,), f"parameter of {entry.name!r}",
                                                  self.locate)
            return None
        return Resolved(_dotted(section), entry, params)

    def use(self, kind: Kind, item: Any, section: PathT) -> Resolved | None:
        if isinstance(item, str):
            return self.resolve(kind, item, {}, section)
        if isinstance(item, Mapping):
            return self.resolve(kind, item.get("use"), item.get("with"), section)
        return None


def _read_source(source: str | Path | Mapping[str, Any]) -> tuple[Any, str | None, Path | None, _Lines, list[Problem]]:
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None, None, _Lines(), []
    path = Path(source)
    name = str(source)
    try:
        if path.is_file() and path.stat().st_size > MAX_YAML_BYTES:  # refuse before reading it all
            raise InputError([Problem("", f"the pipeline file is {path.stat().st_size:,} bytes; the limit is "
                                          f"{MAX_YAML_BYTES:,} (a pipeline is a few KiB)", name)])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError([Problem("", "no such file", name)]) from None
    except IsADirectoryError:
        raise InputError([Problem("", "is a folder; give a pipeline .yaml file", name)]) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError([Problem("", f"cannot read it ({type(err).__name__}: {err})", name)]) from None
    data, lines, problems = _read_yaml(text, name)
    return data, name, path, lines, problems


def load_plan(source: str | Path | Mapping[str, Any], catalog: Catalog, overrides: Sequence[str] = (), *,
              nproc: int = 1, base: Path | None = None, hardware: bool = True) -> Plan:
    """Load, override and validate a pipeline (a file path or a dict); raise InputError with every problem.

    ``base`` is the folder relative data paths resolve against when ``source`` is a dict
    (default: the current folder); for a file it is the file's folder. ``hardware=False``
    skips the checks of the precision policy against this machine's device and of the
    parallel strategy against ``nproc`` (``init`` writes files for other machines too).
    """
    data, file, path, lines, problems = _read_source(source)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"{_describe(data)}"
        raise InputError([Problem("", f"expected a mapping of sections (name, data, clean, train, ...), got {got}",
                                  file, lines.root if file else None)])
    given, applied, override_problems = _override_problems(data, overrides)
    problems += override_problems
    check = _Checker(catalog, file, lines, applied)
    folder = path.resolve().parent if path else (base or Path.cwd())
    if any(("data", "source")[:len(target)] == target for target, _ in applied):
        folder = Path.cwd()  # a path typed on the command line is relative to where it was typed
    normal = copy.deepcopy(given)

    # -- the data source: a registered dataset, or a path read by the `file` dataset
    dataset = _resolve_dataset(check, normal, folder)

    # -- `augment:` in the shape users already write (a mapping of config sections, or a file of one)
    _expand_augment_config(check, normal, folder)

    # -- the training shorthand `model: {use: "pkg.mod:callable"}` for the `module` model
    train = normal.get("train")
    if isinstance(train, dict):
        _expand_factory(train, catalog)

    # -- structure (pydantic), every problem at once
    pipeline, model_cls = None, pipeline_model()
    try:
        pipeline = model_cls.model_validate(normal)
    except ValidationError as err:
        check.problems += _validation_problems(err, model_cls, normal, (), "field", check.locate)

    # -- the components of every kind's section (the kind table says where and how many)
    parts = _resolve_kinds(check, normal)
    model, precision, parallel, tune = (parts.get(a) for a in ("model", "precision", "parallel", "tune"))
    if dataset is not None:
        source = given["data"]["source"]
        _check_data(check, dataset, normal, parts, model, from_path=source != normal["data"]["source"])
    device = train.get("device", "auto") if isinstance(train, dict) else None
    if hardware and device in ("auto", "cpu", "cuda") and (precision or parallel):  # a bad device: reported above
        _check_hardware(check, device, precision, parallel, nproc)
    _check_engine(check, pipeline, parts, nproc)
    if isinstance(normal.get("tune"), dict):  # paths are checked even when a dimension is wrong
        known = [dataset, *(r for v in parts.values() for r in (v if isinstance(v, list) else [v]) if r)]
        _check_space(check, normal, known)

    problems += check.problems
    if problems or pipeline is None or dataset is None:
        # --set problems first (in the order given), then the file's by line (a dict's: by section)
        problems.sort(key=lambda p: (bool(p.line), p.line or 0, section_rank(p.path)))
        raise InputError(problems or [Problem("", "invalid pipeline", file)])
    return Plan(pipeline=pipeline, given=given, file=path, dataset=dataset, parts=parts)


def _resolve_kinds(check: _Checker, normal: dict) -> dict[str, Any]:
    """Each kind's components (the dataset apart: its source may be a path), by plan attribute.

    A list keeps only what resolved: when some failed, problems were added and no plan is built.
    """
    parts: dict[str, Any] = {}
    for spec in kinds():
        if spec.plan_attr == "dataset":
            continue
        head, _, leaf = spec.section.rpartition(".")
        parent = normal.get(head) if head else normal
        item = parent.get(leaf, spec.default) if isinstance(parent, dict) else None
        where, kind = tuple(spec.section.split(".")), as_kind(spec.kind)
        if spec.many and spec.stage and isinstance(item, list) and len(item) > MAX_SECTION_STAGES:
            check.add(where, f"{len(item):,} components; a section runs at most {MAX_SECTION_STAGES:,} "
                             f"stages (each has its own record, fitted state and resume snapshot)")
            parts[spec.plan_attr] = []
        elif spec.many:
            found = [check.use(kind, x, where + (i,)) for i, x in enumerate(item)] if isinstance(item, list) else []
            parts[spec.plan_attr] = [r for r in found if r is not None]
        else:
            parts[spec.plan_attr] = check.use(kind, item, where) if item is not None else None
    return parts


def _resolve_dataset(check: _Checker, normal: dict, folder: Path) -> Resolved | None:
    data = normal.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return None  # the structure check reports it
    source, with_ = data["source"], data.get("with")
    if with_ is not None and not isinstance(with_, dict):
        return None
    if looks_like_path(source):
        target = (folder / os.path.expanduser(source)).resolve()
        if glob.has_magic(str(target)) and not glob.glob(str(target)):
            check.add(("data", "source"), f"no file matches {target}; give a glob matching .csv or .parquet files")
            return None
        if not glob.has_magic(str(target)) and not target.exists():
            check.add(("data", "source"), f"no such file: {target}")
            return None
        if with_ and "path" in with_:
            check.add(("data", "with", "path"), "the path is already given in data.source; give it once")
            return None
        data["source"], data["with"] = "file", {**(with_ or {}), "path": str(target)}
        return check.resolve(Kind.DATASET, "file", data["with"], ("data",), ref_key="source")
    return check.resolve(Kind.DATASET, source, with_, ("data",), ref_key="source")


def _expand_augment_config(check: _Checker, normal: dict, folder: Path) -> None:
    """``augment: {text_augmentation: {...}, image_augmentation: {...}}``, or ``augment: aug.json``
    naming a JSON/YAML file of that shape, becomes the list of augmenters that take each section
    (each augmenter's ``from_config`` says which keys of a section it takes)."""
    spec = normal.get("augment")
    if isinstance(spec, str):
        path = (folder / os.path.expanduser(spec)).resolve()
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            why = "no such file" if isinstance(err, FileNotFoundError) else f"cannot read it ({type(err).__name__})"
            check.add(("augment",), f"{path}: {why}; give a JSON/YAML augmentation config or a list of augmenters")
            normal["augment"] = []
            return
        if not isinstance(spec, Mapping):
            check.add(("augment",), f"{path}: expected a mapping of sections (text_augmentation, "
                                    f"image_augmentation, ...), got {_describe(spec)}")
            normal["augment"] = []
            return
    if not isinstance(spec, Mapping):
        return  # a list of augmenters (or a structure error reported later)
    items: list[dict[str, Any]] = []
    for section, values in spec.items():
        if not isinstance(values, Mapping):
            check.add(("augment", section), f"expected a mapping of settings, got {_describe(values)}")
            continue
        rest, taken = dict(values), False
        for entry in check.catalog.of_kind(Kind.AUGMENTER):
            got = entry.cls.from_config(str(section), rest)
            if got is not None:
                params, rest = got
                items.append({"use": entry.name, "with": params})
                taken = True
        if not taken:
            check.add(("augment", section), f"no installed augmenter takes the section {section!r}")
        for key in rest:
            check.add(("augment", section, key), f"no augmenter of {section!r} takes {key!r}")
    normal["augment"] = items


def _expand_factory(train: dict, catalog: Catalog) -> None:
    model = train.get("model")
    ref = model if isinstance(model, str) else model.get("use") if isinstance(model, dict) else None
    if not isinstance(ref, str) or not _FACTORY_RE.match(ref):
        return
    if ref.partition(":")[0] in {e.distribution for e in catalog}:
        return  # provider:name
    with_ = model.get("with") if isinstance(model, dict) else None
    train["model"] = {"use": "module", "with": {**(with_ if isinstance(with_, dict) else {}), "factory": ref}}


def _check_engine(check: _Checker, pipeline: Any, parts: dict[str, Any], nproc: int) -> None:
    """``data.engine: dask``: dask installed, a hash split, what ``--nproc`` allows, every cleaner able to
    run on partitions (``Cleaner.partitions_refusal``), no tuner (its trials rerun the data stages)."""
    import importlib.util

    if pipeline is None or pipeline.data.engine != "dask":
        return
    if any(importlib.util.find_spec(m) is None for m in ("dask", "distributed")):
        check.add(("data", "engine"), "engine dask needs dask and distributed, which are not installed; "
                  "pip install 'forgeline[dask]' (or use engine: pandas)")
    if pipeline.data.split.method == "random":
        check.add(("data", "split", "method"), "engine dask splits by a hash of the row id; use method: hash "
                  "(or leave method out)")
    if nproc > 1:
        _check_engine_ranks(check, parts, nproc)
    if parts.get("tune") is not None:
        check.add(("tune",), "a tuner reruns the data stages in memory for every trial; use engine: pandas")
    for i, resolved in enumerate(parts.get("clean") or []):
        try:
            reason = resolved.build().partitions_refusal()
        except Exception as err:  # a plugin's bug: say which cleaner
            reason = f"its partitions_refusal() failed ({type(err).__name__}: {err})"
        if reason:
            check.add(("clean", i), f"cleaner {resolved.entry.name!r} cannot run on engine dask: {reason}")


def _check_engine_ranks(check: _Checker, parts: dict[str, Any], nproc: int) -> None:
    """Engine dask under ``--nproc``: rank 0 cleans, each rank streams its shard of the cleaned
    partitions, so what needs the whole training split in one process is refused."""
    fix = f"run with --nproc 1 (not {nproc}) or use engine: pandas"
    if not parts.get("clean"):
        check.add(("clean",), "engine dask under --nproc trains each rank on its shard of the cleaned "
                  f"partitions, which the clean stages write; add a clean stage, or {fix}")
    for section in ("augment", "features", "compress"):
        if parts.get(section):
            check.add((section,), f"{section} needs the whole training split in one process, which engine dask "
                      f"under --nproc never gathers; leave it out, or {fix}")
    parallel = parts.get("parallel")
    if parallel is not None and parallel.entry.name == "hybrid":
        check.add(("train", "parallel"), "hybrid shares a data replica between ranks, engine dask under --nproc "
                  f"gives each rank its own shard of the cleaned partitions; use ddp or fsdp, or {fix}")


def _check_data(check: _Checker, dataset: Resolved, normal: dict, parts: dict[str, Any],
                model: Resolved | None, from_path: bool) -> None:
    """The dataset's own offline checks, its columns, and what later stages accept of its modalities."""
    data = normal["data"]
    try:
        instance = dataset.build()
        found, columns = instance.problems(), None
        if not found:
            columns = instance.columns()
    except Exception as err:  # a plugin's bug: report it where the user can see which dataset
        check.add(("data", "source"), f"dataset {dataset.name!r} failed its checks ({type(err).__name__}: {err})")
        return
    fields = set(_field_names(dataset.entry.cls.Params))
    for name, message in found:
        if from_path and name in ("path", ""):
            check.add(("data", "source"), message)
        elif name in fields:
            check.add(("data", "with", name), message)
        else:
            check.add(("data", *(str(name).split(".") if name else ["source"])), message)
    overrides = data.get("columns") if isinstance(data.get("columns"), dict) else {}
    target = data.get("target") if isinstance(data.get("target"), str) else None
    if columns is not None:
        columns = [str(c) for c in columns]
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        if target is not None and target not in columns:
            check.add(("data", "target"), f"dataset {dataset.name!r} has no column {target!r}"
                      f"{_suggest(target, columns, list_known=False)} (columns: {shown})")
        for name in overrides:
            if name not in columns:
                check.add(("data", "columns", name), f"dataset {dataset.name!r} has no column {name!r}"
                          f"{_suggest(str(name), columns, list_known=False)}")
    if isinstance(normal.get("train"), dict) and target is None and not dataset.entry.cls.default_target:
        check.add(("data", "target"), "training needs a target column; set data.target")

    produced = set(getattr(instance, "modalities", frozenset()))
    if not produced:
        return  # unknown until loaded
    produced |= {o.get("modality") for o in overrides.values()
                 if isinstance(o, dict) and o.get("modality") and o.get("role") in (None, "feature")}
    produced = {str(m) for m in produced}
    stages = [r for s in kinds() if s.before_train and s.stage and s.many for r in parts[s.plan_attr]]
    # feature transforms may change modalities (text -> numeric), so a model after them is not checked
    if model is not None and not parts["features"]:
        stages.append(model)
    for stage in stages:
        accepts = {str(m) for m in stage.entry.cls.modalities}
        if accepts and not accepts & produced:
            check.add(tuple(_split_path(stage.section)) + ("use",),
                      f"{stage.name!r} works on {' or '.join(sorted(accepts))} columns; dataset "
                      f"{dataset.name!r} has none (it has {', '.join(sorted(produced))})")


def _check_hardware(check: _Checker, device_name: str, precision: Resolved | None,
                    parallel: Resolved | None, nproc: int) -> None:
    """Can this precision run on the chosen device, and this strategy on ``nproc`` processes?"""
    import torch  # only pipelines that train get here

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    for resolved, path, arg in ((precision, ("train", "precision"), lambda: torch.device(device_name)),
                                (parallel, ("train", "parallel"), lambda: DistInfo(world_size=nproc))):
        if resolved is None:
            continue
        try:
            reason = resolved.build().unsupported(arg())
        except Exception as err:
            reason = f"{resolved.name!r} failed its check ({type(err).__name__}: {err})"
        if reason is None and path[-1] == "parallel" and nproc < resolved.entry.cls.min_world_size:
            reason = (f"{resolved.name!r} needs at least {resolved.entry.cls.min_world_size} processes; "
                      f"run with --nproc {resolved.entry.cls.min_world_size} or more")
        if reason:
            check.add(path, reason)


def _check_space(check: _Checker, normal: dict, components: list[Resolved]) -> None:
    """Every key of the tuner's search ``space`` must be a pipeline path a trial can ``--set``."""
    with_ = normal["tune"].get("with")
    space = with_.get("space") if isinstance(with_, dict) else None
    if not isinstance(space, Mapping):
        return
    for key in space:
        reason = pipeline_path_problem(str(key), normal, components)
        if reason:
            check.add(("tune", "with", "space", key), reason)


def pipeline_path_problem(text: str, raw: Mapping[str, Any], components: Iterable[Resolved] = ()) -> str | None:
    """Why ``text`` is not a settable pipeline path (``train.optimizer.lr``, ``clean.0.with.k``), or None.

    Parameters under a component's ``with`` are checked against that component's ``Params``
    when it is among ``components`` (resolved components, found by their section).
    """
    by_section = {r.section: r for r in components}
    path = _split_path(text)
    model: Any = pipeline_model()
    node: Any = raw
    depth = 0
    while depth < len(path):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None  # inside a free-form mapping (data.columns, ...): any key goes
        part, where = path[depth], _dotted(path[:depth]) or "the pipeline"
        if part == "with" and _field_named(model, "with") is not None:
            component = by_section.get(_dotted(path[:depth]))
            rest = path[depth + 1:]
            if component is None or not rest:
                return None  # unresolved (reported elsewhere) or the whole mapping
            fields = _field_names(component.entry.cls.Params)
            if rest[0] not in fields:
                return f"{component.name!r} has no parameter {rest[0]!r}{_suggest(str(rest[0]), fields)}"
            return None
        info = _field_named(model, part)
        if info is None:
            return f"{where} has no field {part!r}{_suggest(str(part), _field_names(model))}"
        tp = _unwrap(info.annotation)
        node = node.get(part) if isinstance(node, Mapping) else None
        depth += 1
        if typing.get_origin(tp) is list:
            if depth == len(path):
                return None
            index, size = path[depth], len(node) if isinstance(node, list) else 0
            if not isinstance(index, int) or not 0 <= index < size:
                return f"{_dotted(path[:depth])} has {size} item(s); {index!r} is not one of them"
            node, depth = node[index], depth + 1
            tp = _unwrap(typing.get_args(tp)[0])
        model = tp
    return None


# ============================================================================ assembling from options

#: option names :func:`assembly_options` adds, as keyword arguments of :func:`pipeline_from_options`
ASSEMBLY_FIELDS = ("data", "target", "clean", "augment", "features", "train", "precision", "parallel",
                   "tune", "compress", "monitor", "name", "seed", "epochs", "batch_size")


def pipeline_from_options(*, data: str | None = None, target: str | None = None, clean: Sequence[str] = (),
                          augment: Sequence[str] = (), features: Sequence[str] = (), train: str | None = None,
                          precision: str | None = None, parallel: str | None = None, tune: str | None = None,
                          compress: Sequence[str] = (), monitor: Sequence[str] = (), name: str | None = None,
                          seed: int | None = None, epochs: int | None = None,
                          batch_size: int | None = None) -> dict[str, Any]:
    """A raw pipeline dict from component names (what ``init`` writes and ``run`` runs without a file)."""
    if not data:
        raise InputError([Problem("--data", "no dataset; give --data NAME (a registered dataset) "
                                            "or --data PATH (a .csv/.parquet file)")])
    needs_train = {"--precision": precision, "--parallel": parallel, "--epochs": epochs,
                   "--batch-size": batch_size, "--tune": tune}
    orphans = [opt for opt, value in needs_train.items() if value is not None]
    if orphans and not train:
        raise InputError([Problem(opt, "needs a model to train; add --train MODEL") for opt in orphans])
    stem = Path(data).stem if looks_like_path(data) else data.rpartition(":")[2]
    raw: dict[str, Any] = {"name": name or re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._") or "pipeline",
                           "seed": 0 if seed is None else seed,
                           "data": {"source": data, **({"target": target} if target else {})}}
    for section, names in (("clean", clean), ("augment", augment), ("features", features)):
        if names:
            raw[section] = [{"use": n} for n in names]
    if train:
        section: dict[str, Any] = {"model": {"use": train}}
        for key, value in (("epochs", epochs), ("batch_size", batch_size)):
            if value is not None:
                section[key] = value
        for key, value in (("precision", precision), ("parallel", parallel)):
            if value:
                section[key] = {"use": value}
        raw["train"] = section
    if tune:
        raw["tune"] = {"use": tune}
    for section, names in (("compress", compress), ("monitor", monitor)):
        if names:
            raw[section] = [{"use": n} for n in names]
    return raw


def _names(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[str]:
    """``--clean a,b --clean c`` -> ``["a", "b", "c"]``."""
    return [n.strip() for v in value or () for n in v.split(",") if n.strip()]


def assembly_options(command: Callable) -> Callable:
    """Add the options that assemble a pipeline from component names (keyword args: ``ASSEMBLY_FIELDS``).

    Pass them on with ``pipeline_from_options(**{k: kwargs.pop(k) for k in ASSEMBLY_FIELDS})``.
    """
    many = functools.partial(click.option, multiple=True, callback=_names, metavar="A,B")
    options = [
        click.option("--data", metavar="DATASET|PATH", help="Registered dataset, or a .csv/.parquet file."),
        click.option("--target", metavar="COLUMN", help="Target column (default: the dataset's own)."),
        many("--clean", help="Cleaners, in order (comma-separated or repeated)."),
        many("--augment", help="Augmenters, in order."),
        many("--features", help="Feature transforms, in order."),
        click.option("--train", metavar="MODEL", help="Model to train (or pkg.mod:factory)."),
        click.option("--precision", metavar="POLICY", help="Precision policy (default fp32)."),
        click.option("--parallel", metavar="STRATEGY", help="Parallel strategy (default single)."),
        click.option("--tune", metavar="TUNER", help="Tuner."),
        many("--compress", help="Compressors, in order."),
        many("--monitor", help="Monitors."),
        click.option("--name", metavar="NAME", help="Pipeline name (names the run folder)."),
        click.option("--seed", type=int, help="Seed (default 0)."),
        click.option("--epochs", type=click.IntRange(min=1), help="Training epochs."),
        click.option("--batch-size", "batch_size", type=click.IntRange(min=1), help="Micro-batch size."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
