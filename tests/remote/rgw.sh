#!/usr/bin/env bash
# A real S3 endpoint for the tests: a single-node Ceph cluster (one monitor, one
# in-memory OSD, one radosgw) on 127.0.0.1, everything inside DIR.
#
#   tests/remote/rgw.sh start DIR   start it; prints shell assignments on stdout:
#                                   AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...
#   tests/remote/rgw.sh stop DIR    stop the daemons it started (radosgw, then osd, then mon)
#
# Needs the Debian packages ceph-mon, ceph-osd and radosgw (./ringpager.sh installs them).
# Readiness is awaited by polling, each step with a deadline; a failure prints one line on
# stderr naming the step and where its log is, stops what was started and exits 1.
# docs/remote.md explains each setting.
set -euo pipefail

die() { echo "rgw.sh: $*" >&2; exit 1; }

free_port() {  # a TCP port nobody listens on right now (the kernel picks it)
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 20 ms until it succeeds, at most SECONDS.
wait_for() {
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.02   # a readiness poll of a daemon this script just started
    done
}

http_answers() {  # http_answers URL: any HTTP status line from the endpoint
    python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError:
    pass   # 403 and friends: the frontend answers
sys.exit(0)
PY
}

stop_pid_file() {  # stop_pid_file FILE: SIGTERM the daemon, wait (10 s) for it to exit, then SIGKILL
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null || true)
    rm -f "$file"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_for 10 "pid $pid to exit" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    local dir=$1
    stop_pid_file "$dir/run/client.rgw.a.pid"
    stop_pid_file "$dir/run/osd.0.pid"
    stop_pid_file "$dir/run/mon.a.pid"
}

start() {
    local dir=$1
    for tool in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
        command -v "$tool" >/dev/null ||
            die "$tool is not installed: apt-get install --no-install-recommends ceph-mon ceph-osd radosgw"
    done
    mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd"
    local mon_port rgw_port fsid conf=$dir/ceph.conf
    mon_port=$(free_port)
    rgw_port=$(free_port)
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
# No cephx: a throwaway cluster on the loopback. The client mode must then be crc too.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms bind msgr1 = false
public addr = 127.0.0.1
# One OSD holds every replica, and CRUSH places replicas across OSDs, not hosts.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# Commit monitor changes (pool creation, OSD boot) at once instead of every second.
paxos propose interval = 0.01
mon data avail warn = 1
mon data avail crit = 0
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
[mon.a]
mon data = $dir/mon
[osd.0]
osd data = $dir/osd
osd objectstore = memstore
memstore device bytes = 2147483648
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $dir/rgw
EOF
    # Whatever fails from here on stops what was started.
    trap 'if (($? != 0)); then stop "$dir"; fi' EXIT
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null ||
        die "monmaptool failed"
    ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" >"$dir/log/mon-mkfs.out" 2>&1 ||
        die "ceph-mon --mkfs failed (see $dir/log/mon-mkfs.out)"
    ceph-mon -c "$conf" -i a >>"$dir/log/daemons.out" 2>&1 </dev/null || die "ceph-mon did not start (see $dir/log/mon.a.log)"
    local osd_uuid osd_id
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    osd_id=$(timeout 30 ceph -c "$conf" --connect-timeout 20 osd new "$osd_uuid" 2>"$dir/log/osd-new.out") ||
        die "the monitor did not answer 'ceph osd new' (see $dir/log/osd-new.out, $dir/log/mon.a.log)"
    [ "$osd_id" = 0 ] || die "ceph osd new gave id '$osd_id', expected 0"
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/osd-mkfs.out" 2>&1 ||
        die "ceph-osd --mkfs failed (see $dir/log/osd-mkfs.out)"
    ceph-osd -c "$conf" -i 0 >>"$dir/log/daemons.out" 2>&1 </dev/null || die "ceph-osd did not start (see $dir/log/osd.0.log)"
    radosgw -c "$conf" -n client.rgw.a >>"$dir/log/daemons.out" 2>&1 </dev/null || die "radosgw did not start (see $dir/log/client.rgw.a.log)"
    wait_for 60 "radosgw" http_answers "http://127.0.0.1:$rgw_port/" ||
        die "radosgw did not answer on 127.0.0.1:$rgw_port within 60 s (see $dir/log/client.rgw.a.log)"
    local access secret
    access=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')
    secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
    timeout 60 radosgw-admin -c "$conf" user create --uid ringpager-test --display-name ringpager-test \
        --access-key "$access" --secret-key "$secret" >"$dir/log/user-create.out" 2>&1 ||
        die "radosgw-admin user create failed (see $dir/log/user-create.out)"
    trap - EXIT
    echo "AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port"
    echo "AWS_ACCESS_KEY_ID=$access"
    echo "AWS_SECRET_ACCESS_KEY=$secret"
}

case "${1:-}" in
    start) [ -n "${2:-}" ] || die "usage: rgw.sh start DIR"; start "$2" ;;
    stop) [ -n "${2:-}" ] || die "usage: rgw.sh stop DIR"; stop "$2" ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
