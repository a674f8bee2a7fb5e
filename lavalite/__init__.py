"""LavaLite: a batch scheduler for high-throughput computing, in one file."""

__version__ = "0.1.0"


def __getattr__(name: str) -> type:
    """`lavalite.Client` without importing the client (config, sockets) on `import lavalite`:
    every role imports this package, and the CLI's start-up is the user's latency. A script's
    client encodes with orjson, as the daemons do (its one-time import pays back over many
    requests; the CLI's commands, one request each, import lavalite.client and keep json).
    It seals its frames with OpenSSL's SHA-256 for the same reason (lavalite.hmacsha)."""
    if name in ("Client", "ClientError"):
        from lavalite import client, hmacsha, protocol

        protocol.use_orjson()
        hmacsha.use_openssl()
        globals().update(Client=client.Client, ClientError=client.ClientError)  # once
        return globals()[name]
    raise AttributeError(f"module 'lavalite' has no attribute {name!r}")
