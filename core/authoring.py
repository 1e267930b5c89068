"""Writing and describing pipelines: ``init`` files, the JSON Schema for editors, ``explain``.

All three are generated from the same sources as validation: the pipeline model
(``forgeline.core.pipeline``) and each registered component's ``Params``.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from pydantic import BaseModel

from .catalog import Catalog
from .components import Kind
from .kinds import KindSpec, as_kind, kinds
from .pipeline import Data, Train, Use, pipeline_model
from .validation import Plan, Resolved, load_plan, plain, section_rank

_INDENT = "  "


# ============================================================================ init

def _flow(value: Any) -> str:
    """``value`` as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=float("inf"), allow_unicode=True,
                          sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _comment(text: str | None) -> str:
    return f"  # {' '.join(text.split())}" if text and text.strip() else ""


_BOUND_SIGNS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _note(info: Any) -> str:
    """A field's description, plus its choices or bounds when the description does not say them."""
    parts = [info.description] if info.description else []
    tp = info.annotation
    choices = [a for a in typing.get_args(tp) if isinstance(a, str)] if typing.get_origin(tp) is typing.Literal else []
    if choices and not all(c in (info.description or "") for c in choices):
        parts.append("one of: " + ", ".join(choices))
    bounds = [f"{sign} {getattr(m, key)}" for m in info.metadata for key, sign in _BOUND_SIGNS
              if getattr(m, key, None) is not None]
    if bounds:
        parts.append(" and ".join(bounds))
    return "; ".join(parts)


def _key(name: str, info: Any) -> str:
    return info.alias or name


def _params_lines(resolved: Resolved, indent: str, skip: Iterable[str] = ()) -> list[str]:
    """``with:`` and every parameter at its value, each described; nothing for parameterless components."""
    params, skip = resolved.params, set(skip)
    fields = [(n, i) for n, i in type(params).model_fields.items() if _key(n, i) not in skip]
    if not fields:
        return []
    lines = [f"{indent}with:"]
    for name, info in fields:
        lines.append(f"{indent}{_INDENT}{_key(name, info)}: {_flow(getattr(params, name))}{_comment(_note(info))}")
    return lines


def _use_lines(resolved: Resolved, indent: str, first: str) -> list[str]:
    """A component reference: ``use: NAME  # summary (provider version)`` and its ``with:``.

    ``first`` prefixes the ``use:`` line (``"  - "`` in a list), ``indent`` the ``with:`` lines.
    """
    provenance = f"{resolved.entry.summary} ({resolved.entry.distribution} {resolved.entry.version})"
    return [f"{first}use: {_flow(resolved.entry.name)}{_comment(provenance)}",
            *_params_lines(resolved, indent)]


def _section_lines(model: BaseModel, indent: str, special: Mapping[str, list[str]]) -> list[str]:
    """Every field of a section model at its value, described; ``special`` fields are written by the caller."""
    lines: list[str] = []
    for name, info in type(model).model_fields.items():
        key = _key(name, info)
        if key in special:
            lines += special[key]
            continue
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{key}:{_comment(_note(info))}")
            lines += _section_lines(value, indent + _INDENT, {})
        else:
            lines.append(f"{indent}{key}: {_flow(value)}{_comment(_note(info))}")
    return lines


def init_yaml(raw: Mapping[str, Any], catalog: Catalog, *, base: Path | None = None) -> str:
    """A pipeline file for ``raw`` with every field and parameter at its default, each described.

    ``raw`` is validated first (unknown names raise InputError with suggestions); relative
    data paths in it resolve against ``base`` and are written as given.
    """
    plan = load_plan(raw, catalog, base=base, hardware=False)
    p = plan.pipeline
    given_source = str(raw["data"]["source"])
    from_path = given_source != p.data.source  # a path, rewritten to the `file` dataset by validation
    target = p.data.target or plan.dataset.entry.cls.default_target
    fields = pipeline_model().model_fields
    out = ["# forgeline pipeline, written by `forgeline init`: every setting at its value, described.",
           "# Check it with `forgeline validate FILE`; `forgeline plugins show NAME` describes a component.",
           f"name: {_flow(p.name)}{_comment(fields['name'].description)}",
           f"seed: {_flow(p.seed)}{_comment(fields['seed'].description)}",
           "data:"]
    dataset = plan.dataset
    source_note = f"{dataset.entry.summary} ({dataset.entry.distribution} {dataset.entry.version})"
    out += _section_lines(p.data, _INDENT, {
        "source": [f"{_INDENT}source: {_flow(given_source)}{_comment(source_note)}"],
        "with": _params_lines(dataset, _INDENT, skip=("path",) if from_path else ()),
        "target": [f"{_INDENT}target: {_flow(target)}{_comment(Data.model_fields['target'].description)}"],
    })
    top = sorted((s for s in kinds() if s.top_level), key=lambda s: section_rank(s.section))
    for spec in (s for s in top if s.before_train):
        out += _kind_lines(spec.section, getattr(plan, spec.plan_attr))
    if p.train is not None:
        nested = [s.section.partition(".")[2] for s in kinds() if s.section.startswith("train.")]
        out.append("train:")
        out += _section_lines(p.train, _INDENT, {
            key: [f"{_INDENT}{key}:", *_use_lines(getattr(plan, key), _INDENT * 2, _INDENT * 2)]
            for key in nested})
    for spec in (s for s in top if not s.before_train):
        out += _kind_lines(spec.section, getattr(plan, spec.plan_attr))
    return "\n".join(out) + "\n"


def _kind_lines(section: str, value: list[Resolved] | Resolved | None) -> list[str]:
    if isinstance(value, Resolved):
        return [f"{section}:", *_use_lines(value, _INDENT, _INDENT)]
    return _list_lines(section, value or [])


def _list_lines(section: str, items: list[Resolved]) -> list[str]:
    if not items:
        return []
    lines = [f"{section}:"]
    for r in items:
        lines += _use_lines(r, _INDENT * 2, f"{_INDENT}- ")
    return lines


# ============================================================================ JSON Schema

def _rehome_refs(schema: Any, prefix: str) -> Any:
    """Rewrite ``#/$defs/X`` to ``#/$defs/<prefix>X`` throughout ``schema``."""
    if isinstance(schema, dict):
        return {k: (("#/$defs/" + prefix + v.removeprefix("#/$defs/")) if k == "$ref" and isinstance(v, str)
                    else _rehome_refs(v, prefix)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rehome_refs(v, prefix) for v in schema]
    return schema


def _params_schema(cls: type[BaseModel], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """A Params model's JSON Schema, its own ``$defs`` hoisted into ``defs`` under ``prefix``."""
    schema = _rehome_refs(cls.model_json_schema(), prefix)
    for name, sub in schema.pop("$defs", {}).items():
        defs[prefix + name] = sub
    return schema


def _names(entry) -> list[str]:
    return [entry.name, f"{entry.distribution}:{entry.name}"]


def pipeline_schema(catalog: Catalog) -> dict[str, Any]:
    """JSON Schema of the pipeline file, each ``use:`` expanded into the registered components of its kind."""
    schema = copy.deepcopy(pipeline_model().model_json_schema(by_alias=True))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "forgeline pipeline"
    defs = schema.setdefault("$defs", {})
    generic = defs.get(Use.__name__, {"type": "object"})

    def kind_def(kind: Kind | str) -> str:
        """Name of the ``$defs`` entry accepting any registered component of ``kind`` (long or short form)."""
        options: list[dict[str, Any]] = []
        for entry in catalog.of_kind(kind):
            prefix = f"{kind}.{entry.distribution}.{entry.name}."
            params = _params_schema(entry.cls.Params, prefix, defs)
            options.append({"type": "object", "title": entry.name, "description": entry.summary,
                            "properties": {"use": {"enum": _names(entry)}, "with": params},
                            "required": ["use"], "additionalProperties": False})
            options.append({"enum": _names(entry), "description": entry.summary})
        if kind == Kind.MODEL:  # `use: pkg.mod:factory`, the `module` model's shorthand
            factory = {"type": "string", "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"}
            options += [factory, {"type": "object", "properties": {"use": factory, "with": {"type": "object"}},
                                  "required": ["use"], "additionalProperties": False}]
        defs[str(kind)] = {"anyOf": options} if options else generic
        return f"#/$defs/{kind}"

    props, train = schema["properties"], defs[Train.__name__]["properties"]
    # lists, then single sections, then train's: the order ``$defs`` has always been written in
    train_fields = list(Train.model_fields)

    def place(s: KindSpec) -> tuple:
        leaf = s.section.partition(".")[2]
        return (not s.top_level, not s.many, section_rank(s.section),
                train_fields.index(leaf) if leaf in train_fields else 0)

    order = sorted(kinds(), key=place)
    for spec in order:
        kind = as_kind(spec.kind)
        if spec.top_level and spec.many:
            props[spec.section] = {**_keep(props[spec.section]), "type": "array", "items": {"$ref": kind_def(kind)}}
        elif spec.top_level:
            props[spec.section] = {**_keep(props[spec.section]),
                                   "anyOf": [{"$ref": kind_def(kind)}, {"type": "null"}]}
        elif spec.section.startswith("train."):
            key = spec.section.partition(".")[2]
            train[key] = {**_keep(train[key]), "$ref": kind_def(kind)}
    data = defs[Data.__name__]
    datasets = catalog.of_kind(Kind.DATASET)
    data["properties"]["source"] = {**_keep(data["properties"]["source"]), "anyOf": [
        {"enum": [n for e in datasets for n in _names(e)]},
        {"type": "string", "pattern": r"(?i)(\.csv|\.parquet|\.pq)$|/"}]}
    # the dataset's parameters depend on which dataset `source` names
    data["allOf"] = [{"if": {"properties": {"source": {"enum": _names(e)}}, "required": ["source"]},
                      "then": {"properties": {"with": _params_schema(e.cls.Params, f"dataset.{e.distribution}.{e.name}.", defs)}}}
                     for e in datasets]
    return schema


def _keep(prop: Mapping[str, Any]) -> dict[str, Any]:
    """The annotations of a property (title, description, default) without its type."""
    return {k: v for k, v in prop.items() if k in ("title", "description", "default")}


# ============================================================================ explain

def explain(plan: Plan) -> str:
    """The assembled pipeline as text: stages in run order, each with provider, version, full parameters."""
    p = plan.pipeline
    where = f" ({plan.file})" if plan.file else ""
    lines = [f"pipeline {p.name}{where}, seed {p.seed}"]
    for n, stage in enumerate(plan.stages(), 1):
        lines.append(f"{n:>2}. {stage.section:<16} {stage.entry.name}  "
                     f"[{stage.entry.distribution} {stage.entry.version}]  {stage.entry.summary}")
        lines += _param_lines(stage.params.model_dump(), " " * 6)
        if stage is plan.dataset:
            lines += _param_lines({"target": p.data.target or stage.entry.cls.default_target,
                                   "split": p.data.split.model_dump(), "columns": p.data.columns}, " " * 6)
        if stage is plan.model and p.train is not None:
            settings = p.train.model_dump(exclude={"model", "precision", "parallel"})
            lines += _param_lines(settings, " " * 6)
            for extra in (plan.precision, plan.parallel):
                lines.append(f"      {extra.section.split('.')[-1]}: {extra.entry.name}  "
                             f"[{extra.entry.distribution} {extra.entry.version}]")
                lines += _param_lines(extra.params.model_dump(), " " * 8)
    if plan.monitor:
        lines.append("monitors:")
        for m in plan.monitor:
            lines.append(f"    {m.entry.name}  [{m.entry.distribution} {m.entry.version}]")
            lines += _param_lines(m.params.model_dump(), " " * 6)
    return "\n".join(lines)


def _param_lines(values: Mapping[str, Any], indent: str) -> list[str]:
    return [f"{indent}{k}: {_flow(v)}" for k, v in values.items()]
