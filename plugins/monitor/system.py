"""``system``: CPU, memory and (through NVML) GPU samples from a background thread, plus a cost estimate."""

from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any, Mapping

from pydantic import Field

from forgeline.core import InputError, Monitor, Params, RunInfo

_MB = 1024 * 1024


class System(Monitor):
    """Samples CPU, memory and GPU use (NVML) every few seconds, with a cost estimate.

    Each sample is a ``{"event": "system", ...}`` record added to the run's metrics: system
    and process CPU %, process RSS, system memory (psutil); per GPU ``gpu<i>_util_pct``,
    ``gpu<i>_mem_used_mb``/``_mem_total_mb`` and ``gpu<i>_pcie_tx_mbps``/``_rx_mbps`` when
    NVML finds GPUs; ``cost_usd = price_per_device_hour * devices * elapsed hours`` when a
    price is given. Sampling stops with a last sample (the run's whole cost) when the run's
    ``{"event": "run", "status": "succeeded"|"failed"}`` record arrives, while every monitor is
    still open; or at ``close`` when no such record came.
    """

    name = "system"

    class Params(Params):
        interval_s: float = Field(5.0, ge=0.01, description="seconds between samples")
        price_per_device_hour: float = Field(0.0, ge=0, description="price of one device (GPU, or the machine "
                                             "on CPU) per hour, for the cost estimate (0 = no estimate)")
        devices: int | None = Field(None, ge=1, description="devices the cost counts (None: the run's "
                                    "processes when GPUs are in use, else 1)")
        gpu: bool = Field(True, description="sample GPUs through NVML when it finds any")

    def open(self, run: RunInfo) -> None:
        try:
            import psutil
        except ImportError as e:
            raise InputError(f"system: the monitor needs psutil ({e}); pip install 'forgeline[monitor]'") from None

        self.run = run
        self.process = psutil.Process()
        # psutil's CPU percentages are since the previous call: prime them so the first sample is real
        self.process.cpu_percent(interval=None)
        self.gpus = self._open_nvml() if self.params.gpu else []
        self.devices = self.params.devices or self._default_devices(run)
        self.started = time.monotonic()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="forgeline-system-monitor", daemon=True)
        self._thread.start()

    def _default_devices(self, run: RunInfo) -> int:
        train = (run.pipeline or {}).get("train") or {}
        on_cpu = isinstance(train, Mapping) and train.get("device") == "cpu"
        return max(1, run.world_size) if self.gpus and not on_cpu else 1

    def _open_nvml(self) -> list[Any]:
        """NVML handles of the GPUs this process may use (CUDA_VISIBLE_DEVICES), or [] without NVML."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no nvidia-ml-py, no driver, no GPU: a CPU run
            return []
        self._nvml = pynvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            if visible is None:
                return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            handles = []
            for ref in (v.strip() for v in visible.split(",") if v.strip()):
                handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(ref)) if ref.isdigit()
                               else pynvml.nvmlDeviceGetHandleByUUID(ref))
            return handles
        except pynvml.NVMLError as e:
            warnings.warn(f"system monitor: NVML found no usable GPU ({e}); sampling CPU and memory only",
                          stacklevel=2)
            return []

    def sample(self) -> dict[str, Any]:
        """One sample record (also what the background thread emits)."""
        import psutil

        elapsed = time.monotonic() - self.started
        memory = psutil.virtual_memory()
        record: dict[str, Any] = {
            "event": "system", "time": time.time(), "elapsed_s": elapsed,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "process_cpu_percent": self.process.cpu_percent(interval=None),
            "process_rss_mb": self.process.memory_info().rss / _MB,
            "memory_used_mb": (memory.total - memory.available) / _MB,
            "memory_percent": memory.percent,
        }
        if self.gpus:
            record.update(self._gpu_sample())
        if self.params.price_per_device_hour > 0:
            record["devices"] = self.devices
            record["cost_usd"] = self.params.price_per_device_hour * self.devices * elapsed / 3600.0
        return record

    def _gpu_sample(self) -> dict[str, float]:
        nvml = self._nvml
        out: dict[str, float] = {}
        for i, handle in enumerate(self.gpus):
            util = nvml.nvmlDeviceGetUtilizationRates(handle)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            out[f"gpu{i}_util_pct"] = float(util.gpu)
            out[f"gpu{i}_mem_used_mb"] = mem.used / _MB
            out[f"gpu{i}_mem_total_mb"] = mem.total / _MB
            # NVML reports PCIe throughput in KB/s over a short window
            out[f"gpu{i}_pcie_tx_mbps"] = nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES) / 1024
            out[f"gpu{i}_pcie_rx_mbps"] = nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES) / 1024
        return out

    def _emit_sample(self) -> bool:
        """Sample and emit; False when sampling cannot go on (the reason is warned once)."""
        try:
            record = self.sample()
        except Exception as e:
            if not self.gpus:
                warnings.warn(f"system monitor: sampling failed ({type(e).__name__}: {e}); sampling stops",
                              stacklevel=2)
                return False
            # a GPU that stops answering (e.g. reset) must not end the sampling of CPU and memory
            warnings.warn(f"system monitor: GPU sampling failed ({type(e).__name__}: {e}); GPU sampling stops",
                          stacklevel=2)
            self.gpus = []
            record = self.sample()
        self.run.emit(record)
        self.samples += 1
        return True

    def _loop(self) -> None:
        import psutil

        # the system-wide baseline is kept per thread by psutil, so it is primed here, not in open()
        psutil.cpu_percent(interval=None)
        try:
            while not self._stop.wait(self.params.interval_s):
                if not self._emit_sample():
                    return
            self._emit_sample()  # the final sample carries the run's whole cost
        except Exception as e:  # emitting failed downstream: the run goes on without samples
            warnings.warn(f"system monitor: emitting a sample failed ({type(e).__name__}: {e}); sampling stops",
                          stacklevel=2)

    def log(self, record: Mapping[str, Any]) -> None:
        """At the run's end, stop sampling and emit the last sample; other records are not used."""
        if record.get("event") == "run" and record.get("status") not in (None, "started"):
            self._finish()

    def _finish(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is None:
            return
        self._stop.set()  # the sampler takes its final sample, then ends
        thread.join()
        self._thread = None

    def close(self) -> None:
        self._finish()
        if getattr(self, "_nvml", None) is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
