"""The four roles; each runs as its own process and talks to the others over the protocol."""
