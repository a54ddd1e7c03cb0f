#!/bin/sh
# Stop script of exec2: runs after exec3 has stopped (reverse order) and
# marks the state directory inactive. Stopping twice succeeds.

STATE="${TMPDIR:-/tmp}/cpro-example-$CPRO_SERVER_NAME-$CLP_GROUPNAME"
if [ -d "$STATE" ]; then
    echo "STOP $(date '+%Y-%m-%d %H:%M:%S')" >> "$STATE/activations"
fi
echo "exec2: stopped on $CPRO_SERVER_NAME"
exit 0
