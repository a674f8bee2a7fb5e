"""The hosts of a job as LSF tells them to it: LSB_HOSTS, LSB_MCPU_HOSTS, LSB_DJOB_NUMPROC,
LSB_MAX_NUM_PROCESSORS and, for a parallel job, LSB_DJOB_HOSTFILE (one line per slot).

The dispatch spec's `hosts` is [[host, slots], ...], the first being this host, where the job
starts."""

import os
from typing import Any


def variables(spec: dict[str, Any]) -> dict[str, str]:
    """The LSB_* variables that name the job's hosts and slots."""
    hosts = spec["hosts"]
    total = sum(n for _, n in hosts)
    return {
        "LSB_HOSTS": " ".join(" ".join([host] * n) for host, n in hosts),
        "LSB_MCPU_HOSTS": " ".join(f"{host} {n}" for host, n in hosts),
        "LSB_DJOB_NUMPROC": str(total),
        "LSB_MAX_NUM_PROCESSORS": str(spec.get("slots_max") or total),
    }


def write(path: str, hosts: list[list[Any]]) -> None:
    """The host file at `path` (new: nobody can have put a link there first), readable by the
    job's user: each host once per slot, as LSF's."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{host}\n" for host, n in hosts for _ in range(n))
