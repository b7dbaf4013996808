#!/bin/bash
# Warm restores from s3://, zstd-1 frames against the uncompressed layer, of one memory
# file (docs/remote.md "Compressed layers on real guest memory"): both pushed to a
# throwaway RGW; per round and source, an engine restarted on its warm cache directory
# serves VM 1 (the engine's first restore) and then VM 2, each timed on its own
# (rp-guestsim, prefetch, every page verified). Prints seconds per VM; compare within a run.
#
#   benchmarks/s3_zstd_warm.sh BUILD_DIR WORK_DIR MEM_FILE
#   (e.g. MEM_FILE = build/realguest-cache/snapshot-256m-2cpu-16f-16h-200ms/mem)
set -euo pipefail
build=$(realpath "$1"); work=$2; mem=$(realpath "$3")
src=$(realpath "$(dirname "$0")/..")
rp=$build/src/cli/ringpager; gs=$build/tools/guestsim/rp-guestsim
mkdir -p "$work"; cd "$work"
"$src/tests/remote/rgw.sh" start "$PWD/rgw" > rgw.env
set -a; . ./rgw.env; set +a
trap '"$src/tests/remote/rgw.sh" stop "$PWD/rgw" >/dev/null 2>&1' EXIT
sign=(--aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
"$rp" snapshot build --base "$mem" --out plain.rpm --no-progress --no-sync >/dev/null
"$rp" snapshot build --base "$mem" --out z.rpm --compress zstd --no-progress --no-sync >/dev/null
curl -s -X PUT "${sign[@]}" "$AWS_ENDPOINT_URL/bench" >/dev/null
"$rp" snapshot push plain.rpm s3://bench/plain --no-progress | head -1
"$rp" snapshot push z.rpm s3://bench/z --no-progress | head -1
size=$(stat -c %s "$mem")
one() { local t0 t1; t0=$(date +%s.%N); "$gs" run --socket s.sock --mem-file "$mem" --regions "$size" --pattern none >/dev/null 2>&1 || echo FAIL >&2; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
serve() { # name -> prints "vm1 vm2"
    rm -f s.sock
    "$rp" serve --socket s.sock --mode prefetch --log-level warn --snapshot s3://bench/$1 --cache-dir cache-$1 &
    local pid=$!
    while [ ! -S s.sock ]; do kill -0 $pid || return 1; sleep 0.02; done
    local a b; a=$(one); b=$(one)
    kill -TERM $pid; wait $pid || true
    echo "$a $b"
}
serve plain >/dev/null; serve z >/dev/null   # fill both caches
for r in 1 2 3 4 5 6; do
  if (( r % 2 )); then p=$(serve plain); z=$(serve z); else z=$(serve z); p=$(serve plain); fi
  echo "round $r plain $p zstd $z"
done
