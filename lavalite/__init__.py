"""LavaLite: a batch scheduler for high-throughput computing, in one file."""

__version__ = "0.1.0"


def __getattr__(name):
    """`lavalite.Client` without importing the client (config, sockets) on `import lavalite`:
    every role imports this package, and the CLI's start-up is the user's latency."""
    if name in ("Client", "ClientError"):
        from lavalite import client
        return getattr(client, name)
    raise AttributeError(f"module 'lavalite' has no attribute {name!r}")
