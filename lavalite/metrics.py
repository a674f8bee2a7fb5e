"""Each daemon's HTTP endpoint: /metrics for Prometheus, /status as JSON.

Served by the daemon's own event loop (not prometheus_client's thread), so gauges are read
from the live in-memory indexes at scrape time without locks, and a job costs nothing beyond
the counter increments its role makes. Off when the role's metrics_port is 0, and then
prometheus_client is never imported (50 ms and 5 MB of every daemon's start-up) and a
histogram's observe does nothing.
"""

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from lavalite.log import Throttled, address

log = logging.getLogger("lavalite.metrics")

HEAD_TIME = 10.0  # seconds a client has to send its whole request head
MAX_HEADERS = 100
_LINE_LIMIT = 64 << 10  # the longest request or header line
_END = (b"\r\n", b"\n", b"")  # the empty line that ends a request head, or the end of input

__all__ = ["Exporter", "counter", "gauge"]


def gauge(name: str, doc: str, labels: Iterable[str], values: dict) -> Any:
    """A gauge family from {label value or tuple: number} (labels=() for one plain value).
    Called at scrape time only."""
    from prometheus_client.core import GaugeMetricFamily

    return _family(GaugeMetricFamily, name, doc, labels, values)


def counter(name: str, doc: str, labels: Iterable[str], values: dict) -> Any:
    """A counter family, as `gauge`."""
    from prometheus_client.core import CounterMetricFamily

    return _family(CounterMetricFamily, name, doc, labels, values)


def _family(kind: Any, name: str, doc: str, labels: Iterable[str], values: dict) -> Any:
    family = kind(name, doc, labels=list(labels))
    for key, value in values.items():
        family.add_metric(list(key) if isinstance(key, tuple) else ([key] if labels else []), value)
    return family


class _Unobserved:
    """A histogram while metrics are off."""

    def observe(self, value: float) -> None:
        pass


class Exporter:
    """collect() yields the metric families computed at scrape time; status() returns the
    /status dict; port: the role's metrics_port (0: off)."""

    def __init__(
        self, collect: Callable[[], Iterable[Any]], status: Callable[[], dict], port: int
    ) -> None:
        self._collect, self.status, self.port = collect, status, port
        self.warn = Throttled(log)
        self.registry: Any = None
        if port:
            from prometheus_client import CollectorRegistry
            from prometheus_client.process_collector import ProcessCollector

            self.registry = CollectorRegistry()
            ProcessCollector(registry=self.registry)
            self.registry.register(self)

    def histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Any:
        """The role's own histogram in this registry; one that keeps nothing while off."""
        if self.registry is None:
            return _Unobserved()
        from prometheus_client import Histogram

        return Histogram(name, doc, buckets=buckets, registry=self.registry)

    def collect(self) -> Iterable[Any]:
        return self._collect()

    async def serve(self, address: str) -> asyncio.Server | None:
        """Listen when the port is set; returns the server (to close) or None."""
        if not self.port:
            return None
        server = await asyncio.start_server(
            self._handle, address, self.port, reuse_address=True, limit=_LINE_LIMIT
        )
        log.info("metrics on http://%s:%d/metrics, status on /status", address, self.port)
        return server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_request_line(reader), HEAD_TIME)
            parts = request.split()
            path = parts[1].split(b"?")[0] if len(parts) > 1 else b""
            if parts[:1] != [b"GET"]:
                code, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == b"/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                code, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
            elif path == b"/status":
                code, ctype = "200 OK", "application/json"
                body = json.dumps(self.status()).encode() + b"\n"
            else:
                code, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /status\n"
        except _TooLarge as exc:
            self.warn.warning(
                "metrics: request from %s refused: %s",
                address(writer.get_extra_info("peername")),
                exc,
            )
            code, ctype, body = "431 Request Header Fields Too Large", "text/plain", b"too large\n"
        except (TimeoutError, ConnectionError):
            writer.close()
            return
        try:
            writer.write(
                f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class _TooLarge(Exception):
    """A request head over the limits; the message says which."""


async def _request_line(reader: asyncio.StreamReader) -> bytes:
    """The request line, once the whole head is read (the headers say nothing we need).
    A line over _LINE_LIMIT or more than MAX_HEADERS headers is refused."""
    request = await _line(reader)
    if request in _END:
        return request
    for _ in range(MAX_HEADERS + 1):  # the headers, then the empty line
        if await _line(reader) in _END:
            return request
    raise _TooLarge(f"more than {MAX_HEADERS} header lines")


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readline()
    except ValueError:  # what readline makes of a line over the limit
        raise _TooLarge(f"a line over {_LINE_LIMIT >> 10} KiB") from None
