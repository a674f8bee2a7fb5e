"""sbatchd: the worker. Runs jobs, enforces their limits, reports their ends."""
import argparse


def main(argv):
    from lavalite import daemon
    from lavalite.auth import KeyFileError
    from roles.sbatchd.server import Sbatchd

    ap = argparse.ArgumentParser(prog="lavalite --role sbatchd")
    ap.add_argument("--conf")
    ap.add_argument("--host")
    args = ap.parse_args(argv)
    conf, host = daemon.setup("sbatchd", args.conf, args.host)
    try:
        server = Sbatchd(conf, host)
    except (KeyFileError, OSError) as exc:
        daemon.log.error("sbatchd cannot start: %s", exc)
        return 2
    daemon.run(server.serve, server.reload)
    return 0
