"""`lavalite simulate`: the options; the engine (asyncio) is imported only when it runs, so
registering the command costs the other commands nothing."""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace


def _setup(p: "ArgumentParser") -> None:
    p.add_argument("--hosts", type=int, default=100, help="virtual hosts (default 100)")
    p.add_argument("--slots", type=int, default=8, help="slots per host (default 8)")
    p.add_argument("--jobs", type=int, default=10_000, help="jobs to queue (default 10,000)")
    p.add_argument(
        "--array-share",
        type=float,
        default=0.9,
        help="share of the jobs submitted as arrays (default 0.9)",
    )
    p.add_argument(
        "--array-size",
        type=int,
        default=10_000,
        help="largest array; sizes are drawn up to it (default 10,000)",
    )
    p.add_argument("--users", type=int, default=4, help="submitting users (default 4)")
    p.add_argument(
        "--duration",
        default="1-60",
        metavar="MIN-MAX",
        help="simulated job run time in seconds, uniform (default 1-60)",
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)"
    )
    p.add_argument(
        "--queues",
        metavar="QUEUES_CONF",
        help="a queues.conf to test (default: three queues of different priority); "
        "jobs are spread over its queues",
    )
    p.add_argument(
        "--state-dir",
        help="keep the simulated cluster's state here (default: a "
        "temporary directory, removed afterwards)",
    )
    p.add_argument("--seed", type=int, default=1, help="workload random seed (default 1)")
    p.add_argument(
        "--fairshare",
        action="store_true",
        help="one queue with fairshare (user1 2 shares, user2 1, every other user 1), every "
        "user the same jobs; run one simulated hour, then the same without fairshare, and "
        "print user1's and user2's slot time and the two runs' figures side by side",
    )
    p.add_argument(
        "--reserve",
        type=float,
        default=0,
        metavar="SECONDS",
        help="one wide job (--wide slots) queued behind a flood of narrow jobs with run "
        "limits; three runs (slot_reserve = MAX_RESERVE_TIME[SECONDS] with backfill, without, "
        "neither) print the wide job's wait and the slot utilisation",
    )
    p.add_argument(
        "--wide", type=int, default=16, help="--reserve: the wide job's slots (default 16)"
    )
    p.add_argument(
        "--preempt",
        action="store_true",
        help="the default queues with the highest preemptive, then the same without "
        "preemption; print the first run's figures and its cost as ratios to the second's",
    )
    p.add_argument(
        "--placement",
        choices=("pack", "spread"),
        help="run the workload with every queue's placement first (the default), then with "
        "this one, and print the second run's cost as ratios to the first",
    )
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args: "Namespace") -> int:
    from roles.cli import simulator

    return simulator.main(args)


COMMANDS = {
    "simulate": (
        _setup,
        run,
        "run a real mbatchd against simulated hosts and a generated workload; print its figures",
    )
}
