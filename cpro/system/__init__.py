"""Adapters to the operating system: processes, netlink, link layer, IPMI, HTTP, watchdog,
OS-level actions. Imported downwards only: nothing here imports services or the cluster."""
