"""mbatchd: queues, scheduling and the job store; started and supervised by the master LIM."""


def main(argv: list[str]) -> int:
    from lavalite import daemon
    from lavalite.auth import KeyFileError
    from roles.mbatchd.server import Mbatchd
    from store import StoreError

    return daemon.main(
        "mbatchd",
        argv,
        lambda conf, host, args: Mbatchd(conf, host, args.epoch),
        (KeyFileError, StoreError),
        options=_options,
    )


def _options(ap):
    ap.add_argument(
        "--epoch",
        type=int,
        default=0,
        help="fencing token from the master LIM (0: started by hand)",
    )
