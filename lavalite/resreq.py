"""LSF's resource requirement string (bsub -R), -m host lists and what a job asks of its hosts.

Pure: no I/O. The CLI parses to refuse a bad string before anything is sent; mbatchd parses
again (the CLI is not trusted) and keeps the result with the job (`Needs`), which the scheduler
reads. Sections, as LSF 10.1 writes them:

    select[EXPR]    hosts whose facts satisfy EXPR (a string without sections is a select)
    order[[-]IDX:...]  candidate hosts, best first by each index (- reverses)
    rusage[mem=N]   memory reserved per slot while the job runs (MB, or with a unit)
    span[hosts=1] | span[ptile=N]   one host / N slots on each host

Host facts are LSF's load indices in LSF's units: mem, maxmem, swp, maxswp, tmp, maxtmp in MB;
ncpus, maxcpus; r15s, r1m, r15m (run queue length); ut (0 to 1); pg (pages swapped a second),
ls (login users), it (idle minutes); and the strings type and model.
Any other name is a boolean resource: a host label from lim.conf's [labels].
"""

from __future__ import annotations

import re

# typing's own flag would cost bsub typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Facts = dict[str, Any]
    Test = Callable[[Facts], Any]

MB = 1 << 20
# Numeric load indices, and whether a larger value is the better host (order[] sorts best first).
NUMERIC = {
    "mem": True,
    "maxmem": True,
    "swp": True,
    "maxswp": True,
    "tmp": True,
    "maxtmp": True,
    "ncpus": True,
    "maxcpus": True,
    "r15s": False,
    "r1m": False,
    "r15m": False,
    "ut": False,
    "pg": False,
    "ls": False,
    "it": True,
}
STRINGS = ("type", "model")
ALIASES = {"swap": "swp", "cpu": "r1m"}  # LSF's other names of load indices
SECTIONS = ("select", "order", "rusage", "span")
UNSUPPORTED = ("same", "cu", "affinity")  # LSF sections LavaLite does not take
_UNITS = {"": 1, "K": 1 << 10, "M": MB, "G": 1 << 30, "T": 1 << 40}
_TOKEN = re.compile(
    r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_.]*)|(==|!=|<=|>=|&&|\|\||[<>!()]))"
)


class ResReqError(ValueError):
    """A string LavaLite refuses: the message names the token or the feature."""


def _bad(detail: str) -> ResReqError:
    return ResReqError(f"Bad resource requirement syntax: {detail}")


class ResReq:
    """A parsed -R string. select: a test over a host's facts (None: any host); mem: bytes
    reserved per slot (0: none); span_hosts: 1 to keep the job on one host (0: free);
    ptile: slots per host (0: free); order: (index, larger is better) pairs, first key first."""

    __slots__ = ("select", "mem", "span_hosts", "ptile", "order")

    def __init__(self) -> None:
        self.select: Test | None = None
        self.mem = 0
        self.span_hosts = 0
        self.ptile = 0
        self.order: tuple[tuple[str, bool], ...] = ()


def parse(text: str) -> ResReq:
    """The -R string `text` as a ResReq, or ResReqError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise _bad("empty string")
    stripped = text.strip()
    if stripped.startswith("{") or re.match(r"\d+\s*\*\s*\{", stripped):
        raise ResReqError(
            "compound and alternative resource requirements ({...} || {...}, N*{...}) "
            "are not supported"
        )
    req = ResReq()
    bare, sections = _split(stripped)
    if bare and "select" in sections:
        raise _bad(f"'{bare}' before select[]")
    if bare:
        sections["select"] = bare
    for name, body in sections.items():
        _SECTION_PARSERS[name](req, body)
    return req


def _split(text: str) -> tuple[str, dict[str, str]]:
    """(the leading text outside any section, {section: its body})."""
    sections: dict[str, str] = {}
    first = re.search(r"[A-Za-z_]+\s*\[", text)
    bare, rest = (text[: first.start()], text[first.start() :]) if first else (text, "")
    while rest.strip():
        m = re.match(r"\s*([A-Za-z_]+)\s*\[([^\[\]]*)\]", rest)
        if m is None:
            unclosed = re.match(r"\s*[A-Za-z_]+\s*\[[^\]]*$", rest)
            raise _bad(f"{'missing ] in' if unclosed else 'at'} '{rest.strip()[:40]}'")
        name = m.group(1)
        if name in UNSUPPORTED:
            raise ResReqError(f"the {name}[] section of -R is not supported")
        if name not in SECTIONS:
            raise _bad(f"unknown section '{name}[]'")
        if name in sections:
            raise _bad(f"{name}[] given twice")
        sections[name] = m.group(2).strip()
        rest = rest[m.end() :]
    return bare.strip(), sections


def _select(req: ResReq, body: str) -> None:
    if body:
        req.select = _Parser(body).parse()


def _order(req: ResReq, body: str) -> None:
    keys = []
    for key in body.split(":") if body else []:
        key = key.strip()
        name = key.lstrip("-").strip()
        name = ALIASES.get(name, name)
        if name not in NUMERIC:
            raise _bad(f"order[] takes load indices ({', '.join(NUMERIC)}), not '{key}'")
        keys.append((name, NUMERIC[name] != key.startswith("-")))
    req.order = tuple(keys)


def _rusage(req: ResReq, body: str) -> None:
    if "||" in body or "/" in body:
        raise ResReqError("alternative or per-host/per-task rusage[] is not supported")
    for item in body.split(","):
        item = item.strip()
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq:
            raise _bad(f"rusage[] takes NAME=VALUE, not '{item}'")
        if name != "mem":
            raise ResReqError(f"rusage[{name}] is not supported (only rusage[mem=N])")
        if ":" in value:
            raise ResReqError(f"rusage[] options ('{value.strip()}') are not supported")
        req.mem = mem_bytes(value.strip())


def mem_bytes(text: str) -> int:
    """A memory amount as LSF writes it: MB by default, or with a unit K, M, G, T (B optional)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.strip(), re.IGNORECASE)
    if m is None or float(m.group(1)) <= 0:
        raise _bad(f"memory '{text}' (a positive number of MB, or with a unit: 512M, 2G)")
    unit = m.group(2).upper()
    return int(float(m.group(1)) * (_UNITS[unit] if unit else MB))


def _span(req: ResReq, body: str) -> None:
    name, _, value = body.partition("=")
    name, value = name.strip(), value.strip()
    if name not in ("hosts", "ptile") or not value.isdigit() or int(value) < 1:
        raise ResReqError(f"span[{body}] is not supported (span[hosts=1] or span[ptile=N], N >= 1)")
    if name == "hosts":
        if value != "1":
            raise ResReqError(f"span[hosts={value}] is not supported (only span[hosts=1])")
        req.span_hosts = 1
    else:
        req.ptile = int(value)


_SECTION_PARSERS: dict[str, Callable[[ResReq, str], None]] = {
    "select": _select,
    "order": _order,
    "rusage": _rusage,
    "span": _span,
}


class _Parser:
    """select's expression, compiled to nested closures over a host's facts. A comparison
    with an index the host does not report is false (LSF: the host does not qualify)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise _bad(f"at '{text[pos:].strip()[:20]}' in select[{text}]")
            self.tokens.append(m.group(m.lastindex or 0))
            pos = m.end()
        self.i = 0

    def parse(self) -> Test:
        test = self._or()
        if self.i < len(self.tokens):
            raise _bad(f"unexpected '{self.tokens[self.i]}' in select[{self.text}]")
        return test

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _next(self) -> str:
        tok = self._peek()
        if tok is None:
            raise _bad(f"select[{self.text}] ends too soon")
        self.i += 1
        return tok

    def _or(self) -> Test:
        return self._chain("||", self._and, any)

    def _and(self) -> Test:
        return self._chain("&&", self._not, all)

    def _chain(self, op: str, part: Callable[[], Test], combine: Callable[..., bool]) -> Test:
        """part (op part)*: one test, or their combination (any for ||, all for &&)."""
        parts = [part()]
        while self._peek() == op:
            self.i += 1
            parts.append(part())
        return parts[0] if len(parts) == 1 else lambda f: combine(p(f) for p in parts)

    def _not(self) -> Test:
        if self._peek() == "!":
            self.i += 1
            inner = self._not()
            return lambda f: not inner(f)
        return self._compare()

    def _compare(self) -> Test:
        if self._peek() == "(":
            self.i += 1
            inner = self._or()
            if self._next() != ")":
                raise _bad(f"missing ')' in select[{self.text}]")
            return inner
        left = self._atom()
        op = self._peek()
        if op not in _COMPARE:
            return _boolean(left)
        self.i += 1
        right = self._atom()
        return _comparison(left, op, right, self.text)

    def _atom(self) -> str:
        tok = self._next()
        if tok == "defined":
            if self._next() != "(":
                raise _bad(f"defined needs '(' in select[{self.text}]")
            name = self._next()
            if self._next() != ")":
                raise _bad(f"missing ')' after defined({name} in select[{self.text}]")
            return f"defined:{name}"
        if tok in _COMPARE or tok in ("&&", "||", "!", "(", ")"):
            raise _bad(f"unexpected '{tok}' in select[{self.text}]")
        return tok


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _number(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def _boolean(tok: str) -> Test:
    """A name alone: defined(x), a numeric index (true when non-zero, as LSF) or a label."""
    if tok.startswith("defined:"):
        name = tok[len("defined:") :]
        return lambda f: name in f or name in f.get("labels", ())
    if tok in NUMERIC:
        return lambda f: bool(f.get(tok))
    if tok in STRINGS or _number(tok) is not None:
        raise _bad(f"'{tok}' is not a boolean resource")
    return lambda f: tok in f.get("labels", ())


def _comparison(left: str, op: str, right: str, text: str) -> Test:
    compare = _COMPARE[op]
    if left in STRINGS or right in STRINGS:  # type==X86_64: the other side is a literal
        name, value = (left, right) if left in STRINGS else (right, left)
        if op not in ("==", "!="):
            raise _bad(f"'{name}' compares with == or != only, in select[{text}]")
        if value == "any":
            return lambda f: op == "=="
        if value == "local":  # the submission host's: LavaLite does not know it here
            raise ResReqError(f"{name}==local is not supported: name the {name}, or any")
        return lambda f: name in f and compare(f[name], value)
    a, b = _operand(left, text), _operand(right, text)
    return lambda f: _both(a(f), b(f), compare)


def _both(a: float | None, b: float | None, compare: Callable[[Any, Any], bool]) -> bool:
    return a is not None and b is not None and compare(a, b)


def _operand(tok: str, text: str) -> Callable[[Facts], float | None]:
    value = _number(tok)
    if value is not None:
        return lambda f: value
    tok = ALIASES.get(tok, tok)
    if tok not in NUMERIC:
        raise _bad(f"'{tok}' is no numeric load index ({', '.join(NUMERIC)}) in select[{text}]")
    return lambda f: f.get(tok)


def host_facts(load: dict[str, Any], labels: list[str]) -> Facts:
    """A host's facts from LIM's load report (roles/lim.py), in LSF's units. What the host
    did not report is absent."""
    facts: Facts = {"labels": frozenset(labels)}
    for index, key, scale in (
        ("mem", "mem_avail", MB),
        ("maxmem", "mem_total", MB),
        ("swp", "swap_free", MB),
        ("maxswp", "swap_total", MB),
        ("tmp", "tmp_free", MB),
        ("maxtmp", "tmp_total", MB),
        ("ut", "cpu", 1),
    ):
        if load.get(key) is not None:
            facts[index] = load[key] / scale
    if load.get("ncpu"):
        facts["ncpus"] = facts["maxcpus"] = load["ncpu"]
    averages = load.get("loadavg")
    if averages:
        facts["r15s"], facts["r1m"], facts["r15m"] = averages[0], averages[0], averages[2]
    for index in ("r15s", "pg", "ls", "it"):  # LIM's own (lavalite.loadindex): r15s over 15 s
        if load.get(index) is not None:
            facts[index] = load[index]
    for name in STRINGS:
        if load.get(name):
            facts[name] = load[name]
    return facts


def queue_req(text: str) -> ResReq:
    """A queue's res_req (LSF's RES_REQ): the select[] and order[] of its jobs without -R."""
    req = parse(text)
    if req.mem or req.span_hosts or req.ptile:
        raise ResReqError("a queue's res_req takes select[] and order[] only")
    return req


def parse_hosts(text: str) -> dict[str, int]:
    """-m "host1 host2+2 ...": {host: preference level} (higher first; 0 without +N)."""
    hosts: dict[str, int] = {}
    for word in text.split():
        name, plus, level = word.partition("+")
        if name == "others" or name.startswith("~"):
            raise ResReqError(f"-m: '{word}' is not supported (host names only, no groups)")
        if not name or (plus and not (level == "" or level.isdigit())):
            raise ResReqError(f"-m: bad host specification '{word}' (HOST or HOST+LEVEL)")
        hosts[name] = int(level or 1) if plus else 0
    if not hosts:
        raise ResReqError("-m: no host given")
    return hosts


class Needs:
    """What a job asks of its hosts beyond free slots; None for a job that asks nothing
    (the common case, which the scheduler places on its fast path)."""

    __slots__ = ("req", "hosts", "exclusive", "slots_min", "slots_max")

    def __init__(
        self,
        req: ResReq | None,
        hosts: dict[str, int] | None,
        exclusive: bool,
        slots_min: int,
        slots_max: int,
    ) -> None:
        self.req = req
        self.hosts = hosts  # -m: host -> preference level
        self.exclusive = exclusive
        self.slots_min = slots_min
        self.slots_max = slots_max


def needs(spec: dict[str, Any], slots: int) -> Needs | None:
    """A stored spec's Needs (resreq, asked_hosts, exclusive, slots_max), None if it has none.
    The spec was checked at submit: this raises ResReqError only for a spec never checked."""
    text, asked = spec.get("resreq"), spec.get("asked_hosts")
    exclusive, slots_max = bool(spec.get("exclusive")), spec.get("slots_max") or slots
    if text is None and asked is None and not exclusive and slots_max == slots:
        return None
    return Needs(parse(text) if text is not None else None, asked, exclusive, slots, slots_max)
