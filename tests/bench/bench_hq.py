#!/usr/bin/env python3
"""HyperQueue on the drain workload, for bench_drain.py --hq: N /bin/true tasks, one local
worker with SLOTS cores (hyperqueue's LocalCluster embeds the server and the worker).

Runs under a separate bench venv that has the `hyperqueue` package (never the product's):
    python3 -m venv /tmp/hqvenv && /tmp/hqvenv/bin/pip install hyperqueue
    /tmp/hqvenv/bin/python tests/bench/bench_hq.py 1000 16
Prints one JSON line: submit_s, drain_s (submit start to all finished), finished.
"""
import json
import sys
import tempfile
import time

from hyperqueue import Job, LocalCluster
from hyperqueue.cluster import WorkerConfig


def main():
    n, slots = int(sys.argv[1]), int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="hq-bench-") as d:
        with LocalCluster(server_dir=d, worker_config=WorkerConfig(cores=slots)) as cluster:
            client = cluster.client()
            job = Job()
            for _ in range(n):
                job.program(["/bin/true"], stdout=None, stderr=None)
            t0 = time.time()
            submitted = client.submit(job)
            t_submit = time.time() - t0
            ok = client.wait_for_jobs([submitted])
            drain = time.time() - t0
    print(json.dumps({"submit_s": t_submit, "drain_s": drain, "finished": n if ok else "failed"}))


if __name__ == "__main__":
    main()
