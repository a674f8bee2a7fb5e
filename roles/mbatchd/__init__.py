"""mbatchd: queues, scheduling and the job store; started and supervised by the master LIM."""


def main(argv):
    from lavalite import daemon
    from lavalite.auth import KeyFileError
    from roles.mbatchd.server import Mbatchd
    from store import StoreError
    return daemon.main("mbatchd", argv, Mbatchd, (KeyFileError, StoreError))
