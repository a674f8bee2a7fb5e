"""sbatchd's report spool: START/EXIT reports kept until mbatchd acknowledges them.

An append-only file of JSON lines (a report, or an ack listing report ids), compacted at start
and whenever it grows past what is still unacknowledged. No fsync: a report is lost only with
the machine, and then its job is lost too. Lines are written once per loop turn (`flush`,
before the turn's reports are sent), in one system call.
"""

import os

import orjson

COMPACT_AT = 4096  # lines written since the last compaction


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self.unacked: dict[int, dict] = {}  # rid -> report, in rid order
        self.next_rid = 1
        if os.path.exists(path):
            with open(path, "rb") as f:
                for line in f:
                    try:
                        rec = orjson.loads(line)
                    except ValueError:  # a line torn by a crash mid-write
                        continue
                    if "ack" in rec:
                        for rid in rec["ack"]:
                            self.unacked.pop(rid, None)
                    else:
                        self.unacked[rec["rid"]] = rec
                        self.next_rid = max(self.next_rid, rec["rid"] + 1)
        self._compact()

    def _compact(self):
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(orjson.dumps(rep) + b"\n" for rep in self.unacked.values()))
        os.replace(tmp, self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.buf = bytearray()
        self.lines = len(self.unacked)

    def add(self, report: dict) -> dict:
        report["rid"] = self.next_rid
        self.next_rid += 1
        self.unacked[report["rid"]] = report
        self._write(report)
        return report

    def ack(self, rids: list[int]) -> None:
        rids = [r for r in rids if self.unacked.pop(r, None) is not None]
        if rids:
            self._write({"ack": rids})
        self.flush()
        if self.lines > COMPACT_AT and self.lines > 4 * len(self.unacked):
            os.close(self.fd)
            self._compact()

    def _write(self, rec):
        self.buf += orjson.dumps(rec)
        self.buf += b"\n"
        self.lines += 1

    def flush(self) -> None:
        while self.buf:
            del self.buf[: os.write(self.fd, self.buf)]

    def pending(self) -> list:  # JobReports, as the core made them
        return list(self.unacked.values())
