"""Cluster administration on this host: `lavalite admin rotate-key [--finish]`."""
import argparse
import sys

from lavalite import auth, config


def _setup_admin(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    rk = sub.add_parser("rotate-key", help="roll the cluster key, with an overlap window",
                        description="Write a new cluster key, keeping the current one as "
                        "'previous': daemons re-read the file when it changes, sign with the "
                        "new key and accept both. Copy the file to every host, then end the "
                        "window with --finish (on every host).")
    rk.add_argument("--conf", default=argparse.SUPPRESS, help="lavalite.conf")
    rk.add_argument("--finish", action="store_true",
                    help="end the overlap window: drop the previous key")


def admin(args):
    conf = config.load(config.find_conf(args.conf))
    path = conf.cluster.key_file
    try:
        auth.rotate_key(path, finish=args.finish)
    except (auth.KeyFileError, OSError) as exc:
        print(f"lavalite admin rotate-key: {exc}", file=sys.stderr)
        return 1
    if args.finish:
        print(f"{path}: previous key dropped; only the current key is accepted now.")
    else:
        print(f"{path}: new key written; the previous one is accepted until "
              "`lavalite admin rotate-key --finish`. Copy this file (mode 0600) to every host.")
    return 0


COMMANDS = {
    "admin": (_setup_admin, admin, "cluster administration: rotate-key"),
}
