"""lavalite.messages: every operation a server handles or a program sends has its type there,
and the builders make what the daemons put on the wire."""

import ast
import pathlib

import test_fencing

from lavalite import config, messages
from lavalite.protocol import VERSION
from roles.mbatchd.server import ROLE_OPS

ROOT = pathlib.Path(__file__).resolve().parent.parent
# sbatchd's shepherds speak their own protocol over a Unix socket pair (start, clean, ended)
SHEPHERD_LINK = {"roles/sbatchd/shepherd.py", "roles/sbatchd/link.py"}
ALL_TYPED = {
    **messages.MBATCHD_REQUESTS,
    **messages.SBATCHD_ORDERS,
    **messages.LIM_REQUESTS,
    **messages.LOGIN,
}

sbatchd = test_fencing.sbatchd  # a real sbatchd dialling this test, in mbatchd's place


def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text())


def _function(path: str, name: str) -> ast.FunctionDef:
    return next(
        node
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.FunctionDef) and node.name == name
    )


def _ops_compared(func: ast.FunctionDef) -> set[str]:
    """The op names a handler compares `op` (or msg.get("op")) with."""
    found = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.Eq):
            right = node.comparators[0]
            if isinstance(right, ast.Constant) and isinstance(right.value, str):
                found.add(right.value)
    return found - {"user", "sbatchd", "lim", "mbatchd"}  # role checks


def _ops_sent(path: str) -> set[str]:
    """The ops of the dict literals {"op": "..."} and of the requests .request("...")/
    .call("...") in one source file."""
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "op"
                    and isinstance(value, ast.Constant)
                ):
                    found.add(value.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("request", "call")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def test_mbatchd_handles_exactly_the_typed_requests():
    ops = next(
        node.value
        for node in ast.walk(_function("roles/mbatchd/server.py", "__init__"))
        if isinstance(node, ast.AnnAssign)  # self.ops: dict[str, Handler] = {...}
        and isinstance(node.target, ast.Attribute)
        and node.target.attr == "ops"
    )
    assert isinstance(ops, ast.Dict)
    handled = {key.value for key in ops.keys if isinstance(key, ast.Constant)}
    assert handled == set(messages.MBATCHD_REQUESTS)
    allowed = {op for role_ops in ROLE_OPS.values() for op in role_ops} | {"ping"}
    assert allowed == set(messages.MBATCHD_REQUESTS)


def test_sbatchd_and_lim_handle_exactly_the_typed_requests():
    assert _ops_compared(_function("roles/sbatchd/server.py", "on_frame")) == set(
        messages.SBATCHD_ORDERS
    )
    assert _ops_compared(_function("roles/lim.py", "on_frame")) == set(messages.LIM_REQUESTS)


def test_every_op_any_program_sends_has_its_type():
    sources = [
        str(path.relative_to(ROOT))
        for package in ("lavalite", "roles", "scheduler", "store")
        for path in (ROOT / package).rglob("*.py")
    ]
    untyped = {
        (path, op)
        for path in sources
        if path not in SHEPHERD_LINK
        for op in _ops_sent(path)
        if op not in ALL_TYPED
    }
    assert not untyped
    assert _ops_sent("roles/mbatchd/core.py") == {"dispatch", "kill"}


def test_every_request_type_names_its_envelope():
    for op, kind in ALL_TYPED.items():
        assert {"v", "op", "id"} <= set(kind.__annotations__), op
    for kind in messages.SBATCHD_ORDERS.values():
        assert "epoch" in kind.__annotations__


def test_builders_make_the_wire_frames():
    start = {"kind": "start", "job": 7, "attempt": 1, "time": 1.5, "rid": 0}
    assert messages.register(4, [[7, 1]], [start]) == {
        "v": VERSION,
        "op": "register",
        "id": None,
        "slots": 4,
        "running": [[7, 1]],
        "reports": [start],
    }
    assert messages.report([start]) == {
        "v": VERSION,
        "op": "report",
        "id": None,
        "reports": [start],
    }


def test_a_real_sbatchd_sends_what_the_builders_make(sbatchd):
    """The register and report frames of a real sbatchd are what messages builds for the same
    fields: what the simulator, which builds them there, sends in its place."""
    state, listener, keys = sbatchd
    master = test_fencing.FakeMaster(listener, keys)
    slots = config.load(config.find_conf(f"{state}/lavalite.conf")).sbatchd.slots
    assert master.register == messages.register(slots, [], [])
    master.dispatch(1, 1, state)
    frame = master.recv_op()
    assert frame == messages.report(frame["reports"])
    start = frame["reports"][0]
    assert start["kind"] == "start"
    assert set(start) <= set(messages.JobReport.__annotations__)


def test_the_stats_reply_type_names_every_field_mbatchd_sends(cluster):
    reply = cluster.client.call("stats")
    assert set(reply) == messages.StatsReply.__required_keys__
