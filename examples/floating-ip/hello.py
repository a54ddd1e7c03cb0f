"""A tiny TCP service for the cpro floating-IP example: answers every connection with one line.

    python3 hello.py ADDRESS PORT

The line says which server runs it (CPRO_SERVER_NAME) and why it was started
(CLP_EVENT, CLP_SERVER), so that a client of the floating IP can watch a
failover happen. It ends on SIGTERM (stop.sh, or cpro ending the resident
start script when exec1 is deactivated).
"""

import os
import signal
import socketserver
import sys


def main(address, port):
    env = os.environ
    line = "hello from {} on {}:{} (group {}, resource {}, event {}, {})\n".format(
        env.get("CPRO_SERVER_NAME", "?"), address, port, env.get("CLP_GROUPNAME", "?"),
        env.get("CLP_RESOURCENAME", "?"), env.get("CLP_EVENT", "?"),
        env.get("CLP_SERVER", "?")).encode("utf-8")

    class Hello(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.sendall(line)

    # The floating IP may have been on another server a moment ago: do not
    # let connections of a previous run (TIME_WAIT) block the bind.
    socketserver.TCPServer.allow_reuse_address = True
    server = socketserver.TCPServer((address, int(port)), Hello)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: hello.py ADDRESS PORT")
    main(*sys.argv[1:])
