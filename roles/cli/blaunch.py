"""blaunch (LSF's): inside a running job, start a task on one of the job's hosts, through that
host's sbatchd, as the job's user, in the job's cgroups there; its stdout and stderr (and
blaunch's stdin, unless -n) are relayed as bsub -I's are (lavalite.relay), and blaunch exits
with the task's exit code. An MPI launcher can use it as its rsh agent."""

import os
import sys

from lavalite import relay
from lavalite.jobscript import argv_of, command_line
from lavalite.model import element_id
from roles.cli.quick import REMAINDER

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from roles.cli.quick import Args, Parser

START_WITHIN = 60.0  # seconds the task has to connect back once its host has started it


def setup(p: "Parser") -> None:
    p.add_argument("-n", dest="no_stdin", action="store_true", help="the task's stdin is /dev/null")
    p.add_argument(
        "-z",
        dest="hosts",
        metavar='"HOST ..."',
        help="a task on each of these hosts (then no HOST word), none with stdin",
    )
    p.add_argument(
        "-u", dest="host_file", metavar="HOST_FILE", help="a task on each host the file lists"
    )
    p.add_argument(
        "-no-shell",
        dest="no_shell",
        action="store_true",
        help="run COMMAND ARGS as they are (default: their words joined, run by /bin/sh, as rsh)",
    )
    p.add_argument("words", nargs=REMAINDER, metavar="[HOST] COMMAND [ARGS]")


def _refuse(message: str) -> int:
    print(f"blaunch: {message}", file=sys.stderr)
    return 2


def _job_id() -> int | None:
    """The job this runs in: $LSB_JOBID, with $LSB_JOBINDEX for an array element."""
    job, index = os.environ.get("LSB_JOBID", ""), os.environ.get("LSB_JOBINDEX", "0")
    if not job.isdigit() or not index.isdigit():
        return None
    return element_id(int(job), int(index)) if int(index) else int(job)


def launch(args: "Args") -> int:
    from lavalite.client import Client

    words = args.words[1:] if args.words[:1] == ["--"] else args.words
    try:
        hosts, cmd = _hosts_and_command(args, words)
    except OSError as exc:
        return _refuse(f"-u {args.host_file}: {exc.strerror or exc}")
    if not hosts or not cmd:
        return _refuse(
            'give a host and a command (blaunch [-n] HOST | -z "HOST ..." | -u HOST_FILE COMMAND)'
        )
    if not args.no_shell:  # as rsh and ssh: the words are one line for the remote shell
        cmd = argv_of(command_line(cmd))
    job_id = _job_id()
    if job_id is None:
        return _refuse("not inside a job: LSB_JOBID is not set")
    client = Client(conf_path=args.conf)
    client.call("ping")  # the connection first: its address is one the cluster reaches
    assert client.sock is not None  # a call leaves it connected
    listener = relay.listen(client.sock.getsockname()[0])
    token = relay.new_token()
    address, port = listener.getsockname()[:2]
    for host in hosts:
        client.call(
            "launch",
            job=job_id,
            host=host,
            cmd=cmd,
            cwd=os.getcwd(),
            env=dict(os.environ),
            interactive={"host": address, "port": port, "token": token},
        )
    conns = _accepted(listener, token, len(hosts))
    if len(conns) < len(hosts):
        print(f"blaunch: {len(hosts) - len(conns)} of the tasks did not start", file=sys.stderr)
    # one task has blaunch's stdin; several (-z) have none, as if -n
    stdin = len(hosts) == 1 and not args.no_stdin
    statuses = _relay_all(conns, stdin)
    failed = [status for status in statuses if status != 0]
    if failed:  # the first failing task's, as a shell's `&&` would stop at
        return failed[0]
    return 0 if len(conns) == len(hosts) else 1


def _hosts_and_command(args: "Args", words: list[str]) -> tuple[list[str], list[str]]:
    """The hosts to start a task on (-z's, -u's file's, or the first word) and the command."""
    if args.hosts is not None:
        return args.hosts.split(), words
    if args.host_file is not None:
        with open(args.host_file) as f:  # one host a line, maybe with a count (LSF's form)
            return [line.split()[0] for line in f if line.strip()], words
    return words[:1], words[1:]


def _accepted(listener: "Any", token: str, n: int) -> "list[Any]":
    """The connections of the `n` tasks that prove the token, each within START_WITHIN of
    the last; fewer if some never come."""
    listener.settimeout(START_WITHIN)
    conns: list[Any] = []
    while len(conns) < n:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            break
        try:
            relay.accept(conn, token)
            conns.append(conn)
        except (OSError, relay.RelayError):  # not one of our tasks: keep listening
            conn.close()
    listener.close()
    return conns


def _relay_all(conns: "list[Any]", stdin: bool) -> list[int]:
    """Every task's streams until it ends (one thread each beside the first); their exit
    statuses, 1 for a task lost before it said how it ended."""
    import threading

    statuses = [1] * len(conns)

    def one(i: int) -> None:
        statuses[i] = _relay(conns[i], stdin and i == 0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(1, len(conns))]
    for t in threads:
        t.start()
    if conns:
        one(0)
    for t in threads:
        t.join()
    return statuses


def _relay(conn: "Any", stdin: bool) -> int:
    """One task's streams until it ends; its exit status."""
    ended: list[int] = []

    def control(channel: int, payload: bytes) -> None:
        if channel == relay.EXIT:
            ended.append(relay.exit_status(payload))

    pump = relay.Relay(
        conn,
        {0: relay.STDIN} if stdin else {},
        {relay.STDOUT: 1, relay.STDERR: 2},
        control,
        close_sinks=False,
    )
    if not stdin:  # -n: the task's stdin ends at once
        pump.send(relay.frame(relay.STDIN))
    pump.run()
    conn.close()
    if not ended:
        print("blaunch: lost a task before it ended", file=sys.stderr)
        return 1
    return ended[0]


COMMANDS = {
    "launch": (setup, launch, "start a task of the running job on one of its hosts (blaunch)")
}
