"""How bsub follows a job it submitted: -K (wait for the end, exit with the job's exit code)
and -I, -Ip, -Is (interactive jobs: the job's stdin, stdout and stderr relayed to this
terminal). roles/cli/interact.py holds the options and loads this module only when one is given.

Both wait for the job's end with mbatchd's `wait` request, which a thread holds on a
connection of its own, so that the main thread stays free for Ctrl-C and, with -I, for the
relay: bsub listens on an ephemeral port of its host, the job's side connects back
(lavalite.relay), and the exit code is mbatchd's record of the job, as bjobs shows it.
"""

import contextlib
import os
import selectors
import signal
import socket
import sys
import threading

from lavalite import relay
from lavalite.client import Client, ClientError
from lavalite.hosts import address
from roles.cli.interact import usage

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from roles.cli.quick import Args

FOREVER = 10 * 365 * 86400.0  # a wait op's timeout: as long as the job takes
KILLED_PENDING = 126  # LSF's exit code of bsub -K for a job terminated while pending


def exit_code(view: "dict[str, Any]") -> int:
    """bsub's exit code for an ended job, as LSF's: the job's own; 128 + the signal that
    ended it; 126 if it ended before it started (killed while pending)."""
    if view["state"] == "DONE":
        return 0
    if not view["start_time"]:
        return KILLED_PENDING
    if view["exit_code"] is not None:
        return view["exit_code"]
    if view["exit_signal"] is not None:
        return 128 + view["exit_signal"]
    return 1  # lost with its host: no code of its own


class Follow:
    """bsub -K: wait for the end; the first Ctrl-C kills the job (and still waits for its
    end), a second one leaves at once."""

    def __init__(self, args: "Args", client: Client) -> None:
        self.conf_path = args.conf
        self.client = client
        self.job = 0
        self.sel = selectors.DefaultSelector()
        self.ended = False
        self.failure: ClientError | None = None
        self.killed = False
        self._catch_signals()

    def _catch_signals(self) -> None:
        """From before the submit on, Ctrl-C (and a terminal's resizing) arrive as bytes on a
        socket that the loop watches (Python's wakeup fd), and are handled there, between two
        steps, once the job's id is known. bsub ends after the job: nothing to restore."""
        self.wakeup, wakeup_w = socket.socketpair()
        self.wakeup.setblocking(False)
        wakeup_w.setblocking(False)
        signal.set_wakeup_fd(wakeup_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGWINCH):
            signal.signal(sig, lambda *_: None)
        self.sel.register(self.wakeup, selectors.EVENT_READ, self._signalled)
        self._keep = wakeup_w  # the write end lives as long as the handlers

    def _signalled(self) -> None:
        for sig in self.wakeup.recv(64):
            self.signalled(sig)

    def follow(self, job_id: int) -> int:
        self.job = job_id
        print("<<Waiting for dispatch ...>>", file=sys.stderr, flush=True)
        done_r, done_w = os.pipe()
        threading.Thread(target=self._wait, args=(done_w,), daemon=True).start()
        self.sel.register(done_r, selectors.EVENT_READ, self._job_ended)
        self.run()
        if self.failure is not None:
            raise self.failure
        view = self.client.call("jobs", jobs=[job_id])["jobs"][0]
        self.report(view)
        return exit_code(view)

    def run(self) -> None:
        while not self.ended:
            self.select()

    def select(self) -> None:
        for key, _ in self.sel.select():
            key.data()

    def report(self, view: "dict[str, Any]") -> None:
        print(
            "<<Job is finished>>" if view["start_time"] else "<<Terminated while pending>>",
            file=sys.stderr,
        )

    def _wait(self, done: int) -> None:
        """In the thread: mbatchd answers when the job has ended (after its retries)."""
        try:
            with Client(conf_path=self.conf_path, timeout=FOREVER) as client:
                client.call("wait", cond="ended", job=self.job)
        except ClientError as exc:
            self.failure = exc
        os.write(done, b".")

    def _job_ended(self) -> None:
        self.ended = True

    def interrupted(self) -> None:
        """Ctrl-C: the job is killed; a second one leaves bsub at once (130)."""
        if self.killed:
            raise KeyboardInterrupt
        self.killed = True
        for r in self.client.call("kill", jobs=[self.job])["results"]:
            print(r["message"], file=sys.stderr, flush=True)

    def signalled(self, sig: int) -> None:
        if sig == signal.SIGINT:
            self.interrupted()


class Interactive(Follow):
    """bsub -I, -Ip, -Is: listen, relay the job's streams once its side has connected."""

    def __init__(
        self, args: "Args", client: Client, spec: "dict[str, Any]", pty: bool, shell: bool
    ) -> None:
        super().__init__(args, client)
        self.pty, self.shell = pty, shell
        # the job reads its -i/-is file, not this stdin (LSF): no keys to pass on
        self.keys = "stdin" not in spec and "stdin_spool" not in spec
        self.tty = pty and os.isatty(0)  # a pty for the job even from a pipe; raw mode needs a tty
        self.token = relay.new_token()
        host = address(client.conf, spec["from_host"])
        try:
            self.listener = relay.listen(host)
        except OSError as exc:
            usage(f"cannot listen for the interactive job on {host}: {exc.strerror or exc}")
        spec["interactive"] = {
            "host": host,
            "port": self.listener.getsockname()[1],
            "token": self.token,
            "pty": pty,
            "shell": shell,
            **self._size(),
        }
        self.pump: relay.Relay | None = None

    def _size(self) -> "dict[str, int]":
        if not self.tty:
            return {}
        cols, rows = os.get_terminal_size(0)
        return {"rows": rows, "cols": cols}

    def run(self) -> None:
        """Until the job's side connects (or the job ends without it), then the relay."""
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        while self.pump is None and not self.ended:
            self.select()
        self.listener.close()
        if self.pump is not None:
            with _raw(self.shell) if self.tty and self.keys else contextlib.nullcontext():
                self.pump.run()
        super().run()  # the job's record: mbatchd has it once the job's side has ended

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            relay.accept(conn, self.token)
        except (OSError, relay.RelayError):  # not our job's side: keep listening
            conn.close()
            return
        self.sel.unregister(self.listener)
        self.pump = relay.Relay(
            conn,
            {0: relay.STDIN} if self.keys else {},
            {relay.STDOUT: 1, relay.STDERR: 2},
            self._control,
            close_sinks=False,
        )
        for key in list(self.sel.get_map().values()):  # the signals and the end go on
            self.pump.watch(key.fd, key.data)
        if self.tty:
            self.pump.send(relay.winch_frame(**self._size()))

    def _control(self, channel: int, payload: bytes) -> None:
        if channel == relay.HOST:
            print(
                f"<<Starting on {payload.decode(errors='replace')}>>", file=sys.stderr, flush=True
            )

    def signalled(self, sig: int) -> None:
        if sig == signal.SIGWINCH and self.tty and self.pump is not None:
            self.pump.send(relay.winch_frame(**self._size()))
        elif sig == signal.SIGINT and self.pump is not None:  # LSF: the job gets the signal
            self.pump.send(relay.frame(relay.SIGNAL, bytes([signal.SIGINT])))
        elif sig == signal.SIGINT:
            self.interrupted()

    def report(self, view: "dict[str, Any]") -> None:
        if not view["start_time"]:
            print("<<Terminated while pending>>", file=sys.stderr)


@contextlib.contextmanager
def _raw(shell: bool) -> "Iterator[None]":
    """The terminal in raw mode while the job has it: keys go to the job's pty as typed.
    Shell mode (-Is) passes Ctrl-C and Ctrl-Z as keys too; -Ip keeps them as signals here,
    and bsub sends Ctrl-C's to the job."""
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    if not shell:
        mode = termios.tcgetattr(0)
        mode[3] |= termios.ISIG
        termios.tcsetattr(0, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
