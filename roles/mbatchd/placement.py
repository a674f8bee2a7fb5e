"""mbatchd's side of -R, -m, -x and -n MIN,MAX: the submit-time check (the CLI is not trusted)
and a placed job's hold on its hosts (slots, reserved memory, exclusive use).

A job's hosts are `job.hosts` ([[host, slots], ...], first = where it starts) when it was placed
on several hosts or given other than its minimum slots; else its one `job.host` with job.slots.
"""

from collections.abc import Iterable
from typing import Any

from lavalite import jobspec
from lavalite import protocol as P
from lavalite.model import Host, Job
from lavalite.resreq import ResReqError, parse, parse_hosts


def check_needs(
    spec: dict[str, Any], slots: int, hosts: dict[str, Host], max_slots: int, all_slots: int
) -> dict[str, Any] | None:
    """The stored fields of a submitted spec's -R (resreq), -m (asked_hosts), -x (exclusive)
    and -n MIN,MAX (slots_max), each checked; None for a job that has none (the common case,
    checked in a few lookups). `slots` is -n (MIN); max_slots: the largest host's slots,
    all_slots: every host's (0: no host known yet)."""
    if (
        "resreq" not in spec
        and "asked_hosts" not in spec
        and "exclusive" not in spec
        and "slots_max" not in spec
    ):
        if all_slots and slots > all_slots:
            raise P.ProtocolError(
                P.BAD_REQUEST, f"slots (-n) {slots}: the hosts have in all {all_slots} slots"
            )
        return None
    out: dict[str, Any] = {}
    one_host = False
    text = spec.get("resreq")
    if text is not None:
        try:
            one_host = parse(jobspec.text("resreq (-R)", text, jobspec.MAX_PATH)).span_hosts == 1
        except (ResReqError, jobspec.SpecError) as exc:
            raise P.ProtocolError(P.BAD_REQUEST, f"-R: {exc}") from None
        out["resreq"] = text.strip()
    asked = spec.get("asked_hosts")
    if asked is not None:
        out["asked_hosts"] = _asked(asked, hosts)
    if spec.get("exclusive"):
        out["exclusive"] = True
    top = spec.get("slots_max")
    if top is not None:
        top = jobspec.integer(f"slots_max (-n {slots},MAX)", top, slots, jobspec.MAX_SLOTS)
    bound, where = (
        (max_slots, "the largest host has") if one_host else (all_slots, "the hosts have in all")
    )
    if bound and slots > bound:  # as LSF refuses a job no host (no cluster) can run
        raise P.ProtocolError(P.BAD_REQUEST, f"slots (-n) {slots}: {where} {bound} slots")
    if top is not None and bound:  # -n MIN,MAX: at most what the hosts could give
        top = min(top, bound)
    if top is not None and top > slots:
        out["slots_max"] = top
    return out


def _asked(asked: object, hosts: dict[str, Host]) -> dict[str, int]:
    """-m: a string (as the CLI sends) or {host: preference}; every host known (LSF: "Bad host
    name, host group name or cluster name")."""
    try:
        wanted = parse_hosts(asked) if isinstance(asked, str) else asked
    except ResReqError as exc:
        raise P.ProtocolError(P.BAD_REQUEST, str(exc)) from None
    if not isinstance(wanted, dict) or not all(
        isinstance(h, str) and type(n) is int for h, n in wanted.items()
    ):
        raise P.ProtocolError(P.BAD_REQUEST, "asked_hosts (-m) must be a host list")
    for name in wanted:
        if name not in hosts:
            raise P.ProtocolError(
                P.BAD_REQUEST,
                f"{name}: Bad host name, host group name or cluster name (-m). Job not submitted.",
            )
    return wanted


def allocation(job: Job) -> list[list[Any]]:
    """[[host, slots], ...] of a placed job."""
    return job.hosts or [[job.host, job.slots]]


def hold(
    job: Job, hosts: dict[str, Host], host_jobs: dict[str, set[int]], sign: int
) -> Iterable[Host]:
    """Take (+1) or give back (-1) what a placed job holds on each of its hosts: slots, the
    memory its rusage[mem] reserves per slot, exclusive use. Returns the hosts changed."""
    needs = job.needs
    mem = needs.req.mem if needs is not None and needs.req is not None else 0
    exclusive = needs is not None and needs.exclusive
    changed = []
    for name, n in allocation(job):
        host = hosts.get(name)
        if host is None:  # a job adopted from the store on a host not registered yet
            host = hosts[name] = Host(name)
            host_jobs[name] = set()
        host.used += sign * n
        host.reserved += sign * mem * n
        host.exclusive += sign * exclusive
        if sign > 0:
            host_jobs[name].add(job.id)
        else:
            host_jobs[name].discard(job.id)
        changed.append(host)
    return changed


def memory_limit(job: Job, slots_here: int) -> int | None:
    """rusage[mem] is the job's memory limit where it starts when it has no -M (LSF):
    the memory reserved for its slots there."""
    needs = job.needs
    if needs is None or needs.req is None or not needs.req.mem:
        return None
    return needs.req.mem * slots_here


def unplace(job: Job) -> None:
    """A job back to PEND holds no host; -n MIN,MAX asks its range again."""
    job.host = job.hosts = None
    if job.needs is not None:
        job.slots = job.needs.slots_min


def part_of(job: Job, slots_here: int) -> dict[str, Any]:
    """What a host of the job other than its first needs to run blaunch's tasks there in a
    group of their own: whom they run as, and the limits of the job's slots there ([memory,
    pids, CPUs], as the first host's attempt has for its own)."""
    memory = job.spec.get("memory")
    if memory is None:
        memory = memory_limit(job, slots_here)
    return {"user": job.user, "uid": job.uid, "limits": [memory, job.spec.get("pids"), slots_here]}
