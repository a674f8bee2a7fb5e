"""mbatchd: queues, scheduling and the job store; started and supervised by the master LIM."""
import argparse


def main(argv):
    from lavalite import daemon
    from lavalite.auth import KeyFileError
    from roles.mbatchd.server import Mbatchd
    from store import StoreError

    ap = argparse.ArgumentParser(prog="lavalite --role mbatchd")
    ap.add_argument("--conf")
    ap.add_argument("--host")
    args = ap.parse_args(argv)
    conf, host = daemon.setup("mbatchd", args.conf, args.host)
    try:
        server = Mbatchd(conf, host)
    except (KeyFileError, StoreError) as exc:
        daemon.log.error("mbatchd cannot start: %s", exc)
        return 2
    daemon.run(server.serve, server.reload)
    return 0
