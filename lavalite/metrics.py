"""Each daemon's HTTP endpoint: /metrics for Prometheus, /status as JSON.

Served by the daemon's own event loop (not prometheus_client's thread), so gauges are read
from the live in-memory indexes at scrape time without locks, and a job costs nothing beyond
the counter increments its role makes. Off when the role's metrics_port is 0.
"""
import asyncio
import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger("lavalite.metrics")

__all__ = ["Exporter", "CounterMetricFamily", "GaugeMetricFamily", "gauge"]


def gauge(name, doc, labels, values):
    """A gauge family from {label value or tuple: number} (labels=() for one plain value)."""
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else ([key] if labels else []),
                          value)
    return family


class Exporter:
    """collect() yields the metric families computed at scrape time; status() returns the
    /status dict. `registry` also takes the role's own prometheus_client metrics (histograms)."""

    def __init__(self, collect, status):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.registry.register(self)
        self._collect, self.status = collect, status

    def collect(self):
        return self._collect()

    async def serve(self, address, port):
        """Listen when port > 0; returns the server (to close) or None."""
        if not port:
            return None
        server = await asyncio.start_server(self._handle, address, port, reuse_address=True)
        log.info("metrics on http://%s:%d/metrics, status on /status", address, port)
        return server

    async def _handle(self, reader, writer):
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass                                   # headers: nothing we need
            parts = request.split()
            path = parts[1].split(b"?")[0] if len(parts) > 1 else b""
            if parts[:1] != [b"GET"]:
                code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == b"/metrics":
                code, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path == b"/status":
                code, ctype = "200 OK", "application/json"
                body = json.dumps(self.status()).encode() + b"\n"
            else:
                code, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /status\n"
            writer.write(f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

