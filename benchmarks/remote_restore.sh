#!/bin/bash
# Remote restore figures in one run (docs/remote.md "Serving from s3://"):
# a generated guest image built into a layered snapshot and pushed to a
# throwaway Ceph RGW (tests/remote/rgw.sh), then restored with
# `serve --mode prefetch` to 1 and 10 simulated VMs (rp-guestsim, every page
# verified) from a local layered snapshot, from s3:// with an empty chunk
# cache, and from s3:// after an engine restart on the warm cache; range GETs
# counted in RGW's access log; and the store's floor: curl fetching the same
# layer with 16 parallel 4 MiB range GETs.
#
#   benchmarks/remote_restore.sh BUILD_DIR WORK_DIR [SIZE (default 256M)] [VM counts (default "1 10")]
#
# Wall times include the guests' own verification; on a loaded machine run it
# twice and compare within a run only.
set -euo pipefail
build=$(realpath "$1"); work=$2; size=${3:-256M}; vm_counts=${4:-1 10}
src=$(realpath "$(dirname "$0")/..")
rp=$build/src/cli/ringpager; gs=$build/tools/guestsim/rp-guestsim
mkdir -p "$work"; cd "$work"
if [ ! -f rgw.env ]; then "$src/tests/remote/rgw.sh" start "$PWD/rgw" > rgw.env; fi
set -a; . ./rgw.env; set +a
trap '"$src/tests/remote/rgw.sh" stop "$PWD/rgw" >/dev/null 2>&1; rm -f rgw.env' EXIT
sign=(--aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD"
      --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
if [ ! -f img.mem ]; then
  "$gs" generate --out img.mem --size "$size" --zero-fraction 0.3 --dup-fraction 0.1 >/dev/null
  "$rp" snapshot build --base img.mem --out snap.rpm --no-progress --no-sync >/dev/null
fi
curl -s -X PUT "${sign[@]}" "$AWS_ENDPOINT_URL/bench" >/dev/null
"$rp" snapshot push snap.rpm s3://bench/snap --no-progress | head -1

gets() { grep -c '"GET /bench/layers/' rgw/log/client.rgw.a.log || true; }
restore() {   # label vms serve-args...
    local label=$1 vms=$2; shift 2
    rm -f s.sock
    "$rp" serve --socket s.sock --mode prefetch --log-level warn "$@" &
    local pid=$!
    while [ ! -S s.sock ]; do kill -0 $pid || return 1; sleep 0.05; done   # a script, not a test
    local g0 t0 t1 ok=1 pids=()
    g0=$(gets); t0=$(date +%s.%N)
    for i in $(seq 1 "$vms"); do
        "$gs" run --socket s.sock --mem-file img.mem --regions "$size" --pattern none >/dev/null 2>&1 & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
    t1=$(date +%s.%N)
    kill -TERM $pid 2>/dev/null || true; wait $pid || true
    printf "%-30s vms=%-3d %8.3f s  range GETs %-5d verified %s\n" "$label" "$vms" "$(echo "$t1 - $t0" | bc)" \
        $(( $(gets) - g0 )) "$([ $ok = 1 ] && echo yes || echo NO)"
}
for vms in $vm_counts; do
    restore "local layered" "$vms" --snapshot snap.rpm
    rm -rf cache
    restore "s3 cold (empty cache)" "$vms" --snapshot s3://bench/snap --cache-dir cache
    restore "s3 warm (restarted engine)" "$vms" --snapshot s3://bench/snap --cache-dir cache
done
key=layers/$("$rp" snapshot inspect snap.rpm --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"][0]["id"])').rpl
bytes=$(stat -c %s snap.rpm.layer0.rpl); chunk=$((4 << 20))
t0=$(date +%s.%N)
for ((i = 0; i * chunk < bytes; i++)); do echo "$((i * chunk))-$((i * chunk + chunk - 1))"; done |
    xargs -P 16 -I{} curl -s -o /dev/null "${sign[@]}" -r {} "$AWS_ENDPOINT_URL/bench/$key"
t1=$(date +%s.%N)
printf "%-30s %8.3f s  (%d bytes, %d ranges of 4 MiB, 16 at once)\n" "store floor (curl)" \
    "$(echo "$t1 - $t0" | bc)" "$bytes" $(( (bytes + chunk - 1) / chunk ))
