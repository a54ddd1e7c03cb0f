"""Heartbeat paths: the service that runs them and one module per kind."""
