"""sbatchd: the worker. Runs jobs, enforces their limits, reports their ends."""


def main(argv):
    from lavalite import daemon
    from lavalite.auth import KeyFileError
    from roles.sbatchd.server import Sbatchd
    return daemon.main("sbatchd", argv, lambda conf, host, args: Sbatchd(conf, host), (KeyFileError, OSError))
