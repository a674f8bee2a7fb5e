"""sbatchd's report spool: START/EXIT reports kept until mbatchd acknowledges them.

An append-only file of JSON lines (a report, or an ack listing report ids), compacted at start
and whenever it grows past what is still unacknowledged. No fsync: a report is lost only with
the machine, and then its job is lost too.
"""
import json
import os

COMPACT_AT = 4096          # lines written since the last compaction


class Journal:
    def __init__(self, path):
        self.path = path
        self.unacked = {}          # rid -> report, in rid order
        self.next_rid = 1
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:     # a line torn by a crash mid-write
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
        with open(tmp, "w") as f:
            for rep in self.unacked.values():
                f.write(json.dumps(rep) + "\n")
        os.replace(tmp, self.path)
        self.file = open(self.path, "a", buffering=1)
        self.lines = len(self.unacked)

    def add(self, report):
        report["rid"] = self.next_rid
        self.next_rid += 1
        self.unacked[report["rid"]] = report
        self._write(report)
        return report

    def ack(self, rids):
        rids = [r for r in rids if self.unacked.pop(r, None) is not None]
        if rids:
            self._write({"ack": rids})
        if self.lines > COMPACT_AT and self.lines > 4 * len(self.unacked):
            self.file.close()
            self._compact()

    def _write(self, rec):
        self.file.write(json.dumps(rec) + "\n")
        self.lines += 1

    def pending(self):
        return list(self.unacked.values())
