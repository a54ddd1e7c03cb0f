"""A tiny TCP service for the cpro examples: answers every connection with one line.

    python3 hello.py ADDRESS PORT PIDFILE

The line says which server runs it (CPRO_SERVER_NAME) and why it was started
(CLP_EVENT, CLP_SERVER, CLP_GROUPNAME, CLP_RESOURCENAME), so that a client
can watch a failover happen:  nc 127.0.0.1 18080  (or python3 -c ...).
Writes PIDFILE so that the stop script can end it; removes it on SIGTERM.
"""

import os
import signal
import socketserver
import sys


def main(address, port, pidfile):
    env = os.environ
    line = "hello from {} (group {}, resource {}, event {}, {})\n".format(
        env.get("CPRO_SERVER_NAME", "?"), env.get("CLP_GROUPNAME", "?"),
        env.get("CLP_RESOURCENAME", "?"), env.get("CLP_EVENT", "?"),
        env.get("CLP_SERVER", "?")).encode("utf-8")

    class Hello(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(line)

    socketserver.TCPServer.allow_reuse_address = True
    server = socketserver.TCPServer((address, int(port)), Hello)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        try:
            os.unlink(pidfile)
        except OSError:
            pass


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: hello.py ADDRESS PORT PIDFILE")
    main(*sys.argv[1:])
