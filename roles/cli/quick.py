"""A user command's arguments parsed without argparse, when that can be done exactly as argparse
would. Importing argparse (gettext with it, and locale through gettext) and building a parser
was a fifth of what bsub and bjobs spend on top of Python's own start-up.

The commands' setup functions stay as they are: a Quick reads the same add_argument calls, for
the kinds of arguments they use (flags, options taking one value, one positional taking one,
*, + or the rest of the line). Whatever else it meets -- -h, a mistake, an abbreviated or
combined option, an option after a positional, a value starting with '-', a kind of argument
it does not know -- it answers None, and argparse parses the line again and prints its usual
help or error. tests/test_cli_quick.py holds it to argparse's results.

Before either parser reads a line, check_words refuses what argparse would misread (a value
glued to its option, flags run together) and, under an LSF name, the LSF options LavaLite does
not implement (roles.cli.lsf_options).
"""

from types import SimpleNamespace

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from argparse import ArgumentParser, Namespace
    from collections.abc import Callable
    from typing import Any

REMAINDER = "..."  # argparse.REMAINDER
# Options LSF takes more than once (merging them) and LavaLite only once: refused when repeated,
# where argparse would keep the last silently.
ONCE = {"-R": "multiple -R strings are not supported; write one with all its sections"}


class Refused(Exception):
    """A command line refused before any parser reads it; the message names the word (exit 2)."""


class ShowVersion(Exception):
    """-V under an LSF name: the command prints its version and does nothing else (exit 0)."""


class Quick:
    def __init__(self) -> None:
        self.options: dict[
            str, tuple[str, bool, Converter | None]
        ] = {}  # option -> (dest, is_flag, type)
        self.positional: tuple[str, str | None, Converter | None] | None = (
            None  # (dest, nargs, type)
        )
        self.defaults: dict[str, Any] = {}
        self.required: list[str] = []
        self.known = True  # False: some argument is beyond this parser

    def add_argument(
        self,
        *names: str,
        dest: str | None = None,
        action: str | None = None,
        nargs: str | None = None,
        type: "Converter | None" = None,
        default: "Any" = None,
        required: bool = False,
        help: str | None = None,
        metavar: str | None = None,
        **other: "Any",
    ) -> None:
        if other or action not in (None, "store_true") or (type and isinstance(default, str)):
            self.known = False
        elif names[0].startswith("-"):
            dest = dest or next((n for n in names if n.startswith("--")), names[0]).lstrip(
                "-"
            ).replace("-", "_")
            flag = action == "store_true"
            self.known &= nargs is None
            self.options.update((n, (dest, flag, type)) for n in names)
            self.defaults[dest] = False if flag and default is None else default
            if required:
                self.required.append(dest)
        elif (
            self.positional is None
            and nargs in (None, "*", "+", REMAINDER)
            and not action
            and default is None
        ):
            self.positional = (dest or names[0], nargs, type)
        else:
            self.known = False

    def set_defaults(self, **values: "Any") -> None:
        self.defaults.update(values)

    def check_words(self, argv: list[str], prog: str, lsf_name: str | None = None) -> None:
        """Raise Refused for the first word that looks like an option and is none of this
        command's: a value glued to its option or flags run together, which argparse would
        split (`-oo FILE` read as `-o o FILE`), and under an LSF name an LSF option that
        LavaLite does not implement. Words after `--`, and from the first word of a command
        line on (bsub COMMAND ARGS), are not looked at."""
        i, seen = 0, set()
        while i < len(argv) and argv[i] != "--":
            word = argv[i]
            if word.startswith("-") and word != "-":
                if word in ONCE and word in seen and word in self.options:
                    raise Refused(f"{prog}: {word} given more than once: {ONCE[word]}")
                seen.add(word)
                i += 1 + self._takes_value(word, prog, lsf_name)
            elif self.positional and self.positional[1] == REMAINDER:
                return  # the command starts: the rest are its own words
            else:
                i += 1

    def _takes_value(self, word: str, prog: str, lsf_name: str | None) -> bool:
        if word == "-V" and lsf_name is not None and word not in self.options:
            raise ShowVersion
        if word in self.options:  # an implemented LSF option takes a value as in LSF
            return not self.options[word][1]
        if word.startswith("--") or word == "-h":  # argparse refuses an unknown long option
            return False
        # Only a word that is none of the command's own options loads LSF's table: the lines
        # users type all day start no slower for it.
        if lsf_name is not None:
            from roles.cli.lsf_options import OPTIONS

            if word in OPTIONS[lsf_name]:
                raise Refused(f"{prog}: {word} is an LSF option that LavaLite does not support")
        raise Refused(f"{prog}: {word} is not an option of {prog}")

    def parse(self, argv: list[str]) -> SimpleNamespace | None:
        """The namespace argparse would give for argv, or None (leave it to argparse)."""
        if not self.known:
            return None
        values, given, strings = dict(self.defaults), set(), []
        dest, nargs, kind = self.positional or (None, None, None)
        i = 0
        while i < len(argv):
            arg = argv[i]
            positional = not arg.startswith("-") or arg == "-"
            if nargs == REMAINDER and (positional or arg == "--"):
                strings = argv[i:]  # argparse keeps the "--" in a REMAINDER
                break
            if positional:
                strings.append(arg)
                i += 1
                continue
            name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if strings or name not in self.options:
                return None
            opt_dest, flag, opt_type = self.options[name]
            if flag:
                if eq:
                    return None
                values[opt_dest] = True
            else:
                if not eq:
                    i += 1
                    if i == len(argv) or argv[i].startswith("-"):
                        return None
                    value = argv[i]
                values[opt_dest] = _convert(opt_type, value)
                if values[opt_dest] is _BAD:
                    return None
            given.add(opt_dest)
            i += 1
        if any(r not in given for r in self.required) or not _count_ok(nargs, strings, dest):
            return None
        if dest is not None:
            converted = [_convert(kind, s) for s in strings]
            if any(v is _BAD for v in converted):
                return None
            values[dest] = converted[0] if nargs is None else converted
        return SimpleNamespace(**values)


_BAD = object()


def _convert(kind: "Converter | None", text: str) -> "Any":
    if kind is None:
        return text
    try:
        return kind(text)
    except Exception:  # argparse reports it, in its own words
        return _BAD


def _count_ok(nargs: str | None, strings: list[str], dest: str | None) -> bool:
    if dest is None:
        return not strings
    return {None: len(strings) == 1, "+": len(strings) >= 1}.get(nargs, True)


if TYPE_CHECKING:
    Converter = Callable[[str], Any]  # an argument's type=: str -> its value
    Parser = ArgumentParser | Quick  # what a command's setup fills: argparse's, or a Quick
    Args = Namespace | SimpleNamespace  # what a command receives: either's parse
    Command = Callable[[Args], int | None]  # a command's function: its exit status (None: 0)
