"""A client's view of a service on a floating IP: a tiny TCP service and a prober.

Both run as separate processes inside lab hosts (``ip netns exec HOST python -m
cpro.testing.lab.probe ...``), never inside a daemon, so plain blocking sockets and a
selector are fine here.

    python -m cpro.testing.lab.probe serve --port 8080 --name server1
    python -m cpro.testing.lab.probe probe --target 10.0.0.100:8080 --interval 0.01 --out FILE

The service answers every connection with its name and closes. The prober
starts a connection every interval (each with its own timeout, so one
unanswered SYN does not hide the next ones) and appends one line per probe
to FILE: ``start_time ok server`` (ok 1/0, server '-' on failure). The outage
a client saw is computed from that file by L{outage}.
"""

import argparse
import errno
import os
import selectors
import socket
import sys
import time


def serve(port, name, bind="0.0.0.0"):
    """Answer every connection with name; runs until killed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, port))
    s.listen(512)
    reply = (name + "\n").encode()
    while True:
        conn, _ = s.accept()
        try:
            conn.sendall(reply)
        except OSError:
            pass
        finally:
            conn.close()


class _Probe:
    def __init__(self, started, sock):
        self.started = started
        self.sock = sock
        self.connected = False
        self.data = b""


def probe(target, port, interval, timeout, out, duration=None):
    """Probe until killed (or for duration seconds), one line per probe in out."""
    sel = selectors.DefaultSelector()
    pending = []
    next_start = time.monotonic()
    end = None if duration is None else next_start + duration
    with open(out, "a", buffering=1) as f:
        while end is None or time.monotonic() < end or pending:
            now = time.monotonic()
            if now >= next_start and (end is None or now < end):
                next_start += interval
                if next_start < now:  # fell behind: do not burst to catch up
                    next_start = now + interval
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((target, port))
                p = _Probe(time.time(), s)
                if err not in (0, errno.EINPROGRESS):
                    f.write(f"{p.started:.6f} 0 -\n")
                    s.close()
                else:
                    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, p)
                    pending.append(p)
            wait = max(0.0, min(next_start - time.monotonic(), 0.005))
            for key, events in sel.select(wait):
                p = key.data
                try:
                    chunk = p.sock.recv(256)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = None
                if chunk:
                    p.data += chunk
                    if not p.data.endswith(b"\n"):
                        continue
                    server = p.data.decode(errors="replace").strip() or "?"
                    f.write(f"{p.started:.6f} 1 {server}\n")
                else:
                    f.write(f"{p.started:.6f} 0 -\n")
                sel.unregister(p.sock)
                p.sock.close()
                pending.remove(p)
            deadline = time.time() - timeout
            for p in [p for p in pending if p.started < deadline]:
                f.write(f"{p.started:.6f} 0 -\n")
                sel.unregister(p.sock)
                p.sock.close()
                pending.remove(p)


def read_probes(path):
    """[(start_time, ok, server)] sorted by start time."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                rows.append((float(parts[0]), parts[1] == "1", parts[2]))
    rows.sort()
    return rows


def outage(rows, fault_time):
    """The outage a client saw around a fault at fault_time (wall clock).

    From the start of the first failed probe after the last success before
    the fault, to the start of the first successful probe after it. Returns
    (seconds, server_before, server_after); seconds is None when no
    successful probe followed the fault.
    """
    before = [r for r in rows if r[0] <= fault_time and r[1]]
    server_before = before[-1][2] if before else None
    last_ok = before[-1][0] if before else fault_time
    after = [r for r in rows if r[0] > last_ok]
    first_fail = next((r for r in after if not r[1]), None)
    if first_fail is None:
        return 0.0, server_before, server_before
    recovered = next((r for r in after if r[1] and r[0] > first_fail[0]), None)
    if recovered is None:
        return None, server_before, None
    return recovered[0] - first_fail[0], server_before, recovered[2]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cpro.testing.lab.probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--bind", default="0.0.0.0")
    p = sub.add_parser("probe")
    p.add_argument("--target", required=True, help="IP:PORT")
    p.add_argument("--interval", type=float, default=0.01)
    p.add_argument("--timeout", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.port, args.name, args.bind)
    else:
        host, _, port = args.target.rpartition(":")
        probe(host, int(port), args.interval, args.timeout, args.out, args.duration)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        os._exit(0)
