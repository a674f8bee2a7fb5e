"""What mbatchd tells the outside about its turns: one log line per job state change (to the
daemon's log target: stderr, syslog or file; the lines of LOG_GATHER's worth of turns in one
record where the target allows), the Prometheus counters, and the gauges and /status
computed at scrape time from the core's live counters (nothing per job is kept)."""

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from lavalite.limits import format_size
from lavalite.log import lines
from lavalite.metrics import Exporter, counter, gauge
from lavalite.model import FAILED, HOST_OK, PEND, RUN, STARTED, SUSPENDED, Event

if TYPE_CHECKING:
    from roles.mbatchd.core import Core

log = logging.getLogger("lavalite.mbatchd")

# milliseconds from eligible (submitted, or its retry backoff over) to dispatched
LATENCY_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)
# mbatchd -> LIM load requests: the heartbeat between the two that exists today
POLL_BUCKETS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000, 5000)
# Job lines wait this long (seconds) for the next turns' to go out with them: a record costs
# ~30 us, and one submission at a time makes a turn, hence a record, per state change.
LOG_GATHER = 0.05


class Observer:
    def __init__(self, core: "Core", host: str, metrics_port: int) -> None:
        self.core, self.host = core, host
        self.submitted = 0
        self.started: dict[tuple[str, str], int] = {}  # (queue, user) -> jobs dispatched
        self.failed: dict[str, int] = {}  # reason -> jobs ended FAILED
        self.retried: dict[str, int] = {}  # queue -> failed attempts sent back to PEND
        self.lim_polls_failed = 0
        self.disk_free: int | None = None  # bytes free on the store's filesystem, last look
        self.disk_low = False  # under disk_warn_free at the last look
        self.texts: list[str] = []  # job lines not logged yet
        self.flusher: asyncio.TimerHandle | None = None  # the timer that logs them
        self.exporter = Exporter(self.families, self.status, metrics_port)
        self.latency = self.exporter.histogram(
            "lavalite_dispatch_latency_ms",
            "From eligible (submit or backoff end) to dispatch, in ms",
            LATENCY_BUCKETS,
        )
        self.lim_poll = self.exporter.histogram(
            "lavalite_lim_poll_latency_ms",
            "Round trip of mbatchd's load request to its LIM, in ms",
            POLL_BUCKETS,
        )

    def events(self, events: list[Event]) -> None:
        """After the turn's commit: count each state change and log it (a line each, gathered
        LOG_GATHER, so the lines are stamped up to that much after the change)."""
        jobs = self.core.jobs
        texts = self.texts if log.isEnabledFor(logging.INFO) else None
        for ev in events:
            job = jobs.get(ev.job_id)
            queue, user = (job.queue, job.user) if job else ("-", "-")
            if texts is not None:
                texts.append(
                    f"job {ev.job_id} user={user} queue={queue} host={ev.host or '-'} "
                    f"{ev.old or '-'} -> {ev.new}" + (f" reason={ev.reason}" if ev.reason else "")
                )
            if ev.old == ev.new:  # bmod's event: parameters changed, not the state
                continue
            if ev.old is None:
                self.submitted += 1
            elif ev.new == RUN and ev.old not in SUSPENDED:  # started, not resumed
                self.started[queue, user] = self.started.get((queue, user), 0) + 1
                if job is not None:
                    self.latency.observe(max(0.0, ev.time - job.eligible_time) * 1000)
            elif ev.new == FAILED:
                self.failed[ev.reason] = self.failed.get(ev.reason, 0) + 1
            elif ev.new == PEND and ev.old in STARTED:
                self.retried[queue] = self.retried.get(queue, 0) + 1
        if self.texts and self.flusher is None:
            self.flusher = asyncio.get_running_loop().call_later(LOG_GATHER, self.flush)

    def flush(self) -> None:
        """Log the job lines gathered so far (mbatchd calls it last as it stops)."""
        if self.flusher is not None:
            self.flusher.cancel()
            self.flusher = None
        texts, self.texts = self.texts, []
        lines(log, logging.INFO, texts)

    def disk_space(self, path: str, free: int, warn_below: int) -> None:
        """A look at the store's free space: a warning as it drops under `warn_below` (0:
        never) and a line when it is back above, not one per look."""
        self.disk_free = free
        low = free < warn_below
        if low != self.disk_low:
            self.disk_low = low
            if low:
                log.warning(
                    "low disk space on %s: %d MB free, under disk_warn_free (%s); "
                    "submits are refused once it is full",
                    path,
                    free >> 20,
                    format_size(warn_below),
                )
            else:
                log.info("disk space on %s: %d MB free again", path, free >> 20)

    def host_changed(self, name: str, old: str | None, why: str) -> None:
        """One line per host state change (or re-registration), as for jobs; a warning when
        the host stops taking jobs."""
        new = self.core.hosts[name].status
        log.log(
            logging.INFO if new == HOST_OK else logging.WARNING,
            "host %s %s -> %s (%s)",
            name,
            old or "-",
            new,
            why,
        )

    def families(self) -> list[Any]:
        core = self.core
        return [
            counter("lavalite_jobs_submitted", "Jobs accepted", (), {(): self.submitted}),
            counter(
                "lavalite_jobs_started",
                "Jobs dispatched to a host",
                ("queue", "user"),
                self.started,
            ),
            counter("lavalite_jobs_failed", "Jobs that ended FAILED", ("reason",), self.failed),
            counter(
                "lavalite_attempts_retried",
                "Failed attempts sent back to PEND for a retry",
                ("queue",),
                self.retried,
            ),
            counter(
                "lavalite_lim_poll_failures",
                "Load requests to the local LIM that failed or timed out",
                (),
                {(): self.lim_polls_failed},
            ),
            gauge(
                "lavalite_queue_depth",
                "Pending jobs",
                ["queue"],
                {q: core.npend.get(q, 0) for q in core.queues},
            ),
            gauge(
                "lavalite_queue_running_slots",
                "Slots used by running jobs",
                ["queue"],
                {q: view.running for q, view in core.queues.items()},
            ),
            gauge(
                "lavalite_host_free_slots",
                "Free job slots (0 unless the host is ok)",
                ["host"],
                {h.name: h.free for h in core.hosts.values()},
            ),
            gauge(
                "lavalite_host_up",
                "1 if the host's sbatchd is registered and ok",
                ["host"],
                {h.name: int(h.status == HOST_OK) for h in core.hosts.values()},
            ),
            gauge(
                "lavalite_store_free_bytes",
                "Bytes free on the filesystem of mbatchd's database",
                (),
                {(): self.disk_free} if self.disk_free is not None else {},
            ),
            gauge(
                "lavalite_jobs_in_memory",
                "Jobs mbatchd holds (live and recently finished)",
                (),
                {(): len(core.jobs)},
            ),
        ]

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "mbatchd": "running",
            "host": self.host,
            "pid": os.getpid(),
            "pending": sum(core.npend.values()),
            "running": sum(len(jobs) for jobs in core.host_jobs.values()),
            "hosts": {h.name: h.status for h in core.hosts.values()},
            "queues": list(core.qconf),
            "next_job_id": core.next_id,
        }
