#!/bin/sh
# Start script of exec1 (group web), run asynchronously (<sync>0</sync>): it
# becomes the service itself, a one-line TCP "hello" on the floating IP,
# port 8080. fip1 starts before exec1, so the address is already on this
# server's NIC when the service binds it. pidw1 watches this process.
#
# Environment from cpro: CLP_EVENT (START|FAILOVER|RECOVER), CLP_SERVER
# (HOME|OTHER), CLP_GROUPNAME, CLP_RESOURCENAME, CPRO_SERVER_NAME.

case "$CLP_EVENT" in
    START|FAILOVER|RECOVER) ;;
    *) echo "exec1: not started by cpro (CLP_EVENT is '$CLP_EVENT')" >&2; exit 1 ;;
esac

# Keep in step with fip1's <ip> in clp.conf (and with genw1's genw.sh).
ADDR=10.0.0.100
PORT=8080
CONFDIR=$(cd "$(dirname "$0")/../../.." && pwd)

echo "exec1: $CLP_EVENT on $CPRO_SERVER_NAME ($CLP_SERVER): hello service on $ADDR:$PORT"
exec python3 "$CONFDIR/hello.py" "$ADDR" "$PORT"
