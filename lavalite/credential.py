"""User credentials signed by the node (the MUNGE idea, inside our one binary).

A user who cannot read the cluster key asks the local LIM over its Unix socket; LIM asks the
kernel who is on the other end (SO_PEERCRED) and signs a user hello for that uid with the key,
bound to the one connection (its challenge nonce) the user is logging in on.
The uid is the kernel's word, never the client's: a user can only obtain their own credential.
"""

import pwd
import socket
import struct

from lavalite import auth
from lavalite.protocol import AUTH, ProtocolError, require

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lavalite.peer import Peer

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket | None) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    if sock is None or sock.family != socket.AF_UNIX:
        raise ProtocolError(
            AUTH, "credentials are signed only over the local Unix socket", fatal=True
        )
    _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return uid


def sign(key: auth.Keyring, host: str, peer: "Peer", msg: dict) -> dict:
    """For whoever is connected to `peer` (a daemon-side Peer), a signed user hello answering
    the challenge `msg` names (sn, of a `to` server) and the key of that hello's session,
    which the user needs to seal its frames: the user learns the key of that one session,
    never the cluster key."""
    sn, to = require(msg, "sn", str), require(msg, "to", str)
    uid = peer_uid(peer.transport.get_extra_info("socket"))
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ProtocolError(AUTH, f"uid {uid} has no user name on this host", fatal=True) from None
    hello = auth.hello(key, "user", host, to, sn, uid=uid, user=name)
    return {"hello": hello, "session": auth.session_key(key, hello).hex()}
