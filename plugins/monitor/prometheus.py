"""``prometheus``: the run's latest metrics as gauges on a local ``/metrics`` endpoint."""

from __future__ import annotations

import re
from typing import Any, Mapping

from pydantic import Field

from forgeline.core import InputError, Monitor, Params, RunInfo

from .tensorboard import numeric_fields

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(field: str) -> str:
    """``forgeline_<field>`` with characters Prometheus does not allow replaced by ``_``."""
    return "forgeline_" + _INVALID.sub("_", field)


class Prometheus(Monitor):
    """Serves the latest value of every numeric metric as a gauge on 127.0.0.1 for Prometheus to scrape.

    Gauges are named ``forgeline_<field>`` with labels ``run`` (the run's name) and ``event``
    (step, epoch, system, ...), in a registry of their own. The bound port is in
    :attr:`port`, and announced once as a ``{"event": "monitor", "monitor": "prometheus",
    "port": ..., "url": ...}`` record in the run's metrics.
    """

    name = "prometheus"

    class Params(Params):
        port: int = Field(9464, ge=0, le=65535, description="TCP port on 127.0.0.1 (0 = any free port)")

    def open(self, run: RunInfo) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as e:
            raise InputError(f"prometheus: the monitor needs prometheus-client ({e}); "
                             f"pip install 'forgeline[monitor]'") from None

        self.run_name = run.name
        self.registry = CollectorRegistry(auto_describe=True)
        self._parents: dict[str, Any] = {}  # metric name -> Gauge
        self._gauges: dict[tuple[str, str], Any] = {}  # (field, event) -> the Gauge's labelled child
        # only on localhost: an existing Prometheus scrapes it; nothing is exposed to the network
        try:
            self._server, self._thread = start_http_server(self.params.port, addr="127.0.0.1",
                                                           registry=self.registry)
        except OSError as e:
            raise InputError(f"prometheus: cannot listen on 127.0.0.1:{self.params.port} ({e.strerror or e}); "
                             f"choose another port, or port: 0 for any free one") from None
        self.port: int = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        run.emit({"event": "monitor", "monitor": self.name, "port": self.port, "url": self.url})

    def _gauge(self, field: str, event: str) -> Any:
        """The gauge child for (field, event), created on first use and then looked up in one dict."""
        child = self._gauges.get((field, event))
        if child is None:
            from prometheus_client import Gauge

            name = metric_name(field)
            parent = self._parents.get(name)
            if parent is None:
                parent = self._parents[name] = Gauge(name, f"forgeline metric {field!r} (latest value)",
                                                     ["run", "event"], registry=self.registry)
            child = self._gauges[(field, event)] = parent.labels(run=self.run_name, event=event)
        return child

    def log(self, record: Mapping[str, Any]) -> None:
        event = str(record.get("event", "record"))
        if event == "monitor":  # announcements such as this monitor's own port
            return
        for field, value in numeric_fields(record, skip={"event", "time"}).items():
            self._gauge(field, event).set(value)

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(timeout=5)
            self._server = None
