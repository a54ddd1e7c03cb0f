#!/bin/sh
# Start script of exec2 (group failover2), synchronous: prepares the state
# directory that exec3 (which depends on exec2) uses, then exits. A non-zero
# exit would be an activation failure.

case "$CLP_EVENT" in
    START|FAILOVER|RECOVER) ;;
    *) echo "exec2: not started by cpro (CLP_EVENT is '$CLP_EVENT')" >&2; exit 1 ;;
esac

STATE="${TMPDIR:-/tmp}/cpro-example-$CPRO_SERVER_NAME-$CLP_GROUPNAME"
mkdir -p "$STATE" || exit 1
echo "$CLP_EVENT $(date '+%Y-%m-%d %H:%M:%S')" >> "$STATE/activations" || exit 1
echo "exec2: $CLP_EVENT on $CPRO_SERVER_NAME ($CLP_SERVER): prepared $STATE"
exit 0
