"""What a job spec may hold: the bounds on its numbers, names, paths and sizes.

mbatchd checks every submitted spec against them (roles/mbatchd/core.py), and the CLI checks
the options it parses (roles/cli/commands.py), so that no value a host cannot run, the store
cannot hold or a listing cannot show ever gets in: a NUL byte (no exec or path takes one), an
integer past SQLite's 64 bits, a NaN, a name of a megabyte. Stdlib only: the CLI imports it.
"""

MAX_NAME = 512  # characters of a job name (-J, array indices included), queue, host
MAX_PATH = 4096  # characters of cwd, -o and -e: Linux's PATH_MAX
MAX_ARG = 128 << 10  # bytes of one argument or one NAME=value: Linux's MAX_ARG_STRLEN
MAX_EXEC = 1 << 20  # bytes of arguments + environment (exec refuses past ARG_MAX)
MAX_SCRIPT = 1 << 20  # bytes of a job script (bsub < script) or a spooled -is input: stored
MAX_SLOTS = 1 << 16  # -n, before the largest host's slots bound it
MAX_MEMORY = 1 << 60  # bytes of -M (1 EiB)
MAX_PIDS = 1 << 22  # --pids: Linux's largest pid_max
MAX_RETRIES = 1000  # --retries, before the queue's max_retries bounds it
MAX_SECONDS = 366 * 86400  # walltime (--time, -W) and the like: one year
MAX_PRIORITY = (1 << 31) - 1  # -sp, before mbatchd's max_user_priority bounds it


class SpecError(ValueError):
    """A value a job spec may not hold; the message names the field."""


def text(field: str, value: object, limit: int) -> str:
    """`value` if it is a string without NUL of at most `limit` characters."""
    if not isinstance(value, str):
        raise SpecError(f"{field} must be a string")
    if len(value) > limit:
        raise SpecError(f"{field} has {len(value)} characters; at most {limit}")
    if "\0" in value:
        raise SpecError(f"{field} holds a NUL byte")
    return value


def integer(field: str, value: object, low: int, high: int) -> int:
    """`value` if it is an integer (not a boolean) in low..high."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"{field} must be an integer from {low} to {high}")
    return value


def seconds(field: str, value: object, zero: bool = False) -> float:
    """`value` as a float if it is a number (not a boolean) of seconds above 0 (or 0 itself
    if `zero`) and at most MAX_SECONDS."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 <= value if zero else 0 < value)
        or not value <= MAX_SECONDS
    ):
        raise SpecError(
            f"{field} must be a number of seconds above 0 and at most {MAX_SECONDS} (a year)"
        )  # NaN compares false: refused too
    return float(value)


def command_bytes(cmd: list[str]) -> int:
    """The bytes the arguments take at exec (each with its NUL), each checked (`_exec_size`)."""
    return sum(_exec_size(arg, "command argument", i) for i, arg in enumerate(cmd))


def environment_bytes(env: dict[str, object]) -> int:
    """The bytes the environment takes at exec, each NAME=value checked (`_exec_size`), each
    name non-empty and without '=' (exec would split it elsewhere)."""
    size = 0
    for name, value in env.items():
        if not name or "=" in name:
            raise SpecError(f"environment name {name[:40]!r} must be non-empty, without '='")
        if not isinstance(value, str):
            raise SpecError(f"environment variable {_shown(name)} must be a string")
        size += _exec_size(f"{name}={value}", "environment variable", name)
    return size


def _exec_size(value: str, kind: str, key: str | int) -> int:
    """Bytes of one exec string and its NUL; a NUL inside, or past MAX_ARG, is refused with
    the string named (`kind` `key`: command argument 3, environment variable HOME)."""
    if "\0" in value:
        raise SpecError(f"{kind} {_shown(key)} holds a NUL byte")
    size = (len(value) if value.isascii() else len(value.encode(errors="replace"))) + 1
    if size > MAX_ARG:
        raise SpecError(f"{kind} {_shown(key)} has {size} bytes; exec takes at most {MAX_ARG}")
    return size


def _shown(key: str | int) -> str | int:
    """An argument's number, or an environment name as Python writes it (a NUL shows)."""
    return repr(key[:40]) if isinstance(key, str) else key


def check_exec_size(size: int) -> None:
    """Arguments and environment of `size` bytes fit exec, with room for what sbatchd adds."""
    if size > MAX_EXEC:
        raise SpecError(f"command and environment take {size} bytes; at most {MAX_EXEC} (1 MiB)")
