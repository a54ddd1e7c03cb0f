"""Errors shared by the cluster state machines."""


class OperationError(Exception):
    """An operator or peer request that was refused; str() is the reason."""
