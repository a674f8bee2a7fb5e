"""blaunch (LSF's): inside a running job, start a task on one of the job's hosts, through that
host's sbatchd, as the job's user, in the job's cgroups there; its stdout and stderr (and
blaunch's stdin, unless -n) are relayed as bsub -I's are (lavalite.relay), and blaunch exits
with the task's exit code. An MPI launcher can use it as its rsh agent."""

import os
import sys

from lavalite import relay
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
    p.add_argument("words", nargs=REMAINDER, metavar="HOST COMMAND [ARGS]")


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
    if len(words) < 2:
        return _refuse("give a host and a command (blaunch HOST COMMAND [ARGS])")
    job_id = _job_id()
    if job_id is None:
        return _refuse("not inside a job: LSB_JOBID is not set")
    client = Client(conf_path=args.conf)
    client.call("ping")  # the connection first: its address is one the cluster reaches
    assert client.sock is not None  # a call leaves it connected
    listener = relay.listen(client.sock.getsockname()[0])
    token = relay.new_token()
    host, port = listener.getsockname()[:2]
    client.call(
        "launch",
        job=job_id,
        host=words[0],
        cmd=words[1:],
        cwd=os.getcwd(),
        env=dict(os.environ),
        interactive={"host": host, "port": port, "token": token},
    )
    return _relay(listener, token, words[0], not args.no_stdin)


def _relay(listener: "Any", token: str, host: str, stdin: bool) -> int:
    """The task's streams until it ends; its exit status."""
    listener.settimeout(START_WITHIN)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            print(f"blaunch: the task did not start on {host}", file=sys.stderr)
            return 1
        try:
            relay.accept(conn, token)
            break
        except (OSError, relay.RelayError):  # not our task: keep listening
            conn.close()
    listener.close()
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
        print(f"blaunch: lost the task on {host}", file=sys.stderr)
        return 1
    return ended[0]


COMMANDS = {
    "launch": (setup, launch, "start a task of the running job on one of its hosts (blaunch)")
}
