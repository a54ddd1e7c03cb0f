"""Power off one host of the network-namespace lab (cpro.testing.lab.netns) as a dead machine looks.

This is the lab's harmless replacement for `systemctl poweroff`: the lab's
clp.conf names it as the shutdown and reboot OS actions, so a daemon that
decides to power off its server powers off only its own namespace:

    python -m cpro.testing.lab.poweroff STATE_FILE [HOST]

STATE_FILE is the lab's lab.json; HOST defaults to the lab host whose
network namespace the command runs in (it refuses to act anywhere else).
Powering off a host:

1. sets its switch ports down (in the lab's switch namespace): its NICs lose
   carrier, nothing it still had queued reaches the LAN, and no TCP FIN or
   RST from its dying sockets tells the peers it died;
2. SIGKILLs every process in its namespace (found by comparing
   /proc/PID/ns/net with the namespace's inode), until none is left;
3. resets its network to the boot state: only the lab's addresses on its
   NICs (a floating IP it held is gone, as after a reboot), an empty
   neighbour table;
4. appends `time host action` to the lab's poweroff log.

The lab itself runs the same steps asynchronously (NetnsLab.server_down),
from the same helpers. Everything here is synchronous: it runs in its own
process or in a worker thread, never on a reactor thread.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

NETNS_DIR = "/run/netns"
# Every namespace of a lab is named PREFIX-<owner pid>-<random hex>-<host>.
PREFIX = "cpronl"


def ip_path():
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/ip"


def netns_identity(name):
    """(st_dev, st_ino) of a named namespace, or None if it does not exist."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def process_netns(pid):
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:  # gone, a zombie, or a kernel thread
        return None
    return st.st_dev, st.st_ino


def namespace_pids(name, exclude=()):
    """PIDs of the processes in network namespace name (thread-group leaders; zombies excluded)."""
    ident = netns_identity(name)
    if ident is None:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in exclude and process_netns(entry) == ident:
            pids.append(int(entry))
    return pids


def kill_namespace(name, exclude=(), rounds=100):
    """SIGKILL every process in namespace name (but exclude), again until none is
    left (a process may fork while we kill). Returns the PIDs killed."""
    exclude = set(exclude) | {os.getpid()}
    killed = []
    for _ in range(rounds):
        pids = namespace_pids(name, exclude)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.002)
    return killed


def port_batch(state, host, up):
    """`ip -batch` text setting host's switch ports up or down (run in the switch namespace)."""
    how = "up" if up else "down"
    return "".join(f"link set {link['port']} {how}\n" for link in state["hosts"][host]["links"].values())


def reset_batch(state, host):
    """`ip -batch` text resetting host's NICs to the lab's addresses, neighbour table empty."""
    lines = []
    for dev, link in state["hosts"][host]["links"].items():
        lines.append(f"address flush dev {dev}")
        lines.append(f"address add {link['address']}/{link['prefixlen']} dev {dev}")
        lines.append(f"neigh flush dev {dev}")
    return "".join(line + "\n" for line in lines)


def log_line(host, action):
    return f"{time.time():.6f} {host} {action}\n"


def own_host(state):
    """The lab host whose namespace this process runs in, or None."""
    mine = process_netns("self")
    for name, host in state["hosts"].items():
        if mine is not None and netns_identity(host["netns"]) == mine:
            return name
    return None


def _ip_batch(netns, text):
    subprocess.run([ip_path(), "-n", netns, "-force", "-batch", "-"], input=text.encode(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)


def power_off(state, host, action="poweroff"):
    """Steps 1-4 of the module docstring, synchronously."""
    entry = state["hosts"][host]
    if not entry["netns"].startswith(PREFIX + "-"):
        raise ValueError(f"{entry['netns']} is not a lab namespace")
    _ip_batch(state["switch"], port_batch(state, host, up=False))
    kill_namespace(entry["netns"])
    _ip_batch(entry["netns"], reset_batch(state, host))
    with open(state["log"], "a") as f:
        f.write(log_line(host, action))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m cpro.testing.lab.poweroff STATE_FILE [HOST]", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        state = json.load(f)
    host = argv[1] if len(argv) == 2 else own_host(state)
    if host not in state["hosts"]:
        # Outside the lab's hosts: never power off anything else.
        print(f"cpro.testing.lab.poweroff: not a host of this lab: {host or 'this namespace'}", file=sys.stderr)
        return 2
    power_off(state, host, os.environ.get("CPRO_ACTION", "poweroff"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
