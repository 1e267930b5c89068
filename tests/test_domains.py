"""The domain distributions under examples/domains/: installed with pip, found through entry
points, and removable one at a time without breaking forgeline or the others.

The shared virtualenv holds all three (editable, as the Makefile installs them). To uninstall
one for real without touching it, the CLI runs on a copy of the environment: a folder of links
to every entry of the venv's site-packages except the domain distributions, plus a
``pip install --target`` site holding the three real (non-editable) installs; the
"uninstall" deletes the files a distribution's RECORD lists, as pip does.
"""

from __future__ import annotations

import csv
import json
import site
import sys
from pathlib import Path

import pytest

from conftest import pip_install_target, run_python

ROOT = Path(__file__).parents[1]
DOMAINS = {"forgeline-finance": ("finance", {"credit-applicants", "smote-defaults", "woe-binning"}),
           "forgeline-medical3d": ("medical3d", {"ct-nodules", "ct-augment3d", "progressive-resolution", "cnn3d"}),
           "forgeline-industrial": ("industrial", {"textured-surfaces", "defect-synthesis", "defect-net"})}
MODULES = ("forgeline_finance", "forgeline_medical3d", "forgeline_industrial")


@pytest.fixture(scope="module")
def env_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("domains-env")
    farm, target = root / "base", root / "site"
    farm.mkdir()
    venv_site = Path(next(p for p in site.getsitepackages() if p.startswith(sys.prefix)))
    for entry in venv_site.iterdir():
        if not any(m in entry.name for m in MODULES):
            (farm / entry.name).symlink_to(entry)
    pip_install_target(target, *(ROOT / "examples" / "domains" / d for d, _ in DOMAINS.values()))
    return farm, target


def forgeline(env: tuple[Path, Path], *args: str):
    farm, target = env
    code = ("import site, sys; site.addsitedir(sys.argv[1]); site.addsitedir(sys.argv[2]); "
            "sys.argv = ['forgeline', *sys.argv[3:]]; from forgeline.core.cli import main; main()")
    return run_python("-S", "-c", code, str(target), str(farm), *args)


def components(env: tuple[Path, Path]) -> dict[str, set[str]]:
    out = forgeline(env, "plugins", "list", "--json")
    assert out.returncode == 0, out.stderr
    by_dist: dict[str, set[str]] = {}
    for row in json.loads(out.stdout):
        by_dist.setdefault(row["distribution"], set()).add(row["name"])
    return by_dist


def _has_command(help_text: str, name: str) -> bool:
    return any(line.split()[:1] == [name] for line in help_text.splitlines() if line.startswith("  "))


def uninstall(target: Path, module: str) -> None:
    """Remove every file the distribution's RECORD lists (what ``pip uninstall`` does)."""
    info = next(target.glob(f"{module}-*.dist-info"))
    with open(info / "RECORD", newline="") as f:
        for path, *_ in csv.reader(f):
            (target / path).unlink(missing_ok=True)
    for d in sorted(target.glob(f"{module}*"), reverse=True):
        if d.is_dir() and not any(p.is_file() for p in d.rglob("*")):
            for sub in sorted(d.rglob("*"), reverse=True):
                sub.rmdir()
            d.rmdir()


def test_installed_domains_list_their_components_and_uninstall_cleanly(env_copy):
    found = components(env_copy)
    for dist, (_, names) in DOMAINS.items():
        assert found.get(dist) == names, (dist, found.get(dist))
    assert _has_command(forgeline(env_copy, "--help").stdout, "models")  # finance's CLI hook

    uninstall(env_copy[1], "forgeline_finance")
    after = components(env_copy)
    assert "forgeline-finance" not in after
    for dist in ("forgeline-medical3d", "forgeline-industrial", "forgeline"):
        assert after.get(dist) == found[dist]
    help_out = forgeline(env_copy, "--help")
    assert help_out.returncode == 0 and not _has_command(help_out.stdout, "models")
    show = forgeline(env_copy, "plugins", "show", "cnn3d")
    assert show.returncode == 0 and "mc_samples" in show.stdout
