"""Small files the shepherd writes and reads per job (attempt records, cgroup knobs), through
os.open: a buffered open() costs four more system calls per file."""
import os


def write(path, value, create=True):
    """create=False: only a file that exists (a kernel's, as cgroup.kill, whose absence means
    an older kernel)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0),
                 0o644)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def read(path):
    """The file's text, or "" if it cannot be read (a group gone meanwhile, say)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    except OSError:
        return ""
    finally:
        os.close(fd)
