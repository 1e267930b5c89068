"""Built-in monitors: what each writes, serves or prints, through their real outputs."""

from __future__ import annotations

import io
import json
import sys
import time
import types
import urllib.request
from pathlib import Path

import pydantic
import pytest

from forgeline.core import InputError, RunInfo
from forgeline.plugins.monitor import Console, Jsonl, Prometheus, System, Tensorboard, forgeline_monitors

STEPS = [{"event": "step", "step": s, "epoch": 0, "loss": 1.0 / s, "lr": 0.01, "grad_norm": 2.5,
          "samples_per_s": 1000.0 + s, "step_time_s": 0.002, "loss_scale": 32768.0, "skipped_steps": 0,
          "time": 1_700_000_000.0 + s} for s in (1, 2, 3)]
EPOCH = {"event": "epoch", "epoch": 0, "loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "time": 1_700_000_010.0}


def run_info(tmp_path: Path | None, records: list | None = None, **kwargs) -> RunInfo:
    emitted = records if records is not None else []
    return RunInfo(name="demo", dir=tmp_path, seed=0, pipeline={}, emit=emitted.append, **kwargs)


def test_registration():
    names = {cls.name for cls in forgeline_monitors()}
    assert names == {"console", "jsonl", "tensorboard", "prometheus", "system"}


# ------------------------------------------------------------------ jsonl

def test_jsonl_writes_and_flushes_each_record(tmp_path):
    monitor = Jsonl()
    monitor.open(run_info(tmp_path))
    monitor.log(STEPS[0])
    # flushed already: another reader (or a run killed now) sees the complete line
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [STEPS[0]]
    monitor.log({"event": "stage", "name": "dedup", "path": tmp_path, "loss": float("nan")})
    monitor.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["path"] == str(tmp_path) and records[1]["loss"] != records[1]["loss"]  # NaN kept
    assert isinstance(records[1]["time"], float)  # added when missing


def test_jsonl_appends_in_a_subfolder(tmp_path):
    for step in STEPS[:2]:
        monitor = Jsonl(path="logs/m.jsonl")
        monitor.open(run_info(tmp_path))
        monitor.log(step)
        monitor.close()
    assert len((tmp_path / "logs" / "m.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("path", ["../escape.jsonl", "/tmp/abs.jsonl", "logs/../../x.jsonl", "C:\\x.jsonl", ""])
def test_jsonl_rejects_paths_outside_the_run_folder(path):
    with pytest.raises(pydantic.ValidationError, match="path"):
        Jsonl(path=path)


def test_jsonl_rejects_symlink_escape_and_missing_run_folder(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    run_dir.mkdir()
    outside.mkdir()
    (run_dir / "link").symlink_to(outside)
    with pytest.raises(InputError, match="outside the run folder"):
        Jsonl(path="link/m.jsonl").open(run_info(run_dir))
    with pytest.raises(InputError, match="no run folder"):
        Jsonl().open(run_info(None))


# ------------------------------------------------------------------ tensorboard

def test_tensorboard_event_files_are_readable(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monitor = Tensorboard()
    monitor.open(run_info(tmp_path))
    for record in [*STEPS, EPOCH, {"event": "latency", "latency_p50_ms": 1.5, "note": "text is skipped"}]:
        monitor.log(record)
    monitor.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"step/loss", "step/lr", "step/loss_scale", "epoch/val_accuracy", "latency/latency_p50_ms"} <= tags
    assert "step/step" not in tags and "latency/note" not in tags
    loss = acc.Scalars("step/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert loss[0].wall_time == pytest.approx(STEPS[0]["time"])
    assert acc.Scalars("latency/latency_p50_ms")[0].step == 1  # no step or epoch: a counter


# ------------------------------------------------------------------ prometheus

def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_prometheus_serves_gauges_on_localhost(tmp_path):
    emitted: list = []
    monitor = Prometheus(port=0)
    monitor.open(run_info(tmp_path, emitted))
    try:
        assert monitor.port > 0
        assert emitted == [{"event": "monitor", "monitor": "prometheus", "port": monitor.port,
                            "url": f"http://127.0.0.1:{monitor.port}/metrics"}]
        for record in [*STEPS, EPOCH, {"event": "system", "cpu_percent": 12.5, "gpu0_util-pct": 40}]:
            monitor.log(record)
        body = scrape(monitor.url)
        assert 'forgeline_loss{event="step",run="demo"} 0.3333333333333333' in body
        assert 'forgeline_loss{event="epoch",run="demo"} 0.5' in body
        assert 'forgeline_samples_per_s{event="step",run="demo"} 1003.0' in body
        assert 'forgeline_cpu_percent{event="system",run="demo"} 12.5' in body
        assert 'forgeline_gpu0_util_pct{event="system",run="demo"} 40.0' in body
        assert "forgeline_time" not in body
    finally:
        monitor.close()
    with pytest.raises(OSError):
        scrape(monitor.url)  # the server is gone


# ------------------------------------------------------------------ system

def test_system_monitor_samples_cpu_memory_and_cost(tmp_path):
    emitted: list = []
    monitor = System(interval_s=0.05, price_per_device_hour=3600.0, gpu=False)  # $1 per second
    started = time.monotonic()
    monitor.open(run_info(tmp_path, emitted))
    while time.monotonic() - started < 0.3:  # keep a CPU busy so every sample has something to see
        pass
    monitor.close()
    elapsed = time.monotonic() - started
    assert not monitor._thread  # stopped and joined
    assert len(emitted) >= 3 and all(r["event"] == "system" for r in emitted)
    assert emitted[0]["cpu_percent"] > 0 and emitted[0]["process_cpu_percent"] > 0  # baselines primed
    last = emitted[-1]
    assert last["process_rss_mb"] > 1 and 0 <= last["cpu_percent"] <= 100 and last["memory_used_mb"] > 0
    assert last["devices"] == 1
    assert last["cost_usd"] == pytest.approx(last["elapsed_s"], rel=1e-9)
    assert 0.2 < last["cost_usd"] <= elapsed
    count = len(emitted)
    time.sleep(0.15)
    assert len(emitted) == count  # nothing after close


FakeNVML = types.SimpleNamespace


def fake_pynvml() -> types.ModuleType:
    """Just enough of pynvml for two GPUs, to check what the monitor reads and how it converts it."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    module.NVMLError = NVMLError
    module.NVML_PCIE_UTIL_TX_BYTES, module.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    module.nvmlInit = lambda: None
    module.nvmlShutdown = lambda: None
    module.nvmlDeviceGetCount = lambda: 2
    module.nvmlDeviceGetHandleByIndex = lambda i: f"gpu-{i}"
    module.nvmlDeviceGetUtilizationRates = lambda h: FakeNVML(gpu=75 if h == "gpu-1" else 10, memory=5)
    module.nvmlDeviceGetMemoryInfo = lambda h: FakeNVML(used=2 * 1024**3, total=80 * 1024**3, free=78 * 1024**3)
    module.nvmlDeviceGetPcieThroughput = lambda h, counter: 2048 if counter == 0 else 1024  # KB/s
    return module


def test_system_monitor_reads_gpus_through_nvml(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    emitted: list = []
    monitor = System(interval_s=10, price_per_device_hour=2.0)
    monitor.open(run_info(tmp_path, emitted, world_size=4))
    monitor.close()
    (sample,) = emitted  # the closing sample
    assert sample["gpu0_util_pct"] == 75  # CUDA_VISIBLE_DEVICES=1 is NVML's device 1
    assert "gpu1_util_pct" not in sample
    assert sample["gpu0_mem_used_mb"] == 2048 and sample["gpu0_mem_total_mb"] == 80 * 1024
    assert sample["gpu0_pcie_tx_mbps"] == 2.0 and sample["gpu0_pcie_rx_mbps"] == 1.0
    assert sample["devices"] == 4  # one GPU per process of the run
    assert sample["cost_usd"] == pytest.approx(2.0 * 4 * sample["elapsed_s"] / 3600)


# ------------------------------------------------------------------ console

def rich_console(buffer: io.StringIO):
    from rich.console import Console as RichConsole

    return RichConsole(file=buffer, force_terminal=False, width=200, color_system=None)


def test_console_prints_the_metrics_line_and_events(tmp_path):
    buffer = io.StringIO()
    monitor = Console(console=rich_console(buffer), line_every_s=3600)
    monitor.open(run_info(tmp_path))
    monitor.log({"event": "run", "status": "started"})
    monitor.log({"event": "stage", "stage": "clean.0", "name": "dedup", "status": "started"})
    monitor.log({"event": "stage", "stage": "clean.0", "name": "dedup", "status": "succeeded", "seconds": 1.25,
                 "summary": {"removed": 12}})
    for record in STEPS:
        monitor.log(record)
    monitor.log(EPOCH)
    monitor.log({"event": "latency", "latency_p50_ms": 1.5, "latency_p95_ms": 2.5})
    monitor.log({"event": "run", "status": "succeeded"})
    monitor.close()
    out = buffer.getvalue()
    assert "✓ [clean.0] dedup succeeded 1.25s  removed 12" in out
    assert "epoch 0 step 1 | loss 1.0000  lr 1.00e-02  grad_norm 2.5  samples_per_s 1,001" in out
    assert "step 2" not in out  # off a terminal, step lines are throttled
    assert "epoch 0  loss 0.5000  val_loss 0.4000  val_accuracy 0.9000" in out
    assert "inference  latency_p50_ms 1.5  latency_p95_ms 2.5" in out
    assert "run demo succeeded" in out


def test_console_quiet_prints_only_failures_and_the_end(tmp_path):
    buffer = io.StringIO()
    monitor = Console(console=rich_console(buffer), quiet=True)
    monitor.open(run_info(tmp_path))
    monitor.log({"event": "stage", "name": "impute", "status": "succeeded", "seconds": 0.1})
    monitor.log({"event": "stage", "name": "dedup", "status": "failed", "seconds": 0.2})
    monitor.log(STEPS[0])
    monitor.log(EPOCH)
    monitor.log({"event": "run", "status": "failed"})
    monitor.close()
    lines = buffer.getvalue().splitlines()
    assert lines == ["✗ dedup failed 0.20s", "run demo failed"]


def test_console_redraws_a_live_line_on_a_terminal(tmp_path):
    from rich.console import Console as RichConsole

    buffer = io.StringIO()
    terminal = RichConsole(file=buffer, force_terminal=True, width=200, color_system=None)
    monitor = Console(console=terminal, refresh_per_second=20)
    monitor.open(run_info(tmp_path))
    monitor.log(STEPS[2])
    time.sleep(0.3)
    monitor.close()
    assert "epoch 0 step 3 | loss 0.3333" in buffer.getvalue()


def test_prometheus_port_in_use_is_an_input_error(tmp_path):
    first = Prometheus(port=0)
    first.open(run_info(tmp_path))
    try:
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            Prometheus(port=first.port).open(run_info(tmp_path))
    finally:
        first.close()


def test_system_monitor_finishes_at_the_run_record_while_other_monitors_are_open(tmp_path):
    jsonl = Jsonl()
    monitors = [jsonl]

    def emit(record):
        for m in monitors:
            m.log(record)

    system = System(interval_s=0.02, price_per_device_hour=1.0, gpu=False)
    monitors.append(system)
    info = RunInfo(name="demo", dir=tmp_path, seed=0, pipeline={}, emit=emit)
    jsonl.open(info)
    system.open(info)
    time.sleep(0.1)
    emit({"event": "run", "status": "succeeded"})
    jsonl.close()  # the runner closes monitors in order: no sample may arrive after this
    time.sleep(0.1)
    system.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events[-2:] == ["run", "system"] and events.count("system") >= 3
    assert records[-1]["cost_usd"] > 0


@pytest.mark.parametrize("monitor, blocked", [(Tensorboard(), "torch.utils.tensorboard"),
                                              (Prometheus(port=0), "prometheus_client"), (System(), "psutil")],
                         ids=["tensorboard", "prometheus", "system"])
def test_missing_optional_package_is_an_input_error(tmp_path, monkeypatch, monitor, blocked):
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ImportError
    with pytest.raises(InputError, match=r"forgeline\[monitor\]"):
        monitor.open(run_info(tmp_path))
