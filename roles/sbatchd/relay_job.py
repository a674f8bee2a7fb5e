"""The job's side of an interactive job (bsub -I, -Ip, -Is): `lavalite --role sbatchd --relay
-- COMMAND...`, which sbatchd runs in place of the job's command, so that it is the job: as the
user, in the job's cgroups, signalled, limited and accounted like any job.

It connects back to the submitting bsub (lavalite.relay's handshake), starts the command with
pipes, or on a pseudo-terminal for -Ip/-Is, relays its stdin, stdout and stderr (a stream that
bsub -o/-e sends to a file is left on the file sbatchd opened), and ends as the command ended:
its exit code, or killed by the same signal, so bjobs shows the command's own ending.
A submitter that cannot be reached, or goes away, is a hangup: the command is killed.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from lavalite import relay
from lavalite.program import self_command

ENV = "LAVALITE_RELAY"  # the job's relay parameters (JSON), taken out of the command's environment
# what bkill and a hangup send: the command leads its own process group (and with a pty its own
# session), so it is passed on
PR_SET_PDEATHSIG = 1  # prctl(2)
_NEWLINE = {False: "\n", True: "\r\n"}  # a raw terminal needs the carriage return
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


def wrapped(spec: dict, argv: list[str], env: dict[str, str]) -> list[str]:
    """What sbatchd runs for a job whose command is `argv`: an interactive job's command
    under this relay, its parameters put in `env`; any other job's as it is."""
    params = spec.get("interactive")
    if params is None:
        return argv
    streams = {"stdin": not _input_file(spec), "stdout": not spec.get("out")}
    env[ENV] = json.dumps({**params, **streams, "stderr": not spec.get("err")})
    return relay_argv(self_command(), argv)


def _input_file(spec: dict) -> bool:
    """Whether the job reads a file (-i, -is): then that is its stdin, not the relay (LSF)."""
    return "stdin" in spec or "stdin_spool" in spec


def relay_argv(program: list[str], argv: list[str]) -> list[str]:
    """The relay's command line, running `argv`."""
    return [*program, "--role", "sbatchd", "--relay", "--", *argv]


def main(argv: list[str]) -> int:
    params = json.loads(os.environ.pop(ENV))
    cmd = argv[1:] if argv[:1] == ["--"] else argv
    try:
        _become(params.get("become"))
        failure = None
    except OSError as exc:  # it reaches blaunch all the same, to say so
        failure = f"lavalite: cannot join the job's cgroups or become its user: {exc}"
    try:
        sock = relay.connect((params["host"], params["port"]), params["token"])
    except (OSError, relay.RelayError) as exc:
        print(
            f"lavalite: bsub -I or blaunch at {params['host']}:{params['port']} cannot be "
            f"reached ({exc}): hung up",
            file=sys.stderr,
        )
        return _end_as(-signal.SIGHUP)
    session = _Session(sock, params, cmd)
    return session.run() if failure is None else session.unstarted(126, failure)


def _become(become: dict | None) -> None:
    """A blaunch task: started by root, it joins the job's cgroups, then takes the user's
    identity, before it connects or runs anything of the user's."""
    if become is None:
        return
    for procs in become["procs"]:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if become["switch"]:
        os.setgroups(os.getgrouplist(become["user"], become["gid"]))
        os.setgid(become["gid"])
        os.setuid(become["uid"])


def _end_as(code: int) -> int:
    """The command's ending as this process's own: its exit code, or its signal."""
    if code >= 0:
        return code
    if -code != signal.SIGKILL:  # the one signal no handler can be set for
        signal.signal(-code, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
    os.kill(os.getpid(), -code)
    return 128 - code  # a signal that does not end a process (none of the terminating ones)


class _Session:
    def __init__(self, sock, params: dict, cmd: list[str]) -> None:
        self.sock, self.cmd = sock, cmd
        self.pty = bool(params.get("pty"))
        self.size = params.get("rows") or 0, params.get("cols") or 0
        self.relay_in = params.get("stdin", True)  # else the job's -i file, on descriptor 0
        self.relay_out, self.relay_err = params.get("stdout", True), params.get("stderr", True)
        self.child: subprocess.Popen | None = None
        self.status: int | None = None
        self.master = -1
        self.terminal: int | None = None  # the pty's slave, the command's terminal with -Ip/-Is
        self.cwd = params.get("cwd")  # a blaunch task's; a job's relay starts in the job's
        self.task = params.get("become") is not None  # a blaunch task's relay

    def run(self) -> int:
        try:
            sources, sinks, child_fds = self._pty() if self.pty else self._pipes()
        except OSError as exc:
            return self.unstarted(126, f"lavalite: cannot make the job's terminal: {exc}")
        try:
            self.child = subprocess.Popen(
                self.cmd,
                stdin=child_fds[0],
                stdout=child_fds[1],
                stderr=child_fds[2],
                start_new_session=self.pty,
                process_group=None if self.pty else 0,
                cwd=self.cwd,
                preexec_fn=_child_setup(self.terminal),
            )
        except OSError as exc:
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            why = "command not found" if code == 127 and "/" not in self.cmd[0] else exc.strerror
            return self.unstarted(code, f"lavalite: {self.cmd[0]}: {why}")
        finally:
            for fd in {fd for fd in child_fds if fd not in (0, 1, 2)}:
                os.close(fd)
        for sig in FORWARDED:
            signal.signal(sig, self._passed_on)
        # a pty's stdin ends with its EOF key: its other end stays the command's terminal
        pump = relay.Relay(
            self.sock, sources, sinks, self._control, end_with=b"\x04" if self.pty else b""
        )
        pump.send(relay.frame(relay.HOST, _host().encode()))
        pidfd = os.pidfd_open(self.child.pid)
        pump.watch(pidfd, lambda: self._reaped(pump, pidfd))
        pump.finished = lambda: self.status is not None
        pump.run()
        if self.status is None:  # the submitter went away: its job goes with it
            self._killpg(signal.SIGKILL)
            self.status = self.child.wait()
        self.sock.close()
        return _end_as(self.status)

    def _pipes(self) -> tuple[dict, dict, list[int]]:
        """(sources, sinks, the child's 0, 1, 2): a pipe per relayed stream; a stream read
        from or sent to a file (-i, -o, -e) stays on the descriptor sbatchd opened for it."""
        sources, sinks, child = {}, {}, [0, 1, 2]
        if self.relay_in:
            child[0], sinks[relay.STDIN] = os.pipe()
        for ch, relayed in ((relay.STDOUT, self.relay_out), (relay.STDERR, self.relay_err)):
            if relayed:
                r, w = os.pipe()
                sources[r], child[ch] = ch, w
        for fd in (*sinks.values(), *sources):
            os.set_blocking(fd, False)
        return sources, sinks, child

    def _pty(self) -> tuple[dict, dict, list[int]]:
        """The same with a pseudo-terminal as the command's stdin (and stdout, stderr) unless
        read from or sent to a file. The master is read and written through two descriptors:
        one each for the pump's source and sink."""
        import pty

        self.master, slave = pty.openpty()
        self.terminal = slave
        if all(self.size):
            _set_size(self.master, *self.size)
        os.set_blocking(self.master, False)
        sinks = {relay.STDIN: os.dup(self.master)} if self.relay_in else {}
        child = [slave if self.relay_in else 0, slave if self.relay_out else 1]
        child.append(slave if self.relay_err else 2)
        return {self.master: relay.STDOUT}, sinks, child

    def unstarted(self, code: int, message: str) -> int:
        """The command could not start: said on the submitter's terminal (and in the job's
        error file, if it has one), with the exit status blaunch exits with."""
        print(message, file=sys.stderr)
        self.sock.setblocking(True)
        try:
            self.sock.sendall(
                relay.frame(relay.STDERR, f"{message}{_NEWLINE[self.pty]}".encode())
                + relay.exit_frame(code)
            )
        except OSError:
            pass
        self.sock.close()
        return code

    def _reaped(self, pump: relay.Relay, pidfd: int) -> None:
        pump.sel.unregister(pidfd)
        os.close(pidfd)
        assert self.child is not None
        self.status = self.child.wait()
        # what a job's command left holding the streams ends with it; a task's leftovers live
        # on, as under rsh, until the job's end kills its cgroups: an MPI launcher's daemon
        # forks, and the child leaves the process group a moment later
        if not self.task:
            self._killpg(signal.SIGKILL)
        pump.send(relay.exit_frame(self.status))

    def _control(self, channel: int, payload: bytes) -> None:
        if channel == relay.WINCH and self.master >= 0:
            _set_size(self.master, *relay.window_size(payload))
        elif channel == relay.SIGNAL and payload:
            self._killpg(payload[0])

    def _passed_on(self, sig: int, _frame: object) -> None:
        self._killpg(sig)

    def _killpg(self, sig: int) -> None:
        assert self.child is not None
        try:
            os.killpg(self.child.pid, sig)
        except OSError:  # ProcessLookupError: all of it has ended
            pass


def _host() -> str:
    """This host's name as the job knows it (its first host)."""
    hosts = os.environ.get("LSB_HOSTS", "").split()
    return hosts[0] if hosts else socket.gethostname()


def _child_setup(terminal: int | None) -> "Callable[[], None]":
    """What the child does before exec: die with this process (a SIGKILL that reaches only
    this one, without cgroups, must not leave the command running), and with a pty make it
    the controlling terminal of the child's new session (through the slave's own descriptor:
    with -i the child's stdin is a file)."""
    import ctypes
    import fcntl
    import termios

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if terminal is not None:
            fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)

    return setup


def _set_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
