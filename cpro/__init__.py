"""cpro: a high-availability failover cluster manager on Twisted."""

__version__ = "0.1.0"
