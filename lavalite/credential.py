"""User credentials signed by the node (the MUNGE idea, inside our one binary).

A user who cannot read the cluster key asks the local LIM over its Unix socket; LIM asks the
kernel who is on the other end (SO_PEERCRED) and signs a user hello for that uid with the key.
The uid is the kernel's word, never the client's: a user can only obtain their own credential.
"""
import pwd
import socket
import struct

from lavalite import auth
from lavalite.protocol import AUTH, ProtocolError

_UCRED = struct.Struct("3i")       # struct ucred: pid, uid, gid


def peer_uid(sock):
    """The uid of the process at the other end of a connected Unix socket."""
    if sock is None or sock.family != socket.AF_UNIX:
        raise ProtocolError(AUTH, "credentials are signed only over the local Unix socket",
                            fatal=True)
    _, uid, _ = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                              _UCRED.size))
    return uid


def sign(key, host, peer):
    """A signed user hello for whoever is connected to `peer` (a daemon-side Peer)."""
    uid = peer_uid(peer.transport.get_extra_info("socket"))
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        raise ProtocolError(AUTH, f"uid {uid} has no user name on this host", fatal=True) from None
    return auth.hello(key, "user", host, uid=uid, user=name)
