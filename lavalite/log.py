"""Daemon logging, chosen by lavalite.conf [logging]: stderr (what systemd's journal collects),
syslog (facility daemon) or one file per role and host under log_dir, rotated by size.
sbatchd's shepherds log to the same place as sbatchd (setup_helper).

setup() may run again on a reload: it replaces the handlers, so a changed target takes effect
without a restart."""

import logging
import logging.handlers
import os
import sys
import time

from lavalite import private

# llctrl imports this module: typing's own flag would cost that command typing's import
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from lavalite.config import Config

FORMAT = "%(asctime)s {role}@{host}[%(process)d] %(levelname)s %(message)s"
# syslog stamps time and host itself; the tag names the role, as `lavalite-mbatchd[PID]: `
SYSLOG_FORMAT = "lavalite-{role}[%(process)d]: %(levelname)s %(message)s"


class _Formatter(logging.Formatter):
    """The format on each line of a message: a batch of lines (`lines`) goes out as one record,
    one handler call and one write, and still reads as a line per event. The formats end with
    the message, so what precedes it is the prefix."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if "\n" not in message:
            return super().formatMessage(record)
        record.message = ""
        prefix = super().formatMessage(record)
        record.message = message
        return "\n".join(prefix + line for line in message.split("\n"))


_joined = True  # the target takes a record of several lines (not syslog: a message each)


def lines(logger: logging.Logger, level: int, texts: "Sequence[str]") -> None:
    """Log several lines: one record where the target allows (a record costs ~20 us; mbatchd
    logs a line per job state change, thousands a second at full speed), else one per line."""
    if not texts or not logger.isEnabledFor(level):
        return
    if _joined:
        logger.log(level, "%s", "\n".join(texts))
    else:
        for text in texts:
            logger.log(level, "%s", text)


def syslog_address(text: str) -> "str | tuple[str, int]":
    """'/dev/log' -> the path; 'host:port' -> (host, port) for UDP."""
    if text.startswith("/") or ":" not in text:
        return text
    host, _, port = text.rpartition(":")
    return (host, int(port))


def syslog_handler(
    address: str, facility: int = logging.handlers.SysLogHandler.LOG_DAEMON
) -> logging.handlers.SysLogHandler:
    """OSError when nothing listens on a Unix socket address."""
    return logging.handlers.SysLogHandler(syslog_address(address), facility)


class _Private:
    """A file handler whose files (a rotation's new one too) are created private whatever the
    process's umask: a shepherd keeps the jobs' umask, and opens the file again once rotated."""

    # logging.FileHandler's, which it is mixed into
    baseFilename: str
    mode: str
    encoding: str | None
    errors: str | None

    def _open(self) -> "Any":
        return open(
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=_open_private,
        )


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags, private.file_mode())


class _RotatingFile(_Private, logging.handlers.RotatingFileHandler):
    pass


class _WatchedFile(_Private, logging.handlers.WatchedFileHandler):
    pass


def _handler(
    role: str,
    host: str,
    target: str | None,
    syslog_address: str | None,
    open_file: "Callable[[], logging.Handler] | None",
) -> logging.Handler:
    """The handler for `target` in the daemons' format; open_file() makes the file's."""
    fmt = FORMAT
    handler: logging.Handler
    # the fallbacks to stderr pass neither an address nor an open_file
    if target == "syslog":
        assert syslog_address is not None
        handler, fmt = syslog_handler(syslog_address), SYSLOG_FORMAT
    elif target == "file":
        assert open_file is not None
        handler = open_file()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt.format(role=role, host=host)))
    return handler


def _install(handler: logging.Handler, level: int) -> None:
    """The root logger's one handler from now on (a reload's replaces the old)."""
    global _joined
    _joined = not isinstance(handler, logging.handlers.SysLogHandler)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)


def _file(conf: "Config", role: str, host: str) -> str:
    return os.path.join(conf.paths.log_dir, f"{role}-{host}.log")


def helper_spec(role: str, host: str, conf: "Config") -> "dict[str, Any]":
    """What a helper process of `role` (sbatchd's shepherds) needs to log where the role does:
    passed on its command line, read by setup_helper."""
    return {
        "host": host,
        "target": conf.logging.target,
        "level": conf.logging.level,
        "syslog": conf.logging.syslog_address,
        "file": _file(conf, role, host),
    }


def setup_helper(role: str, spec: "dict[str, Any]", floor: int = logging.WARNING) -> None:
    """Log as the daemon that started this process: into its file (appended, and opened again
    once the daemon has rotated it), to syslog, or to the stderr it inherited; at `floor` or
    above. An empty spec (a helper started by hand) logs to stderr."""
    host = spec.get("host", "-")
    try:
        handler = _handler(
            role, host, spec.get("target"), spec.get("syslog"), lambda: _WatchedFile(spec["file"])
        )
    except OSError:
        handler = _handler(role, host, "stderr", None, None)
    _install(handler, max(floor, getattr(logging, spec.get("level", "warning").upper())))


def setup(role: str, host: str, conf: "Config") -> None:
    """Route the `lavalite` loggers as conf says. A syslog socket that cannot be reached falls
    back to stderr with a warning: a daemon must not refuse to run for its logging."""
    # what the formats never show is not gathered (the logging HOWTO's "Optimization")
    logging.logThreads = logging.logMultiprocessing = False

    def rotated() -> logging.Handler:
        os.makedirs(conf.paths.log_dir, exist_ok=True)
        return _RotatingFile(
            _file(conf, role, host),
            maxBytes=conf.logging.rotate_size,
            backupCount=conf.logging.rotate_keep,
        )

    try:
        handler = _handler(role, host, conf.logging.target, conf.logging.syslog_address, rotated)
        problem = None
    except OSError as exc:
        handler = _handler(role, host, "stderr", None, None)
        problem = f"cannot log to {conf.logging.target} ({exc}); logging to stderr"
    _install(handler, getattr(logging, conf.logging.level.upper()))
    if problem:
        logging.getLogger("lavalite").warning("%s", problem)


def address(peername: "Any") -> str:
    """A peer's address in a log line: host:port, or "(Unix socket)"."""
    return f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else "(Unix socket)"


class Throttled:
    """A warning about a misbehaving peer, at most one line per `every` seconds: a stranger
    can make such events as fast as it can connect, and each must not cost a log line. The
    lines held back are counted in the next one written."""

    def __init__(self, logger: logging.Logger, every: float = 10.0):
        self.logger, self.every = logger, every
        self.next_at = 0.0
        self.held = 0

    def warning(self, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.held += 1
            return
        self.next_at = now + self.every
        held, self.held = self.held, 0
        more = f" (and {held} more since the last such line)" if held else ""
        self.logger.warning(fmt + "%s", *args, more)
