"""Job arrays, LSF syntax: `-J "name[1-1000:2,2000]%50"`.

An array is ONE object (one store row) however many elements it has. Its indices are kept as
ranges and handed out in order by a cursor; an element becomes a Job only when it is dispatched
or changed (killed alone), so a 100,000-element array costs one row and one pending entry.

Element ids: an element is the job `array_id << 32 | index` (model.element_id), so it needs no
id of its own, sorts after every plain job, and `ID[INDEX]` maps to one integer on the wire.
"""

import bisect
import re

from lavalite.model import DONE, FAILED, KILLED, MAX_INDEX, PEND, RUN, element_id

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from lavalite.resreq import Needs

MAX_ELEMENTS = 1_000_000  # LSF's MAX_JOB_ARRAY_SIZE is configurable; this is ours
_NAME = re.compile(r"^(?P<name>[^\[\]]*)\[(?P<spec>[^\[\]]+)\](?:%(?P<throttle>\d+))?$")
_LABEL = re.compile(r"^(\d+)(?:\[(\d+)\])?$")
Range = tuple[int, int, int]  # (first, last, step)


class ArrayError(ValueError):
    pass


def parse_label(text: str) -> int:
    """'42' or '42[7]' -> the job id on the wire; ArrayError otherwise."""
    m = _LABEL.match(text.strip())
    if not m or int(m.group(1)) <= 0 or int(m.group(1)) > MAX_INDEX:
        raise ArrayError(f"{text!r} is not a job id (ID or ID[INDEX])")
    if m.group(2) is None:
        return int(m.group(1))
    index = int(m.group(2))
    if not 1 <= index <= MAX_INDEX:
        raise ArrayError(f"{text!r}: an array index is 1..{MAX_INDEX}")
    return element_id(int(m.group(1)), index)


def name_pattern(text: str) -> "re.Pattern[str]":
    """bjobs -J NAME as LSF reads it: `*` matches any characters, nothing else is special (an
    element's name is `arr[1]`)."""
    return re.compile("^" + ".*".join(map(re.escape, text.split("*"))) + "$")


def parse_name(text: str) -> tuple[str, list[Range] | None, int]:
    """'name[1-10:2,20]%5' -> (name, ranges, throttle); (text, None, 0) if it names no array.
    ranges: [(first, last, step)] in submission order."""
    if "[" not in text:
        return text, None, 0
    m = _NAME.match(text)
    if not m:
        raise ArrayError(f"bad job array name {text!r} (use NAME[1-100:2,200]%LIMIT)")
    ranges = parse_ranges(m.group("spec"))
    throttle = m.group("throttle")
    return m.group("name"), ranges, 0 if throttle is None else parse_throttle(throttle)


def parse_throttle(text: str) -> int:
    """%LIMIT: running elements at most, 1..MAX_ELEMENTS (an array has no more)."""
    if not 1 <= int(text) <= MAX_ELEMENTS:
        raise ArrayError(f"an array's %LIMIT must be from 1 to {MAX_ELEMENTS}")
    return int(text)


def parse_new_name(text: str) -> tuple[str, int]:
    """bmod -J of an array: 'name', 'name%LIMIT' or '%LIMIT' -> (the new name, '' to keep it;
    the new throttle, 0 to keep it). Its indices are what it was submitted with."""
    if "[" in text or "]" in text:
        raise ArrayError("-J: the index list of a job array cannot be changed")
    name, percent, limit = text.rpartition("%")
    if not percent or not limit.isdigit():
        return text, 0
    return name, parse_throttle(limit)


def parse_ranges(spec: str) -> list[Range]:
    ranges: list[Range] = []
    total = 0
    for part in spec.split(","):
        body, _, step_text = part.strip().partition(":")
        first_text, _, last_text = body.partition("-")
        try:
            first, last = int(first_text), int(last_text or first_text)
            step = int(step_text or 1)
        except ValueError:
            raise ArrayError(f"bad array index {part!r} (use N, N-M or N-M:STEP)") from None
        if not 1 <= first <= last <= MAX_INDEX or step < 1:
            raise ArrayError(
                f"bad array index {part!r}: indices are 1..{MAX_INDEX}, first <= last, step >= 1"
            )
        ranges.append((first, last, step))
        total += (last - first) // step + 1
        if total > MAX_ELEMENTS:
            raise ArrayError(f"an array has at most {MAX_ELEMENTS} elements")
    return ranges


def format_ranges(ranges: list[Range]) -> str:
    return ",".join(
        f"{a}" if a == b else f"{a}-{b}" + (f":{s}" if s != 1 else "") for a, b, s in ranges
    )


class Array:
    """A job array in mbatchd's memory. It sits in its queue's pending FIFO as one entry while
    `remaining` > 0 (its `state` is PEND then); the scheduler takes elements from it.

    cursor: how many indices (in order) have been handed out; skip: indices past the cursor
    that exist already as elements (killed alone), passed over when the cursor reaches them.
    counts: elements that exist, by state; `running` is what the throttle limits.
    Duck-types a Job where the scheduler and bjobs look (state, slots, pend_seq, array)."""

    __slots__ = (
        "id",
        "req_id",
        "user",
        "uid",
        "queue",
        "name",
        "spec",
        "slots",
        "max_attempts",
        "submit_time",
        "ranges",
        "indices",
        "starts",
        "total",
        "cursor",
        "skip",
        "throttle",
        "killed",
        "end_time",
        "counts",
        "live",
        "pend_seq",
        "eligible_time",
        "stored",
        "needs",
    )

    def __init__(
        self,
        id: int,
        user: str,
        uid: int | None,
        queue: str,
        name: str,
        spec: dict,
        ranges: list[Range],
        *,
        throttle: int = 0,
        req_id: str | None = None,
        slots: int = 1,
        max_attempts: int = 1,
        submit_time: float = 0.0,
        cursor: int = 0,
        killed: bool = False,
        end_time: float | None = None,
    ) -> None:
        self.id, self.req_id, self.user, self.uid = id, req_id, user, uid
        self.queue, self.name, self.spec, self.slots = queue, name, spec, slots
        self.max_attempts, self.submit_time = max_attempts, submit_time
        self.ranges = ranges
        self.indices = format_ranges(ranges)
        self.starts: list[int] = []  # position of each range's first index
        self.total = 0
        for first, last, step in ranges:
            self.starts.append(self.total)
            self.total += (last - first) // step + 1
        self.cursor, self.throttle = cursor, throttle
        self.skip: set[int] = set()
        self.killed, self.end_time = killed, end_time
        self.counts = {PEND: 0, RUN: 0, DONE: 0, FAILED: 0, KILLED: 0}
        self.live: set[int] = set()  # indices of elements not finished
        self.pend_seq = 0
        self.eligible_time = 0.0  # as a job's: an array is never in retry backoff
        self.stored = False
        self.needs: Needs | None = None  # its elements' -R, -m, -x (as a job's)

    @classmethod
    def from_record(cls, rec: dict) -> "Array":
        """From a store row (store.load's dict)."""
        arr = cls(
            rec["id"],
            rec["user"],
            rec["uid"],
            rec["queue"],
            rec["name"],
            rec["spec"],
            parse_ranges(rec["indices"]),
            throttle=rec["throttle"],
            req_id=rec["req_id"],
            slots=rec["slots"],
            max_attempts=rec["max_attempts"],
            submit_time=rec["submit_time"],
            cursor=rec["cursor"],
            killed=bool(rec["killed"]),
            end_time=rec["end_time"],
        )
        arr.skip = set(rec["skip"])
        arr.counts.update(rec["counts"])
        arr.pend_seq = rec["pend_seq"]
        arr.stored = True
        return arr

    @property
    def array(self) -> "Array":
        """The array whose throttle applies: for the scheduler, an array and its elements alike."""
        return self

    @property
    def running(self) -> int:
        return self.counts[RUN]

    @property
    def remaining(self) -> int:
        """Indices not yet handed out (none once the array is killed)."""
        return 0 if self.killed else self.total - self.cursor - len(self.skip)

    @property
    def state(self) -> str:
        return PEND if self.remaining > 0 else RUN

    @property
    def finished(self) -> bool:
        return self.remaining == 0 and not (self.counts[PEND] or self.counts[RUN])

    def index_at(self, pos: int) -> int:
        r = bisect.bisect_right(self.starts, pos) - 1
        first, _, step = self.ranges[r]
        return first + (pos - self.starts[r]) * step

    def position(self, index: int) -> int | None:
        """The position of `index` in the array, or None if it is no index of it."""
        for (first, last, step), start in zip(self.ranges, self.starts):
            if first <= index <= last and (index - first) % step == 0:
                return start + (index - first) // step
        return None

    def take(self) -> int:
        """Hand out the next index (the caller makes the element)."""
        while True:
            index = self.index_at(self.cursor)
            self.cursor += 1
            if index in self.skip:
                self.skip.discard(index)
            else:
                return index

    def summary(self) -> dict:
        """bjobs -A's counts: PEND includes indices not handed out; EXIT is FAILED + KILLED
        (LSF counts a killed element as EXIT), including indices killed with the array."""
        c = self.counts
        never = self.total - self.cursor - len(self.skip) if self.killed else 0
        return {
            "id": self.id,
            "name": self.name,
            "user": self.user,
            "queue": self.queue,
            "total": self.total,
            "pend": c[PEND] + self.remaining,
            "run": c[RUN],
            "done": c[DONE],
            "exit": c[FAILED] + c[KILLED] + never,
            "throttle": self.throttle,
            "indices": self.indices,
        }
