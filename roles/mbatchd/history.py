"""bhist and bacct in mbatchd: the `history` op, answered from the store, and the
history_days retention.

The store is mbatchd's own connection, locked for its life by default (store_lock =
exclusive): the op is then answered between turns, from indexed queries (a job's events, a
user's jobs) that take milliseconds; bacct's summary over every finished job is one pass,
a second or two per million jobs. With store_lock = shared, a worker thread answers on a
read-only connection of its own (WAL: it never waits for the loop's commits, nor they for
it), so even that pass leaves the loop free.
"""

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lavalite import messages
from lavalite import protocol as P
from lavalite.config import Config
from lavalite.daemon import sleep_or_stop
from lavalite.peer import Peer
from store import Store, StoreError
from store.history import PRUNE_BATCH, Filter, Queries, Reader

log = logging.getLogger("lavalite.mbatchd")

MAX_JOBS = 20_000  # jobs in one answer: a frame stays far below protocol.MAX_FRAME
PRUNE_EVERY = 60.0  # seconds between two looks for jobs older than history_days
PRUNE_PAUSE = 0.05  # seconds between two batches of a long prune: turns run between them


class History:
    def __init__(self, store: Store, conf: Config) -> None:
        self.store = store
        self.conf = conf
        shared = conf.mbatchd.store_lock == "shared"
        self.pool = ThreadPoolExecutor(1, "history") if shared else None
        self.local = threading.local()  # the worker thread's Reader

    def op_history(self, peer: Peer, msg: messages.History, now: float) -> dict[str, Any] | None:
        """Jobs (with their events, or bacct's summary) as `request` asks: at once from
        mbatchd's connection, or later from the worker thread's."""
        request = parse_request(peer.identity, msg)
        if self.pool is None:
            return answer(self.store, *request)
        future = asyncio.get_running_loop().run_in_executor(self.pool, self._read, request)
        future.add_done_callback(lambda f: peer.send(_reply(msg.get("id"), f)))
        return None

    def _read(self, request: tuple) -> dict[str, Any]:
        reader = getattr(self.local, "reader", None)
        if reader is None:
            reader = self.local.reader = Reader(self.conf.mbatchd.database)
        return answer(reader, *request)

    async def prune(self, stop: asyncio.Event) -> None:
        """history_days: remove what ended before it, a batch per transaction with a pause
        between batches, so a turn never waits behind more than one small batch. Never what
        is still in memory (clean_period)."""
        while not stop.is_set():
            days = self.conf.mbatchd.history_days
            if days:
                before = time.time() - max(days * 86400.0, self.conf.mbatchd.clean_period)
                try:
                    while self.store.prune(before) >= PRUNE_BATCH and not stop.is_set():
                        await asyncio.sleep(PRUNE_PAUSE)
                except StoreError as exc:  # a full disk, say: tried again next time
                    log.warning("history_days: %s", exc)
            await sleep_or_stop(stop, PRUNE_EVERY)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _reply(req_id: Any, future: "asyncio.Future[dict[str, Any]]") -> dict[str, Any]:
    exc = future.exception()
    if exc is None:
        return P.reply(req_id, **future.result())
    log.warning("history query failed: %s", exc)
    return P.error(req_id, P.UNAVAILABLE, f"cannot read the job history: {exc}")


def parse_request(ident: dict[str, Any], msg: messages.History) -> tuple[Filter, int, bool, bool]:
    """(filter, limit, summary, events) of a `history` request. Without job ids or users, the
    caller's own jobs (as LSF); "all" among the users: everyone's."""
    ids = P.require(msg, "ids", list, optional=True)
    if ids is not None and not all(type(i) is int and i > 0 for i in ids):
        raise P.ProtocolError(P.BAD_REQUEST, "field 'ids' of 'history' must list job ids")
    users = P.require(msg, "users", list, optional=True)
    if users is not None and not all(isinstance(u, str) and u for u in users):
        raise P.ProtocolError(P.BAD_REQUEST, "field 'users' of 'history' must list user names")
    if users is None and ids is None:
        users = [ident["user"]]
    ended = P.require(msg, "ended", list, optional=True)
    if ended is not None and (
        len(ended) != 2 or not all(isinstance(t, (int, float)) for t in ended)
    ):
        raise P.ProtocolError(P.BAD_REQUEST, "field 'ended' of 'history' must be [time0, time1]")
    finished = msg.get("finished")
    if finished not in (None, True, False):
        raise P.ProtocolError(P.BAD_REQUEST, "field 'finished' of 'history' must be a boolean")
    limit = P.require(msg, "limit", int, optional=True)
    flt = Filter(
        users=None if users is None or "all" in users else users,
        queue=P.require(msg, "queue", str, optional=True),
        project=P.require(msg, "project", str, optional=True),
        ids=ids,
        ended=(float(ended[0]), float(ended[1])) if ended else None,
        finished=finished,
    )
    limit = MAX_JOBS if limit is None else max(0, min(limit, MAX_JOBS))  # 0: the summary alone
    return flt, limit, bool(msg.get("summary")), bool(msg.get("events"))


def answer(db: Queries, flt: Filter, limit: int, summary: bool, events: bool) -> dict[str, Any]:
    """The reply's fields: up to `limit` jobs ("more": whether others matched), each with its
    events if asked, and bacct's summary if asked."""
    jobs = db.history_jobs(flt, limit + 1, runs=summary) if limit else []  # bacct: every run
    out: dict[str, Any] = {"jobs": jobs[:limit], "more": len(jobs) > limit > 0}
    if events:
        found = db.history_events([j["id"] for j in out["jobs"]])
        for job in out["jobs"]:
            job["events"] = found[job["id"]]
    if summary:
        out["summary"] = db.acct_summary(flt)
    return out
