"""The run report: every section from a real run folder, a plugin's section, a failed run, in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import assert_self_contained_report, pip_install_target, run_cli, write_distribution

PLUGIN = '''
"""A domain plugin: a report section, and a cleaner that fails with markup in its message."""
import html

from forgeline.core import Cleaner, hookimpl
from forgeline.core.report import ReportSection


class Explode(Cleaner):
    """Fail while fitting (to test failed runs' reports)."""

    name = "explode"

    def fit(self, table, ctx=None):
        raise ValueError("<img src=x onerror=alert(1)> broke")

    def apply(self, table, ctx=None):
        raise AssertionError("never fitted")


@hookimpl
def forgeline_cleaners():
    return [Explode]


@hookimpl
def forgeline_report_sections(run):
    steps = len(run.events("step"))
    return [ReportSection("Demo domain", f"<p class=demo>{html.escape(run.manifest['name'])}: {steps} step records</p>")]
'''

PIPELINE = """\
name: {name}
seed: 1
data:
  source: credit
  with: {{rows: 400}}
  target: default
  split: {{test: 0.25, stratify: true}}
clean:
  - use: sigma-outliers
  - use: {middle}
  - use: robust-scale
train:
  model: {{use: mlp, with: {{hidden: [16]}}}}
  epochs: 2
  batch_size: 32
  log_every: 2
monitor:
  - use: system
    with: {{interval_s: 0.5}}
"""

ALL_SECTIONS = ["overview", "pipeline", "data-quality", "augmentation", "features", "training", "tuning",
                "compression", "demo-domain"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-plugin")
    site = root / "site"
    pip_install_target(site, write_distribution(root, "forgeline-report-demo", "0.1.0", "fl_report_demo", PLUGIN))
    return site


def _run(tmp: Path, site: Path, name: str, middle: str) -> tuple[int, Path, str]:
    file = tmp / f"{name}.yaml"
    file.write_text(PIPELINE.format(name=name, middle=middle))
    r = run_cli("run", str(file), "--out", str(tmp / "runs"), "--quiet", site=site, timeout=300)
    (run_dir,) = (tmp / "runs").glob(f"{name}-*")
    return r.returncode, run_dir, r.stderr


def _write_artifacts(run_dir: Path) -> None:
    """The artifact files of docs/report.md, as augment/features/tune/compress stages write them."""
    import numpy as np

    from forgeline.core.report import write_artifact

    rng = np.random.default_rng(0)
    art = run_dir / "artifacts"
    digit = rng.random((8, 8))
    write_artifact(art / "augment.0", "samples.json", {"samples": [
        {"kind": "image", "source_row_id": 3, "label": "7", "before": digit, "after": np.flipud(digit)},
        {"kind": "text", "source_row_id": 4, "before": "the loan <b>was</b> late", "after": "the credit was late"},
        {"kind": "series", "source_row_id": 5, "before": np.sin(np.linspace(0, 6, 50)),
         "after": np.sin(np.linspace(0, 6, 50)) + 0.1}]})
    write_artifact(art / "features.0", "importance.json",
                   {"method": "SHAP", "features": ["income", "age", "debt_ratio"], "importance": [0.3, 0.1, 0.2]})
    write_artifact(art / "features.0", "embedding.json",
                   {"method": "UMAP", "x": rng.normal(size=300), "y": rng.normal(size=300),
                    "label": rng.integers(0, 2, 300)})
    write_artifact(art / "tune", "trials.json", {"metric": "val_auc", "maximize": True, "trials": [
        {"number": i, "state": "complete", "score": float(s), "params": {"train.optimizer.lr": 10 ** -i}}
        for i, s in enumerate([0.6, 0.7, 0.65, 0.75])]})
    write_artifact(art / "compress.0", "compression.json", {"rows": [
        {"name": "baseline", "params": 4386, "latency_ms": 0.09, "val_accuracy": 0.79},
        {"name": "prune", "params": 1800, "latency_ms": 0.07, "val_accuracy": 0.77}]})


@pytest.fixture(scope="module")
def succeeded(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Path:
    """A real run (cleaning with quarantine, training, system samples), then every artifact kind, re-reported."""
    tmp = tmp_path_factory.mktemp("report-ok")
    code, run_dir, err = _run(tmp, site, "report-ok", "dedup")
    assert code == 0, err[-2000:]
    assert (run_dir / "report.html").is_file()  # the run wrote it
    _write_artifacts(run_dir)
    r = run_cli("report", str(run_dir), site=site)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(run_dir / "report.html")
    return run_dir


def test_report_shows_every_section_present_and_escapes_run_data(succeeded: Path) -> None:
    page = assert_self_contained_report(succeeded)
    for section in ALL_SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert 'id="error"' not in page  # a successful run has no error section
    assert "the loan &lt;b&gt;was&lt;/b&gt; late" in page  # run text is data, never markup
    assert 'href="quarantine/clean.1-dedup.csv"' in page
    assert "report-ok: " in page and " step records" in page  # the plugin's section saw the run


def test_a_run_without_optional_parts_has_no_empty_sections(succeeded: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "bare"
    shutil.copytree(succeeded, run_dir, ignore=shutil.ignore_patterns("artifacts", "checkpoints", "stages"))
    r = run_cli("report", str(run_dir))
    assert r.returncode == 0, r.stderr
    page = assert_self_contained_report(run_dir)
    for section in ("augmentation", "features", "tuning", "compression", "demo-domain"):
        assert f'id="{section}"' not in page


def test_failed_run_report_shows_how_far_it_got_and_the_error(tmp_path: Path, site: Path) -> None:
    code, run_dir, err = _run(tmp_path, site, "report-fail", "explode")
    assert code == 1, err[-2000:]
    page = assert_self_contained_report(run_dir)
    assert '<section id="error">' in page
    assert "&lt;img src=x onerror=alert(1)&gt; broke" in page and "<img src=x" not in page
    assert "clean.1" in page.split('<section id="error">')[1].split("</section>")[0]
    pipeline = page.split('<section id="pipeline">')[1].split("</section>")[0]
    assert pipeline.count("succeeded") == 2 and pipeline.count(">failed<") == 1
    assert pipeline.count("not reached") == 2  # clean.2 and train
    assert '<section id="demo-domain">' in page


def test_report_of_a_folder_that_is_not_a_run_is_an_input_error(tmp_path: Path) -> None:
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 2 and "not a run folder" in r.stderr and "Traceback" not in r.stderr


def test_a_broken_report_plugin_gets_an_error_box_and_the_others_still_show(succeeded: Path) -> None:
    import pluggy

    from forgeline.core import hookimpl, hookspecs
    from forgeline.core.report import ReportRun, ReportSection, render

    class Good:
        @hookimpl
        def forgeline_report_sections(self, run):
            return [ReportSection("Good one", "<p>fine</p>")]

    class Raises:
        @hookimpl
        def forgeline_report_sections(self):
            raise RuntimeError("<boom>")

    class WrongType:
        @hookimpl
        def forgeline_report_sections(self, run):
            return "<p>not a list</p>"

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in (("dist-good:x", Good()), ("dist-raises:y", Raises()), ("dist-wrong:z", WrongType())):
        pm.register(plugin, name=name)
    page = render(ReportRun(succeeded), pm.hook)
    assert '<section id="good-one">' in page
    assert "dist-raises:y: RuntimeError: &lt;boom&gt;" in page
    assert "dist-wrong:z: TypeError" in page and "<p>not a list</p>" not in page


def test_long_step_series_are_downsampled(succeeded: Path, tmp_path: Path) -> None:
    """A million-step run's records do not make a million-point plot (the report stays fast)."""
    import time

    from forgeline.core.report import write_report

    run_dir = tmp_path / "long"
    run_dir.mkdir()
    shutil.copy(succeeded / "manifest.json", run_dir)
    with (run_dir / "metrics.jsonl").open("w") as f:
        for step in range(1, 100_001):
            f.write(json.dumps({"event": "step", "step": step, "epoch": step // 10_000, "loss": 1 / step,
                                "lr": 0.001, "samples_per_s": 1000.0, "loss_scale": 65536.0,
                                "skipped_steps": step // 50_000}) + "\n")
    t = time.perf_counter()
    write_report(run_dir)
    took = time.perf_counter() - t
    page = (run_dir / "report.html").read_text()
    assert 'alt="loss scale and skipped steps"' in page and 'alt="loss curves"' in page
    assert len(page) < 2_000_000 and took < 30, (len(page), took)


# --------------------------------------------------------------------------- in a real browser

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser_or_skip() -> None:
    ci = os.environ.get("CI", "").lower() == "true"
    if not CHROMIUM.exists():
        if ci:
            pytest.fail("chromium is not installed (CI must run the browser test: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI=true fails instead of skipping")
    try:
        import playwright  # noqa: F401
    except ImportError:
        if ci:
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed (pip install -e '.[test]')")


def test_report_renders_in_headless_chromium(succeeded: Path) -> None:
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("FORGELINE_TEST_ARTIFACTS") or tempfile.mkdtemp(prefix="forgeline-report-"))
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: problems.append(f"request {r.url}")
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto((succeeded / "report.html").as_uri())
            page.wait_for_load_state("load")
            for section in ALL_SECTIONS:
                heading = page.locator(f"section#{section} > h2")
                assert heading.is_visible(), section
                assert page.locator(f'nav a[href="#{section}"]').is_visible(), section
            broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                                   ".map(i => i.alt)")
            assert not broken, f"images that did not decode: {broken}"
            assert page.evaluate("document.images.length") >= 10
            shot = shots / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"report screenshot: {shot}")
    assert not problems, problems
    assert shot.stat().st_size > 10_000


def test_a_report_that_cannot_be_written_is_a_warning_not_an_error(tmp_path: Path, capsys) -> None:
    from forgeline.core.report import write_report_or_warn

    (tmp_path / "manifest.json").write_text("{not json")
    assert write_report_or_warn(tmp_path) is None
    err = capsys.readouterr().err
    assert err.startswith("warning: the run report could not be written: ") and err.count("\n") == 1


def test_a_doctored_run_folder_cannot_inject_markup_or_links(succeeded: Path, tmp_path: Path) -> None:
    from forgeline.core.report import write_report

    manifest = json.loads((succeeded / "manifest.json").read_text())
    manifest["name"] = "<script>alert(1)</script>"
    manifest["metrics"]["<b>bold</b>"] = 1.0
    cleaner = next(s for s in manifest["stages"] if s["id"] == "clean.1")
    cleaner["report"]["quarantine"] = "javascript:alert(1)"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_report(tmp_path)
    page = assert_self_contained_report(tmp_path)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "javascript:alert(1)" in page and 'href="javascript' not in page  # shown as text, never a link


def test_tune_and_compress_stage_reports_and_shap_select_files_are_shown(succeeded: Path, tmp_path: Path) -> None:
    """What the tune and compress stages and shap-select record themselves (not the artifact convention)."""
    from forgeline.core.report import write_report

    manifest = json.loads((succeeded / "manifest.json").read_text())
    manifest["stages"] += [
        {"id": "tune", "name": "bayes", "status": "succeeded", "report": {"metric": "val_auc", "maximize": True, "table": [
            {"trial": 0, "train.optimizer.lr": 0.01, "val_auc": 0.7, "status": "finished"},
            {"trial": 1, "train.optimizer.lr": 0.001, "val_auc": 0.8, "status": "finished"}]}},
        {"id": "compress", "name": "prune", "status": "succeeded", "report": {"table": [
            {"version": "original", "params": 100, "latency_ms": 1.0, "speed": 1.0, "val_accuracy": 0.8},
            {"version": "prune", "params": 40, "latency_ms": 0.5, "speed": 2.0, "val_accuracy": 0.78}]}}]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shap = tmp_path / "artifacts" / "features.0"
    shap.mkdir(parents=True)
    (shap / "shap-ranking.json").write_text(json.dumps([{"feature": "income", "importance": 0.4},
                                                        {"feature": "age", "importance": 0.1}]))
    page = (write_report(tmp_path)).read_text()
    assert '<section id="tuning">' in page and "2 trials, maximising val_auc" in page
    assert '<section id="compression">' in page and 'alt="compression comparison"' in page
    assert 'alt="feature importance features.0"' in page
