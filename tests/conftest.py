"""Shared fixtures: throwaway plugin distributions and the real CLI in a subprocess.

Distributions are installed with ``pip --target`` into a temporary folder that is put on
``PYTHONPATH`` of the subprocess only, so the shared virtualenv is never changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

# one torch thread per test process: the suite runs two processes on two cores, and a fixed
# count keeps runs that are compared bit for bit on the same kernels (see core/train/threads.py)
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: the console script of the installed project (a Python script, run with this interpreter)
FORGELINE = Path(sys.executable).parent / "forgeline"


def write_distribution(root: Path, dist: str, version: str, module: str, source: str,
                       entry_point: str = "cleaners") -> Path:
    """A minimal setuptools distribution ``dist`` whose module ``module`` is a forgeline plugin."""
    folder = root / dist
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(textwrap.dedent(source))
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = ["forgeline"]

        [project.entry-points."forgeline.plugins"]
        {entry_point} = "{module}"

        [tool.setuptools]
        packages = ["{module}"]
        """))
    return folder


def pip_install_target(target: Path, *folders: Path) -> None:
    """Install distributions into ``target`` (not the venv) without touching dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), *map(str, folders)],
                   check=True, capture_output=True, text=True)


def run_cli(*args: str, site: Path | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed ``forgeline`` console script with ``site`` on PYTHONPATH."""
    return run_python(str(FORGELINE), *args, site=site, env=env, cwd=cwd, timeout=timeout)


def run_python(*args: str, site: Path | None = None, env: dict[str, str] | None = None,
               cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "FORGELINE_DISABLE_PLUGINS"}
    full_env.update(env or {})
    if site is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def run_forgeline() -> Callable[..., subprocess.CompletedProcess]:
    """The real CLI in a subprocess: ``run_forgeline(*args, site=None, env=None, cwd=None)``."""
    return run_cli


# ------------------------------------------------------------- demo plugin distributions

GOOD = '''
"""A good third-party plugin: one cleaner that drops rows with a negative value."""
from pydantic import Field
from forgeline.core import Cleaner, CleanResult, Params, hookimpl


class DropNegativeParams(Params):
    column: str = Field("x1", description="column whose negative values are dropped")


class DropNegative(Cleaner):
    """Drop rows whose value in a column is negative."""

    name = "drop-negative"
    Params = DropNegativeParams

    def fit(self, table, ctx=None):
        return self

    def apply(self, table, ctx=None):
        bad = (table.frame[self.params.column] < 0).to_numpy()
        removed = table.frame[bad].copy()
        removed["reason"] = f"{self.params.column} < 0"
        return CleanResult(table.take_mask(~bad), removed, flagged=removed.index.to_numpy())


@hookimpl
def forgeline_cleaners():
    return [DropNegative]
'''

CLASH = GOOD.replace("A good third-party plugin", "Another distribution, same cleaner name").replace(
    "negative value.", "negative value (its own take).")

BROKEN_IMPORT = '''
raise RuntimeError("boom: licence server unreachable")
'''

MISSPELLED = '''
from forgeline.core import hookimpl


@hookimpl
def forgeline_cleanerz():
    return []
'''

MIXED = '''
"""Registers one valid and one invalid cleaner, and a model hook that raises."""
from forgeline.core import Cleaner, CleanResult, hookimpl


class KeepAll(Cleaner):
    """Keep every row (a valid component)."""

    name = "keep-all"

    def fit(self, table, ctx=None):
        return self

    def apply(self, table, ctx=None):
        import pandas as pd
        return CleanResult(table, pd.DataFrame({"reason": []}, index=table.frame.index[:0]))


class BadName(Cleaner):
    """A cleaner whose name is not kebab-case."""

    name = "Bad_Name"


@hookimpl
def forgeline_cleaners():
    return [KeepAll, BadName, KeepAll]


@hookimpl
def forgeline_models():
    raise ValueError("model registry offline")
'''

DEMO_DISTRIBUTIONS = {
    # dist name: (version, module, source)
    "forgeline-good-demo": ("1.2.3", "fl_good_demo", GOOD),
    "forgeline-clash-demo": ("0.4.0", "fl_clash_demo", CLASH),
    "forgeline-broken-demo": ("0.0.1", "fl_broken_demo", BROKEN_IMPORT),
    "forgeline-misspelled-demo": ("0.2.0", "fl_misspelled_demo", MISSPELLED),
    "forgeline-mixed-demo": ("0.3.0", "fl_mixed_demo", MIXED),
}


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the demo distributions, installed for real with pip --target.

    Every demo registers its entry point under the same name (``cleaners``) to show that
    entry-point names need only be unique within a distribution.
    """
    root = tmp_path_factory.mktemp("demo-dists")
    folders = [write_distribution(root, dist, version, module, source)
               for dist, (version, module, source) in DEMO_DISTRIBUTIONS.items()]
    site = root / "site"
    pip_install_target(site, *folders)
    return site


# ------------------------------------------------------------- run report

def assert_self_contained_report(run_dir: Path) -> str:
    """``run_dir/report.html`` exists and needs no network: no http(s) URL in src/href, no script."""
    import re
    from html.parser import HTMLParser

    page = (run_dir / "report.html").read_text()
    urls: list[str] = []
    tags: set[str] = set()

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            urls.extend(v or "" for k, v in attrs if k in ("src", "href"))

    Links().feed(page)
    remote = [u for u in urls if re.match(r"\s*(?:https?:)?//", u, flags=re.I)]
    assert not remote, f"report.html loads from the network: {remote[:5]}"
    assert "script" not in tags and "@import" not in page and "url(http" not in page
    assert urls and all(u.startswith(("data:", "#", "quarantine/")) for u in urls), urls[:10]
    return page
