"""Host names and addresses: who this node is, and where mbatchd may be."""

import os
import socket

from lavalite.config import Config


def local_host(explicit: str | None = None) -> str:
    """This node's name: --host, then $LAVALITE_HOST, then the system's host name. The override
    lets several nodes share one machine (tests, network namespaces)."""
    return explicit or os.environ.get("LAVALITE_HOST") or socket.gethostname()


def address(conf: Config, host: str) -> str:
    """The address to dial for `host`: lavalite.conf's [hosts] table, else the name itself."""
    return conf.hosts.get(host, host)


def mbatchd_endpoints(
    conf: Config, me: str | None = None, first: str | None = None
) -> list[tuple[str, str, int]]:
    """(host, address, port) for every master candidate in priority order; with no candidates
    configured, mbatchd runs on this node. `first` (the master the local LIM knows, or the
    target of a redirect) goes in front."""
    candidates = conf.cluster.master_candidates or [local_host(me)]
    if first:
        candidates = [first] + [h for h in candidates if h != first]
    return [(h, address(conf, h), conf.mbatchd.port) for h in candidates]
