"""Wire protocol: a 4-byte big-endian length, then one JSON object (after a login, followed by
the session's MAC: lavalite.auth.Session).

Requests carry {"v": 2, "op": ..., "id": ...}; replies carry the request's id and "ok".
One-way messages (dispatch, report, ack) are requests nobody answers. Every malformed input
becomes a ProtocolError, which the receiver turns into an error reply (framing intact) or a
closed connection (framing lost): never a crash, never a half-applied change.
"""

import json
import struct

# typing's own flag would cost every command typing's import; mypy takes any TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from lavalite.auth import Session

VERSION = 2
MAX_FRAME = 64 << 20
# jobs in one page of a `jobs` answer at most (bjobs asks page by page): one short step of
# mbatchd's loop, a frame far below MAX_FRAME
MAX_JOBS_PAGE = 10_000
# a frame's limit until the peer's hello is verified: a stranger cannot make a daemon buffer
# (or hash, to check a signature) more than this
STRANGER_FRAME = 64 << 10
# seconds a stream of reports is gathered into one frame: each frame costs its receiver a
# turn (a store transaction in mbatchd); a lone report still goes out at once
GATHER = 0.004
_HDR = struct.Struct(">I")

# Error codes in {"ok": false, "error": {"code": ..., "message": ...}}
BAD_FRAME = "bad_frame"
TOO_BIG = "frame_too_big"
BAD_VERSION = "bad_version"
UNKNOWN_OP = "unknown_op"
BAD_REQUEST = "bad_request"
AUTH = "auth"
NOT_FOUND = "not_found"
DENIED = "permission_denied"
UNAVAILABLE = "unavailable"
NOT_RUNNING = "not_running"
WRONG_STATE = "wrong_state"  # a job control that the job's state does not allow
INTERNAL = "internal"
REDIRECT = "redirect"  # a non-master: the error carries "master", the host to dial instead
STALE_EPOCH = "stale_epoch"  # an order from a deposed master (an older fencing epoch)


class ProtocolError(Exception):
    """An error to send back as a typed error reply. `fatal` closes the connection after it."""

    def __init__(self, code: str, message: str, fatal: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


# The codec, chosen here and only here. A user command (a fresh process per command) uses the
# standard library's json: importing orjson costs a new process ~30 ms, more than all of a
# command's messages save. The daemons call use_orjson() once: they encode and decode all day.
# Both write the same compact JSON, so either side reads the other.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_SORTED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def dumps(obj: "Any", /) -> bytes:  # positional, as orjson.dumps that replaces it
    return _JSON.encode(obj).encode()


def dumps_sorted(obj: "Any") -> bytes:
    """The same JSON with every object's keys in order: equal contents, equal bytes."""
    return _SORTED.encode(obj).encode()


loads: "Callable[[bytes | str], Any]" = json.loads  # or orjson's (use_orjson)


def use_orjson() -> None:
    """Switch this process to orjson (daemons); falls back silently where it is missing."""
    global dumps, dumps_sorted, loads
    try:
        import orjson
    except ImportError:
        return
    dumps, loads = orjson.dumps, orjson.loads

    def dumps_sorted(obj: "Any") -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def encode(msg: "Mapping[str, Any]", session: "Session | None" = None) -> bytes:
    """One frame; sealed with `session` (a lavalite.auth.Session) once there is one."""
    body = dumps(msg) if session is None else session.seal(dumps(msg))
    return _HDR.pack(len(body)) + body


def reply(req_id: "Any", **fields: "Any") -> "dict[str, Any]":
    return {"v": VERSION, "id": req_id, "ok": True, **fields}


def error(req_id: "Any", code: str, message: str) -> "dict[str, Any]":
    return {"v": VERSION, "id": req_id, "ok": False, "error": {"code": code, "message": message}}


def check_message(msg: "Any") -> "dict[str, Any]":
    """Validate the envelope of a decoded frame; the op's own fields are checked by its handler."""
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_FRAME, "a frame must hold a JSON object")
    if msg.get("v") != VERSION:
        raise ProtocolError(
            BAD_VERSION,
            f"protocol version {msg.get('v')!r} is not supported; "
            f"upgrade (this side speaks {VERSION})",
            fatal=True,
        )
    if "op" not in msg and "ok" not in msg:
        raise ProtocolError(BAD_FRAME, "a frame needs 'op' (request) or 'ok' (reply)")
    return msg


class Decoder:
    """Incremental frame splitter: feed bytes, get messages or ProtocolErrors in order."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self.buf = bytearray()
        self.max_frame = max_frame
        self.session: Session | None = (
            None  # once logged in: each frame's MAC is checked before decoding
        )

    def feed(
        self, data: bytes | bytearray, most: int | None = None
    ) -> "list[dict[str, Any] | ProtocolError]":
        """The messages completed by `data`; with `most`, no more than that many, the rest
        staying buffered for the next call (a stranger's frames are taken one at a time)."""
        self.buf += data
        out: list[dict[str, Any] | ProtocolError] = []
        buf = self.buf
        pos = 0
        while len(buf) - pos >= 4 and len(out) != most:
            (size,) = _HDR.unpack_from(buf, pos)
            if size > self.max_frame:
                out.append(
                    ProtocolError(
                        TOO_BIG, f"frame of {size} bytes exceeds {self.max_frame}", fatal=True
                    )
                )
                buf.clear()
                return out
            if len(buf) - pos - 4 < size:
                break
            body = bytes(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
            try:
                if self.session is not None:
                    body = self.session.open(body)
                out.append(check_message(loads(body)))
            except ValueError as exc:  # both codecs' decode errors are ValueErrors
                out.append(ProtocolError(BAD_FRAME, f"frame body is not JSON: {exc}"))
            except RecursionError:  # the json module's answer to deep nesting
                out.append(ProtocolError(BAD_FRAME, "frame body is nested too deep"))
            except ProtocolError as exc:
                out.append(exc)
                if exc.fatal:  # a bad MAC or version: nothing behind it is read
                    buf.clear()
                    return out
        del buf[:pos]
        return out


def require(msg: "Mapping[str, Any]", field: str, kind: "Any", optional: bool = False) -> "Any":
    """A request field of the expected JSON type, or a BAD_REQUEST error naming it."""
    if field not in msg or msg[field] is None:
        if optional:
            return None
        raise ProtocolError(BAD_REQUEST, f"missing field {field!r} in {msg.get('op')!r}")
    value = msg[field]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(BAD_REQUEST, f"field {field!r} of {msg.get('op')!r} has the wrong type")
    return value


def job_ids(msg: "Mapping[str, Any]", optional: bool = False) -> list[int]:
    """The request's `jobs`: a list of job ids (integers; a boolean is none)."""
    ids = require(msg, "jobs", list, optional) or []
    if not all(type(job_id) is int for job_id in ids):
        raise ProtocolError(
            BAD_REQUEST, f"field 'jobs' of {msg.get('op')!r} must list job ids (integers)"
        )
    return ids
