"""A queue's load thresholds (queues.conf `load_sched`, `load_stop`: LSF's loadSched and
loadStop): "r15s=2.0 ut=0.9 mem=512M" parsed into the tests the scheduler (load_sched) and
mbatchd (load_stop) apply to a host's facts (lavalite.resreq.host_facts, LSF's units).

Pure and cheap: the CLI's config-check imports it. A threshold is a plain tuple, so that the
scheduler (which imports no more of lavalite than the model) reads it as it is.
"""

from lavalite.limits import parse_size

MB = 1 << 20
# index -> (a larger value is the busier host, what LSF calls it)
INDICES: dict[str, tuple[bool, str]] = {
    "r15s": (True, "15-second CPU run queue length"),
    "r1m": (True, "1-minute CPU run queue length"),
    "r15m": (True, "15-minute CPU run queue length"),
    "ut": (True, "CPU utilization"),
    "pg": (True, "paging rate"),
    "ls": (True, "number of login sessions"),
    "it": (False, "idle time"),
    "mem": (False, "available memory"),
    "swp": (False, "available swap space"),
    "tmp": (False, "available /tmp space"),
}
_SIZES = frozenset(("mem", "swp", "tmp"))  # MB, or with a unit (512M, 2G)

# (index, limit in the facts' unit, larger is busier, the reason a job is held by it)
Threshold = tuple[str, float, bool, str]


def reason(index: str) -> str:
    """LSF's words for a host whose `index` is past a queue's threshold (bjobs -p, -s)."""
    busier_up, what = INDICES[index]
    return f"The {what} ({index}) is {'beyond' if busier_up else 'below'} threshold"


def parse(text: str) -> tuple[Threshold, ...]:
    """The text "r15s=2.0 ut=0.9 mem=512M" as thresholds in the order given; ValueError names the
    word that is wrong. ut takes 0.9 or 90%; mem, swp and tmp take MB or a size."""
    out: dict[str, Threshold] = {}
    for word in text.replace(",", " ").split():
        index, eq, raw = word.partition("=")
        if index not in INDICES:
            known = " ".join(INDICES)
            raise ValueError(f"{word!r}: unknown load index {index!r} (one of {known})")
        if not eq or not raw:
            raise ValueError(f"{word!r}: expected INDEX=VALUE, such as {index}=1.5")
        if index in out:
            raise ValueError(f"{word!r}: {index} given twice")
        out[index] = (index, _value(index, raw), INDICES[index][0], reason(index))
    return tuple(out.values())


def _value(index: str, raw: str) -> float:
    if index in _SIZES:
        try:
            return parse_size(raw) / MB
        except ValueError:
            raise ValueError(f"{index}={raw}: expected a size such as 512 (MB), 2G") from None
    try:
        value = float(raw[:-1]) / 100 if index == "ut" and raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"{index}={raw}: expected a number") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{index}={raw}: expected a number >= 0")
    return value


def looser(stop: tuple[Threshold, ...], sched: tuple[Threshold, ...]) -> str | None:
    """The first index of load_stop that load_sched does not hold at the same load or less
    (absent, or past load_stop's), or None. A job stopped past load_stop resumes within
    load_sched: without that gap between them it would flap."""
    sched_limits = {index: limit for index, limit, _, _ in sched}
    for index, limit, busier_up, _ in stop:
        at = sched_limits.get(index)
        if at is None or (at > limit if busier_up else at < limit):
            return index
    return None
