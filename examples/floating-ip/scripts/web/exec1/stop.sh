#!/bin/sh
# Stop script of exec1: asks the hello service to end (SIGTERM) and waits up
# to 5 seconds. cpro passes the pid of the resident start script (which
# became the service) as CLP_PID, and ends that script's whole process group
# after this script in any case. Stopping what is not running succeeds.

if [ -n "$CLP_PID" ] && grep -q hello.py "/proc/$CLP_PID/cmdline" 2>/dev/null; then
    kill -TERM "$CLP_PID"
    i=0
    while kill -0 "$CLP_PID" 2>/dev/null && [ "$i" -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
fi
echo "exec1: stopped on $CPRO_SERVER_NAME ($CLP_EVENT)"
exit 0
