#!/bin/sh
# Start script of exec1 (group failover1), run asynchronously (<sync>0</sync>):
# it becomes the service itself, a one-line TCP "hello" on the local
# server's own loopback address, port 18080.
#
# Environment from cpro: CLP_EVENT (START|FAILOVER|RECOVER), CLP_SERVER
# (HOME|OTHER), CLP_GROUPNAME, CLP_RESOURCENAME, CPRO_SERVER_NAME.

case "$CLP_EVENT" in
    START|FAILOVER|RECOVER) ;;
    *) echo "exec1: not started by cpro (CLP_EVENT is '$CLP_EVENT')" >&2; exit 1 ;;
esac

# Each example server lives on its own loopback address (see clp.conf).
case "$CPRO_SERVER_NAME" in
    srv1) ADDR=127.0.0.1 ;;
    srv2) ADDR=127.0.0.2 ;;
    *) echo "exec1: unknown server '$CPRO_SERVER_NAME'" >&2; exit 1 ;;
esac
PORT=18080
PIDFILE="${TMPDIR:-/tmp}/cpro-example-$CPRO_SERVER_NAME-$CLP_RESOURCENAME.pid"
CONFDIR=$(cd "$(dirname "$0")/../../.." && pwd)

echo "exec1: $CLP_EVENT on $CPRO_SERVER_NAME ($CLP_SERVER): hello service on $ADDR:$PORT"
exec python3 "$CONFDIR/hello.py" "$ADDR" "$PORT" "$PIDFILE"
