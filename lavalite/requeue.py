"""brequeue's choice of jobs by state, shared by the command (its selection with -J, -u) and
mbatchd (which checks each job again): -r running (any started, unfinished state), -p
pending (PEND, PSUSP), -d DONE, -e EXIT (FAILED or KILLED in the model); -a all of them."""

from collections.abc import Callable

from lavalite.model import DONE, FAILED, FINISHED, KILLED, WAITING

KINDS: dict[str, Callable[[str], bool]] = {
    "run": lambda state: state not in WAITING and state not in FINISHED,
    "pend": lambda state: state in WAITING,
    "done": lambda state: state == DONE,
    "exit": lambda state: state in (FAILED, KILLED),
}


def states_test(kinds: object) -> Callable[[str], bool]:
    """The test of a job's state that `kinds` (a list of KINDS' names) make, or ValueError."""
    if not isinstance(kinds, list) or not kinds or not set(kinds) <= set(KINDS):
        raise ValueError(f"kinds must list some of {', '.join(KINDS)}")
    tests = [KINDS[k] for k in kinds]
    return lambda state: any(test(state) for test in tests)
