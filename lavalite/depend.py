"""LSF's job dependency expressions (bsub -w), parsed and written back: pure, stdlib only.

    done(312) && (started("Job2") || exit(99Job, != 0)) && !ended(7[3]) && numdone(8, >= 5)

A condition names a job by id (`12`), array element or index range (`12[3]`, `12[1-10:2]`),
or name (`"name"`, `name`, `prefix*`); a bare job is done(job). `&&`, `||`, `!` and
parentheses combine them (`!` binds tightest, then `&&`, then `||`). The CLI parses to refuse
bad syntax before anything is sent; mbatchd parses again, resolves names to job ids
(`resolve`) and keeps the resolved text in the job's spec, so that a restart reads the same
jobs back (roles/mbatchd/depends.py evaluates it).

The tree is plain tuples:
    ("and", [node, ...]) | ("or", [node, ...]) | ("not", node)
    ("cond", kind, target, op, number)
target: ("id", job id, ranges or None) | ("name", text, ranges or None); op and number: the
exit code test of exit() (None, None: any code), or the count test of num*() (number None
for `*`, every element).
"""

import re
from collections.abc import Callable

from lavalite.job_array import ArrayError, Range, format_ranges, parse_ranges
from lavalite.model import MAX_INDEX

SYNTAX = "Dependency condition syntax error"
# conditions on one job, an element, a range of elements or a whole array
JOB_CONDITIONS = ("done", "ended", "exit", "started")
# LSF's counts over a job array's elements: numdone(ID, >= 5), numrun(ID, *)
COUNT_CONDITIONS = ("numdone", "numended", "numexit", "numpend", "numrun", "numstart")
# LSF has these; LavaLite has no post-execution, external status or held elements
REFUSED = {
    "post_done": "post-execution processing (bsub -Ep) is not supported",
    "post_err": "post-execution processing (bsub -Ep) is not supported",
    "external": "external job status is not supported",
    "numhold": "held array elements are not supported",
}
OPS = ("==", "!=", "<=", ">=", "<", ">")
MAX_TEXT = 64 << 10  # characters of an expression as given (names may resolve to more)
MAX_DEPTH = 64  # parentheses and ! nested: the parser and evaluator recurse that deep

Target = tuple[str, int | str, list[Range] | None]
Node = tuple
Find = Callable[[str], list[int]]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\)|,)
      | "(?P<quoted>[^"]*)"
      | (?P<word>[A-Za-z0-9_.*+:@%/-]+(?:\[[^\]]*\])?)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
# The shape nearly every pipeline writes, `done(123)` or `123`: read without the tokenizer
_ONE_JOB = re.compile(r"\s*(?:(done|ended|exit|started)\s*\(\s*([0-9]+)\s*\)|([0-9]+))\s*")
_JOB_ID = re.compile(r"^([0-9]+)(?:\[([^\]]*)\])?$")
_NAME = re.compile(r"^([^\[\]]+)(?:\[([^\]]*)\])?$")


class DependError(ValueError):
    """A -w expression LavaLite cannot take; the message points at the token."""


class _Tokens:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str, int]] = []  # (kind, value, column)
        pos = 0
        while True:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                break
            kind = m.lastgroup or "bad"
            self.items.append((kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def nest(self, tok: tuple[str, str, int] | None) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(tok, f"more than {MAX_DEPTH} levels of ( and !")

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise self.error(None)
        self.i += 1
        return tok

    def accept(self, op: str) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            raise self.error(self.peek())

    def error(self, tok: tuple[str, str, int] | None, why: str = "") -> DependError:
        where = "at the end" if tok is None else f'at "{tok[1]}" (column {tok[2]})'
        return DependError(f"{SYNTAX} {where} of '{self.text}'" + (f": {why}" if why else ""))


def parse(text: str, resolved: bool = False) -> Node:
    """The tree of a -w expression, or DependError naming the token it could not take.
    `resolved`: a job's stored condition, whose names `resolve` made ids: of any length."""
    if not isinstance(text, str) or not text.strip():
        raise DependError(f"{SYNTAX}: the expression is empty")
    if len(text) > MAX_TEXT and not resolved or "\0" in text:
        raise DependError(f"{SYNTAX}: at most {MAX_TEXT} characters, without NUL")
    m = _ONE_JOB.fullmatch(text)
    if m and 0 < int(m.group(2) or m.group(3)) <= MAX_INDEX:
        return (
            "cond",
            m.group(1) or "done",
            ("id", int(m.group(2) or m.group(3)), None),
            None,
            None,
        )
    tokens = _Tokens(text)
    tree = _or(tokens)
    tok = tokens.peek()
    if tok is not None:
        raise tokens.error(tok)
    return tree


def _or(t: _Tokens) -> Node:
    items = [_and(t)]
    while t.accept("||"):
        items.append(_and(t))
    return items[0] if len(items) == 1 else ("or", items)


def _and(t: _Tokens) -> Node:
    items = [_unary(t)]
    while t.accept("&&"):
        items.append(_unary(t))
    return items[0] if len(items) == 1 else ("and", items)


def _unary(t: _Tokens) -> Node:
    tok = t.peek()
    if t.accept("!"):
        t.nest(tok)
        node: Node = ("not", _unary(t))
    elif t.accept("("):
        t.nest(tok)
        node = _or(t)
        t.expect(")")
    else:
        return _condition(t)
    t.depth -= 1
    return node


def _condition(t: _Tokens) -> Node:
    tok = t.take()
    kind, value, _ = tok
    if kind == "word" and t.accept("("):
        name = value.lower()
        if name in REFUSED:
            raise DependError(f"-w: {value}(): {REFUSED[name]}")
        if name not in JOB_CONDITIONS + COUNT_CONDITIONS:
            raise t.error(tok, "no such condition")
        target = _target(t, t.take())
        op, number = _test(t, name)
        t.expect(")")
        return ("cond", name, target, op, number)
    return ("cond", "done", _target(t, tok), None, None)  # LSF: a bare job means done()


def _target(t: _Tokens, tok: tuple[str, str, int]) -> Target:
    kind, value, _ = tok
    if kind == "word":
        m = _JOB_ID.match(value)
        if m:
            job_id = int(m.group(1))
            if not 0 < job_id <= MAX_INDEX:
                raise t.error(tok, "not a job id")
            return ("id", job_id, _ranges(t, tok, m.group(2)))
        if value[0].isdigit():  # LSF: a name that begins with a digit is written "quoted"
            raise t.error(tok, 'quote a job name that begins with a digit ("99Job")')
    if kind not in ("word", "quoted"):
        raise t.error(tok)
    m = _NAME.match(value.strip())
    if not m or "*" in m.group(1)[:-1]:
        raise t.error(tok, "a job name takes * only at its end")
    return ("name", m.group(1), _ranges(t, tok, m.group(2)))


def _ranges(t: _Tokens, tok: tuple[str, str, int], text: str | None) -> list[Range] | None:
    if text is None:
        return None
    if text.strip() == "*":
        raise DependError(
            f"-w: {tok[1]}: one-to-one array dependencies (ID[*]) are not supported; "
            "name the indices (ID[1-10]) or the whole array (ID)"
        )
    try:
        return parse_ranges(text)
    except ArrayError as exc:
        raise t.error(tok, str(exc)) from None


def _test(t: _Tokens, name: str) -> tuple[str | None, int | None]:
    """exit()'s optional `[op] code`, num*()'s required `op number` or `*`."""
    if not t.accept(","):
        if name in COUNT_CONDITIONS:
            raise t.error(t.peek(), f"{name}() takes a count: {name}(ID, >= N) or {name}(ID, *)")
        return None, None
    if name not in ("exit",) + COUNT_CONDITIONS:
        raise t.error(t.peek(), f"{name}() takes one job")
    tok = t.take()
    if name in COUNT_CONDITIONS and tok[1] == "*" and tok[0] == "word":
        return "==", None
    op = "=="
    if tok[0] == "op" and tok[1] in OPS:
        op, tok = tok[1], t.take()
    if tok[0] != "word" or not tok[1].isdigit() or int(tok[1]) > MAX_INDEX:
        raise t.error(tok, "a number is expected")
    return op, int(tok[1])


def compare(value: int, op: str, number: int) -> bool:
    """`value op number`, op one of OPS."""
    if op == "==":
        return value == number
    if op == "!=":
        return value != number
    if op == "<":
        return value < number
    if op == "<=":
        return value <= number
    if op == ">":
        return value > number
    return value >= number


def resolve(tree: Node, find: Find) -> Node:
    """The tree with every job name replaced by the ids `find(name)` returns (the submitter's
    jobs of that name, or whose name starts with `prefix` for `prefix*`). A name of several
    jobs means all of them (LSF: each must satisfy the test). `find` raises DependError for a
    name nobody has."""
    kind = tree[0]
    if kind in ("and", "or"):
        return (kind, [resolve(x, find) for x in tree[1]])
    if kind == "not":
        return ("not", resolve(tree[1], find))
    _, cond, target, op, number = tree
    if target[0] == "id":
        return tree
    conds = [("cond", cond, ("id", job_id, target[2]), op, number) for job_id in find(target[1])]
    return conds[0] if len(conds) == 1 else ("and", conds)


def conditions(tree: Node) -> list[Node]:
    """Every ("cond", ...) node of a tree, in the order written."""
    kind = tree[0]
    if kind in ("and", "or"):
        return [c for x in tree[1] for c in conditions(x)]
    if kind == "not":
        return conditions(tree[1])
    return [tree]


def format(tree: Node) -> str:
    """The text of a tree: what bjobs -l shows, and what parse() reads back the same."""
    kind = tree[0]
    if kind in ("and", "or"):
        sep = " && " if kind == "and" else " || "
        return sep.join(_operand(x, kind) for x in tree[1])
    if kind == "not":
        return "!" + _operand(tree[1], "not")
    _, cond, (tkind, who, ranges), op, number = tree
    job = str(who) if tkind == "id" else f'"{who}"'
    if ranges is not None:
        job += f"[{format_ranges(ranges)}]"
    if op is None:
        return f"{cond}({job})"
    return f"{cond}({job}, {'*' if number is None else f'{op} {number}'})"


def _operand(tree: Node, within: str) -> str:
    """A child in parentheses where the operators' binding would otherwise change it."""
    text = format(tree)
    if tree[0] in ("and", "or") and (within == "not" or tree[0] != within):
        return f"({text})"
    return text
