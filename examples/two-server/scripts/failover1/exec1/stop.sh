#!/bin/sh
# Stop script of exec1: ends the hello service started by start.sh on this
# server (SIGTERM, then SIGKILL after 5 seconds). Stopping what is not
# running succeeds.

PIDFILE="${TMPDIR:-/tmp}/cpro-example-$CPRO_SERVER_NAME-$CLP_RESOURCENAME.pid"
[ -f "$PIDFILE" ] || exit 0
pid=$(cat "$PIDFILE")
# Only signal the pid if it is still our service (pids get reused).
if [ -n "$pid" ] && grep -q hello.py "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$PIDFILE"
echo "exec1: stopped on $CPRO_SERVER_NAME"
exit 0
