"""The witness server (C{cpro-witness}): a third party that the servers of
one or more clusters report to, for the witness heartbeat and network
partition resolution. Protocol: L{cpro.protocols.witness}; docs/witness.md.
"""
