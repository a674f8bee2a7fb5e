"""A syslog receiver for tests: a Unix datagram socket the test binds and names in
lavalite.conf's [logging] syslog_address, so daemons and llctrl log to it as to /dev/log.

A thread reads it all the time, as syslogd does: an unread datagram socket holds only
net.unix.max_dgram_qlen (10) messages, after which senders block."""

import os
import re
import socket
import threading

from conftest import wait_until


class SyslogSink:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o666)
        self.lines = []  # (facility, severity, message), in arrival order
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:  # closed
                return
            if not data:  # shut down
                return
            m = re.match(rb"<(\d+)>(.*)", data.rstrip(b"\0"), re.S)
            pri = int(m.group(1))
            self.lines.append((pri >> 3, pri & 7, m.group(2).decode(errors="replace")))

    def wait_for(self, pattern, timeout=30, start=0):
        """The first message from index `start` on matching `pattern` (a regex)."""
        return wait_until(
            lambda: next((ln for ln in self.lines[start:] if re.search(pattern, ln[2])), None),
            timeout,
            lambda: (
                f"a syslog line matching {pattern!r}; got:\n"
                + "\n".join(m for _, _, m in self.lines)
            ),
            0.1,
        )

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        os.unlink(self.path)
