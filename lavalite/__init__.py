"""LavaLite: a batch scheduler for high-throughput computing, in one file."""

__version__ = "0.1.0"
