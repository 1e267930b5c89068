"""``forgeline new-plugin``: writes a plugin distribution from the files in ``templates/``.

``templates/common`` holds what every plugin has (pyproject with the entry point, package
``__init__`` with the hook, README, conformance test); ``templates/<kind>`` holds the example
component of that kind and its behaviour test. Placeholders are ``string.Template`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..core.components import NAME_RE, Kind
from ..core.errors import InputError

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Example:
    """The example component a scaffold ships for one kind."""

    component: str  # its registered name
    cls: str
    summary: str
    section_example: str  # how a pipeline file uses it

    @property
    def module(self) -> str:
        return self.component.replace("-", "_")


EXAMPLES: dict[Kind, Example] = {
    Kind.CLEANER: Example(
        component="drop-missing-target", cls="DropMissingTarget",
        summary="drops rows whose target is missing, quarantining them with the reason.",
        section_example="clean:\n  - use: drop-missing-target\n    with: {missing_values: ['?']}"),
    Kind.FEATURE_TRANSFORM: Example(
        component="log-skewed", cls="LogSkewed",
        summary="applies a signed log to skewed numeric columns learnt on the training split.",
        section_example="features:\n  - use: log-skewed\n    with: {min_skew: 1.0}"),
    Kind.MONITOR: Example(
        component="csv-metrics", cls="CsvMetrics",
        summary="writes every metrics record of a run to a CSV file in the run folder.",
        section_example="monitor:\n  - use: csv-metrics\n    with: {events: [epoch]}"),
}


def package_name(name: str) -> str:
    return "forgeline_" + name.replace("-", "_")


def scaffold(name: str, directory: Path | str = ".", kind: str = Kind.CLEANER.value) -> Path:
    """Write ``directory/name/`` and return it; InputError for a bad name, kind or existing folder."""
    if not NAME_RE.match(name):
        raise InputError(f"new-plugin: NAME {name!r} is not kebab-case (lowercase words joined by '-', "
                         f"e.g. 'my-cleaners')")
    try:
        example = EXAMPLES[Kind(kind)]
    except (ValueError, KeyError):
        available = ", ".join(str(k) for k in EXAMPLES)
        raise InputError(f"new-plugin: --kind {kind!r} has no template yet; available: {available}") from None
    root = Path(directory) / name
    if root.exists():
        raise InputError(f"new-plugin: {root} already exists; choose another NAME or --dir")
    kind_ = Kind(kind)
    package = package_name(name)
    fields = {"name": name, "package": package, "kind": str(kind_), "hook": kind_.hook,
              "component": example.component, "cls": example.cls, "module": example.module,
              "summary": example.summary, "section_example": example.section_example}
    layout = {
        "common/pyproject.toml.tmpl": "pyproject.toml",
        "common/README.md.tmpl": "README.md",
        "common/__init__.py.tmpl": f"{package}/__init__.py",
        "common/test_conformance.py.tmpl": "tests/test_conformance.py",
        f"{kind_.value}/component.py.tmpl": f"{package}/{example.module}.py",
        f"{kind_.value}/test_component.py.tmpl": f"tests/test_{example.module}.py",
    }
    for source, target in layout.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((TEMPLATES / source).read_text()).substitute(fields))
    return root
