#!/usr/bin/env bash
# Stop the server started by s3-server-up.sh DIR: the daemons recorded in DIR/run/*.pidx, gateway
# first, monitor last. A PID is signalled only while its command line still names DIR's ceph.conf,
# so a recycled PID is never hit.
#   usage: scripts/s3-server-down.sh DIR
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
D=$(realpath -m "$1")
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$D/ceph.conf"; }
for n in rgw osd mgr mon; do
    f="$D/run/$n.pidx"; [ -f "$f" ] || continue
    pid=$(cat "$f")
    if ours "$pid"; then
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
        ours "$pid" && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$f"
done
echo "S3 server in $D stopped"
