#!/bin/sh
# genw1: the hello service answers on the floating IP. Exit 0 (normalval)
# when a connection to 10.0.0.100:8080 returns a line, 1 otherwise. Three
# attempts, 0.5 s apart, so that one lost connection is not an error and the
# first check right after exec1 starts gives the service time to listen.
# cpro runs it on the server that holds group web (timing 1), with PATH and
# CLP_MONITORNAME, CLP_SERVERNAME, CLP_SCRIPT_PATH only.

# Keep in step with fip1's <ip> in clp.conf and with exec1's start.sh.
ADDR=10.0.0.100
PORT=8080

exec python3 - "$ADDR" "$PORT" <<'PYTHON'
import socket, sys, time

address, port = sys.argv[1], int(sys.argv[2])
for attempt in range(3):
    if attempt:
        time.sleep(0.5)
    try:
        with socket.create_connection((address, port), timeout=2) as s:
            if s.makefile().readline().startswith("hello"):
                sys.exit(0)
    except OSError as e:
        error = e
    else:
        error = "no greeting"
print(f"genw1: {address}:{port} does not answer: {error}", file=sys.stderr)
sys.exit(1)
PYTHON
