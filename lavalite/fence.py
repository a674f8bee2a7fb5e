"""The fencing token: an epoch that only grows, kept in `<state_dir>/master.epoch`.

The LIM that becomes master takes an exclusive fcntl lock on that file (a POSIX lock: on NFS it
goes through the lock manager, so it holds across hosts), increments the number in it and starts
mbatchd with it. While the lock is held no other LIM can become master; when the holder dies the
kernel (or the NFS server, once the lease expires) releases it. mbatchd stamps the epoch on every
message to sbatchd, and sbatchd refuses an epoch older than one it has seen: a deposed master
that still runs cannot give orders.
"""

import fcntl
import os

from lavalite.files import write_whole

NAME = "master.epoch"


def path(state_dir: str) -> str:
    return os.path.join(state_dir, NAME)


def read(state_dir: str) -> int:
    """The current epoch (0 when no master was ever elected)."""
    return read_file(path(state_dir))


def read_file(name: str) -> int:
    try:
        with open(name) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def remember(name: str, epoch: int) -> None:
    """sbatchd keeps the newest epoch it has seen across its restarts."""
    write_whole(name, f"{epoch}\n")


class EpochLock:
    """Held by the master LIM: acquire() -> the new epoch, or None while another host holds it."""

    def __init__(self, state_dir: str) -> None:
        self.path = path(state_dir)
        self.fd: int | None = None
        self.epoch: int | None = None

    def acquire(self) -> int | None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask: private
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        raw = os.pread(fd, 64, 0).decode(errors="replace").strip()
        epoch = (int(raw) if raw.isdigit() else 0) + 1
        data = f"{epoch}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        self.fd, self.epoch = fd, epoch
        return epoch

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the fcntl lock
            self.fd = self.epoch = None
