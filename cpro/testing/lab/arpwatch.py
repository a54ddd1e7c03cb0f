"""A client-side watch for double activation: who answers ARP for an address?

Run in a lab host (``python -m cpro.testing.lab.arpwatch --address 10.0.0.100
--dev eth1 --out FILE``): every ``--interval`` it broadcasts "who has
ADDRESS?" and collects the replies until the next round. Linux answers ARP
for every address it holds, so two different MACs answering in one round
mean two servers hold the address at once, which is what a client on that
LAN would suffer from.

The output file gets one line per change of the set of answering MACs
(``time mac[,mac...]``, an empty set written as ``-``) and one line per
round with more than one MAC (``DOUBLE time macs``), flushed at once; a
``rounds N`` line at the end (SIGTERM or --duration).
"""

import argparse
import fcntl
import ipaddress
import os
import select
import signal
import socket
import struct
import sys
import time

from cpro.protocols.arp import ARP_REPLY, ARP_REQUEST, ETH_P_ARP, MalformedFrame, build_arp, mac_text, parse_arp

SIOCGIFADDR = 0x8915


def _own(dev):
    with open(f"/sys/class/net/{dev}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    # The sender IP of the requests: the first IPv4 address of dev (any will do).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", dev.encode()[:15]))
    finally:
        s.close()
    return mac, ipaddress.IPv4Address(packed[20:24])


def watch(address, dev, interval, out, duration=None):
    target = ipaddress.IPv4Address(address)
    mac, ip = _own(dev)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((dev, ETH_P_ARP))
    request = build_arp(ARP_REQUEST, mac, ip, target)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    started = time.time()
    rounds = 0
    last = None
    with open(out, "a", buffering=1) as f:
        while not stop and (duration is None or time.time() - started < duration):
            sent = time.time()
            try:
                sock.send(request)
            except OSError:
                pass
            answered = set()
            deadline = sent + interval
            while True:
                left = deadline - time.time()
                if left <= 0 or stop:
                    break
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    continue
                try:
                    packet = parse_arp(sock.recv(256))
                except (MalformedFrame, OSError):
                    continue
                if packet.op == ARP_REPLY and packet.sender_ip == target:
                    answered.add(mac_text(packet.sender_mac))
            rounds += 1
            macs = ",".join(sorted(answered)) or "-"
            if len(answered) > 1:
                f.write(f"DOUBLE {sent:.6f} {macs}\n")
            if macs != last:
                f.write(f"{sent:.6f} {macs}\n")
                last = macs
        f.write(f"rounds {rounds}\n")
    sock.close()


def read_watch(path):
    """(changes [(time, [macs])], doubles [(time, [macs])], rounds or None) from a watch file."""
    changes, doubles, rounds = [], [], None
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return changes, doubles, rounds
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "DOUBLE" and len(parts) == 3:
            doubles.append((float(parts[1]), parts[2].split(",")))
        elif parts[0] == "rounds" and len(parts) == 2:
            rounds = int(parts[1])
        elif len(parts) == 2:
            changes.append((float(parts[0]), [] if parts[1] == "-" else parts[1].split(",")))
    return changes, doubles, rounds


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cpro.testing.lab.arpwatch")
    parser.add_argument("--address", required=True)
    parser.add_argument("--dev", default="eth1")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    watch(args.address, args.dev, args.interval, args.out, args.duration)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        os._exit(0)
