"""How an attempt's ending reads: one rule for mbatchd, which decides what follows it, and for
sbatchd's shepherd, which appends to -o/-e files the output of the attempt that ends the job
only, so it must know, when the attempt ends, whether mbatchd will try the job again."""

import signal

from lavalite.model import CPULIMIT, EXIT, RETRYABLE, SIGNAL

# A job with -c dies of SIGXCPU at its soft limit, of SIGKILL at its hard limit.
_CPU_SIGNALS = frozenset((signal.SIGXCPU, signal.SIGKILL))


def reason(spec: dict, why: str, code: int | None, sig: int | None) -> str:
    """The ending as mbatchd records it: the worker's reason, else CPULIMIT for a job with -c
    killed by its CPU limit's signals, else SIGNAL or EXIT; "" for a success."""
    if why:
        return why
    if sig is not None:
        return CPULIMIT if "cpu_limit" in spec and sig in _CPU_SIGNALS else SIGNAL
    return "" if code == 0 else EXIT


def retried(why: str, attempt: int, max_attempts: int) -> bool:
    """Whether a failed attempt with this reason is tried again (a kill aside)."""
    return why in RETRYABLE and attempt < max_attempts
