"""`make demo` as root: a client keeps using a floating IP while its server dies.

Builds the network-namespace lab (cpro.testing.lab.netns): two servers (interconnect
eth0, public LAN eth1), a client on the public LAN, real cpro daemons in
the servers' namespaces. One failover group holds the floating IP
10.0.0.100 and an exec resource that starts a small TCP service. The client
connects to the floating IP every 10 ms (cpro.testing.lab.probe); the active server
is powered off (every process in its namespace killed, its links cut at
the switch, as a dead machine looks); the demo shows the group and the
floating IP on the other server, the client's ARP entry following it, and
the outage the client saw. Everything is removed at the end, on failure and
on Ctrl-C alike (cpro.testing.demo runs it); the lab's OS actions power off only a
lab namespace.
"""

import os
import shutil
import sys
import tempfile
import time

from twisted.internet import task

from cpro.testing.demo import DemoError, say, show_clpstat, step
from cpro.testing.lab.common import group_current
from cpro.testing.lab.netns import NetnsLab
from cpro.testing.lab.probe import outage, read_probes

GROUP = "failover1"
VIP = "10.0.0.100"
PORT = 8080

# The exec resource's start script: run asynchronously, it is the service.
SERVICE_SCRIPT = '''\
#!{python}
"""cpro demo service: answers every TCP connection with the name of its server."""
import os, socket
server = os.environ.get("CPRO_SERVER_NAME", "unknown")
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", {port}))
listener.listen(64)
while True:
    conn, _ = listener.accept()
    with conn:
        conn.sendall((server + "\\n").encode())
'''

GROUP_XML = f"""
<group name="{GROUP}"><resource name="fip@fip1"/><resource name="exec@web"/></group>
"""


class LabDemo:
    def __init__(self, reactor, args):
        self.reactor = reactor
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="cpro-demo-")
        script = os.path.join(self.workdir, "scripts", "web-start.py")
        os.makedirs(os.path.dirname(script))
        with open(script, "w") as f:
            f.write(SERVICE_SCRIPT.format(python=sys.executable, port=PORT))
        os.chmod(script, 0o755)
        resources = (f'<types name="fip"/><fip name="fip1"><parameters><ip>{VIP}</ip></parameters></fip>'
                     f'<types name="exec"/><exec name="web"><parameters><act><path>{script}</path>'
                     f'<sync>0</sync></act></parameters></exec>')
        self.lab = NetnsLab(reactor, os.path.join(self.workdir, "lab"), servers=2,
                            interval_ms=args.interval_ms, timeout_ms=args.timeout_ms, sync_wait=10,
                            root_xml=GROUP_XML, resource_xml=resources)
        self.probe_log = os.path.join(self.workdir, "client-probes.log")

    async def run(self):
        lab, args = self.lab, self.args
        step("Building the lab: two servers and a client, each a network namespace")
        await lab.create()
        say(f"    srv1: interconnect {lab.address('srv1', 'eth0')}, public LAN {lab.address('srv1')}")
        say(f"    srv2: interconnect {lab.address('srv2', 'eth0')}, public LAN {lab.address('srv2')}")
        say(f"    client: public LAN {lab.address(lab.client)}")
        say(f"    heartbeats on both networks every {args.interval_ms} ms; a server is declared down after "
            f"{args.timeout_ms} ms of silence on both")
        say(f"    group {GROUP}: floating IP {VIP} (fip1) and a TCP service on port {PORT} (exec 'web')")
        say(f"    configuration: {lab.config_path}")

        step("Starting the cpro daemons inside srv1 and srv2")
        await lab.start_all()
        st = await lab.wait_until(lambda st: _holder(st, lab.names) is not None, timeout=30,
                                  what=f"{GROUP} Online on one server")
        active = _holder(st, lab.names)
        standby = next(n for n in lab.names if n != active)
        say(f"    {GROUP} is Online on {active}; {VIP} is on {await lab.holders(VIP)}")
        await self.clpstat(active)

        step(f"The client connects to {VIP}:{PORT}")
        answer = await lab.client_connect(VIP, PORT)
        if answer != active:
            raise DemoError(f"expected {active} to answer on {VIP}, got {answer!r}")
        mac = await lab.neighbour(lab.client, VIP)
        say(f"    answered by {answer}; the client's ARP entry for {VIP}: {mac} ({active}'s eth1 is "
            f"{lab.mac(active)})")

        step(f"The client now connects every 10 ms; powering off {active}")
        prober = lab.spawn(lab.client, [sys.executable, "-m", "cpro.testing.lab.probe", "probe", "--target",
                                        f"{VIP}:{PORT}", "--interval", "0.01", "--timeout", "0.5",
                                        "--out", self.probe_log])
        await task.deferLater(self.reactor, 1.0, lambda: None)
        fault = time.time()
        await lab.server_down(active)
        say(f"    {active} is off: every process in it killed, its links cut at the switch")
        await lab.wait_until(lambda st: _holder(st, [standby]) == standby, names=[standby], step=0.05,
                             timeout=args.timeout_ms / 1000.0 + 30, what=f"{GROUP} Online on {standby}")
        await task.deferLater(self.reactor, 1.0, lambda: None)
        await prober.stop(self.reactor, 5)
        seconds, before, after = outage(read_probes(self.probe_log), fault)
        if seconds is None or after != standby:
            raise DemoError(f"the client was not served by {standby} after the power-off")
        say(f"    {GROUP} is Online on {standby}; {VIP} is on {await lab.holders(VIP)}")
        await self.clpstat(standby)

        step("What the client saw")
        mac = await lab.neighbour(lab.client, VIP)
        say(f"    before: served by {before}; after: served by {after}")
        say(f"    the client's ARP entry for {VIP} is now {mac} ({standby}'s eth1 is {lab.mac(standby)}):"
            f" updated by gratuitous ARP")
        say(f"\nthe client saw an outage of {seconds * 1000:.0f} ms "
            f"(heartbeat timeout {args.timeout_ms} ms)")
        return seconds

    async def clpstat(self, name):
        await show_clpstat(self.reactor, self.lab, name)

    async def destroy(self, keep):
        step("Cleaning up: every lab process, namespace, bridge and rule")
        await self.lab.destroy()
        if keep:
            say(f"    lab files kept in {self.workdir} (daemon logs: lab/srvN/cpro.log)")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _holder(statuses, observers):
    holders = {group_current(statuses, GROUP, o) for o in observers}
    return holders.pop() if len(holders) == 1 else None
