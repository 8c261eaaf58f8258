#!/usr/bin/env bash
# A real S3 server for tests and local work: one-node Ceph (memstore OSD, no cephx) + RADOS Gateway,
# bound to 127.0.0.1 only. Data lives in RAM and is gone when the daemons stop.
#   usage: scripts/s3-server-up.sh DIR [RGW_PORT=7480] [MON_PORT=6789]
# Prints `export` lines for the endpoint and the gateway's test user's keys, and writes them to
# DIR/s3.env (mode 600) for `source`. Daemon PIDs go to DIR/run/*.pidx; stop with s3-server-down.sh.
# The store holds S3_MEMSTORE_BYTES of RAM (default 2 GiB); raise it to push a larger DVC cache.
# Needs: apt-get install --no-install-recommends ceph-mon ceph-osd ceph-mgr radosgw ceph-common
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DIR [RGW_PORT] [MON_PORT]" >&2; exit 2; }
for bin in ceph-mon ceph-osd ceph-mgr radosgw radosgw-admin ceph monmaptool ceph-authtool curl; do
    command -v "$bin" >/dev/null || { echo "error: $bin not found; run scripts/ci-system-deps.sh (as root)" >&2; exit 3; }
done
D=$(realpath -m "$1"); RGW_PORT=${2:-7480}; MON_PORT=${3:-6789}
HERE=$(cd "$(dirname "$0")" && pwd)
for f in "$D"/run/*.pidx; do
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && { echo "error: a server is already running in $D; stop it with scripts/s3-server-down.sh $D" >&2; exit 2; }
done
rm -rf "$D"/{run,log,mon,osd,mgr,rgw} "$D"/{ceph.conf,monmap,keyring,s3.env}
mkdir -p "$D"/{run,log,mon,osd,rgw}
# Stop whatever started if a later step fails, so a broken start never leaves daemons behind.
trap 'echo "error: S3 server start failed; logs in $D/log" >&2; "$HERE/s3-server-down.sh" "$D" >/dev/null 2>&1' ERR

new_uuid() { cat /proc/sys/kernel/random/uuid; }
FSID=$(new_uuid)
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
# the v1 address form: with a v2 monmap entry clients hang on this single-node set-up
mon host = v1:127.0.0.1:$MON_PORT
mon initial members = a
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
osd crush chooseleaf type = 0
ms bind ipv6 = false
run dir = $D/run
pid file = $D/run/\$name.pid
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
mon data = $D/mon/\$cluster-\$id
mgr data = $D/mgr/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = ${S3_MEMSTORE_BYTES:-2147483648}
# with auth=none the OSD's own boot-time CRUSH update races the monmap: it is added by hand below
osd crush update on start = false
osd class update on start = false
keyring = $D/keyring
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $D/rgw/\$cluster-\$id
CONF
C=(-c "$D/ceph.conf")
monmaptool --create --addv a "[v1:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring"
ceph-mon -f "${C[@]}" -i a >"$D/log/mon.out" 2>&1 & echo $! >"$D/run/mon.pidx"
timeout 60 bash -c "until ceph -c '$D/ceph.conf' --connect-timeout 5 -s >/dev/null 2>&1; do sleep 0.3; done"
mkdir -p "$D/mgr/ceph-x"
ceph-mgr -f "${C[@]}" -i x >"$D/log/mgr.out" 2>&1 & echo $! >"$D/run/mgr.pidx"
OSD_UUID=$(new_uuid)
ID=$(ceph "${C[@]}" osd new "$OSD_UUID"); mkdir -p "$D/osd/ceph-$ID"
ceph-osd "${C[@]}" -i "$ID" --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1
ceph "${C[@]}" osd crush add-bucket localhost host >/dev/null 2>&1
ceph "${C[@]}" osd crush move localhost root=default >/dev/null 2>&1
ceph "${C[@]}" osd crush add "osd.$ID" 1.0 host=localhost >/dev/null 2>&1
ceph-osd -f "${C[@]}" -i "$ID" >"$D/log/osd.out" 2>&1 & echo $! >"$D/run/osd.pidx"
radosgw -f "${C[@]}" -n client.rgw.a >"$D/log/rgw.out" 2>&1 & echo $! >"$D/run/rgw.pidx"
timeout 120 bash -c "until curl -s -o /dev/null http://127.0.0.1:$RGW_PORT/; do sleep 0.3; done"

ACCESS_KEY=segrepro-$(new_uuid | cut -c1-8)
SECRET_KEY=$(new_uuid | tr -d -)
radosgw-admin "${C[@]}" user create --uid=segrepro --display-name=segrepro \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
trap - ERR
umask 077
cat > "$D/s3.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
ENV
cat "$D/s3.env"
