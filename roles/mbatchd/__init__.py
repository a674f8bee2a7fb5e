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
    ap.add_argument("--epoch", type=int, default=0,
                    help="fencing token from the master LIM (0: started by hand)")
    args = ap.parse_args(argv)
    conf, host = daemon.setup("mbatchd", args.conf, args.host)
    try:
        server = Mbatchd(conf, host, args.epoch)
    except (KeyFileError, StoreError) as exc:
        daemon.log.error("mbatchd cannot start: %s", exc)
        return 2
    daemon.run(server.serve)
    return 0
