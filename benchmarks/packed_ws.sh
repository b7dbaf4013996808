#!/bin/bash
# Packed working-set layer against the plain replay (docs/benchmarks.md,
# "Packed working-set layer"): rp-bench's lazy and replay handlers on the
# hotset-fixed workload, once serving the layered snapshot with --working-set
# (`--snapshot-source layered`) and once the snapshot packed with that set
# (`--snapshot-source layered-packed`: no --working-set, the packed layer is
# replayed), alternating which goes first, ROUNDS times; after each packed
# run, `dd` of the packed layer (warm page cache, bs=4M) against the replay's
# own `replay read R MiB in T ms (N reads, in flight B ms)`: T is the read
# phase (first read issued to last done, paced by the installs that free
# read buffers), B the time some read was in flight (what the reads took).
# Prints one line per run and the medians.
#
#   benchmarks/packed_ws.sh BUILD_DIR WORK_DIR [SIZE (default 512M)] [ROUNDS (default 5)] [cold]
#
# `cold`: rp-bench --cold-cache (the image, the manifests and every layer file
# dropped from the page cache before each scenario); dd then still reads a
# warm layer (it follows the replay), so its column is only meaningful warm.
#
# Ratios are within a round; the machine's noise is larger than any absolute figure.
set -euo pipefail
build=$(realpath "$1"); work=$2; size=${3:-512M}; rounds=${4:-5}; cold=${5:-}
bench=$build/tools/bench/rp-bench
mkdir -p "$work"; work=$(realpath "$work")
mem=$work/snapshot.mem
run() {  # run SOURCE DIR: one rp-bench run; prints "done_lazy done_replay replay_mib replay_ms reads busy_ms"
  local source=$1 dir=$2
  rm -rf "$dir"; mkdir -p "$dir"
  local args=(--handlers lazy,replay --workloads hotset-fixed --vms 1 --vcpus 1 --rounds 1
              --snapshot-source "$source" --work-dir "$dir")
  if [ -f "$mem" ]; then args+=(--mem-file "$mem"); else args+=(--image-size "$size"); fi
  if [ "$cold" = cold ]; then args+=(--cold-cache); fi
  "$bench" "${args[@]}" > "$dir/report.txt" 2>&1
  [ -f "$mem" ] || cp "$dir/snapshot.mem" "$mem"
  local lazy replay line
  lazy=$(awk '$1 == "lazy" && NF > 5 {print $3; exit}' "$dir/report.txt")
  replay=$(awk '$1 == "replay" && NF > 5 {print $3; exit}' "$dir/report.txt")
  line=$(grep -ho "replay read [0-9.]* MiB in [0-9.]* ms ([0-9]* reads, in flight [0-9.]* ms)" "$dir"/replay-*.log | head -1)
  echo "$lazy $replay $(echo "$line" | awk '{print $3, $6, substr($8, 2), $12}')"
}
dd_ms() {  # dd_ms FILE: milliseconds dd takes to read it (warm page cache)
  cat "$1" > /dev/null
  dd if="$1" of=/dev/null bs=4M 2>&1 | awk '/copied/ {for (i = 1; i <= NF; i++) if ($i == "s,") print $(i - 1) * 1000}'
}
printf '%-6s %-7s %8s %9s %10s %10s %6s %9s %8s %9s %9s\n' round source lazy_s replay_s read_MiB read_ms reads inflight dd_ms dd/read dd/inflt
for r in $(seq 1 "$rounds"); do
  order=(layered layered-packed); [ $((r % 2)) -eq 0 ] && order=(layered-packed layered)
  for source in "${order[@]}"; do
    set -- $(run "$source" "$work/$source")
    d=-; ratio=-; ratio_busy=-
    if [ "$source" = layered-packed ]; then
      layer=$(ls "$work/$source"/packed-*.rpm.layer*.rpl | head -1)
      d=$(dd_ms "$layer"); ratio=$(awk -v d="$d" -v t="$4" 'BEGIN {printf "%.2f", d / t}')
      ratio_busy=$(awk -v d="$d" -v t="$6" 'BEGIN {printf "%.2f", d / t}')
    fi
    printf '%-6s %-7s %8s %9s %10s %10s %6s %9s %8s %9s %9s\n' "$r" "${source#layered-}" "$1" "$2" "$3" "$4" "$5" "$6" "$d" "$ratio" "$ratio_busy"
  done
done | tee "$work/runs.txt"
echo "medians:"
for s in layered packed; do
  awk -v s="$s" '$2 == s {print}' "$work/runs.txt" | sort -k4 -n | awk -v s="$s" '{a[NR] = $0} END {print s": median replay done run: " a[int((NR + 1) / 2)]}'
done
awk '$2 == "layered" || $2 == "packed" {print $2, $3 / $4}' "$work/runs.txt" | sort -k1,1 -k2n |
  awk '{v[$1] = v[$1] " " $2; n[$1]++} END {for (s in v) print s ": lazy/replay per run:" v[s]}'
awk '$2 == "packed" {print $10}' "$work/runs.txt" | sort -n | awk '{a[NR] = $1} END {print "packed: dd/read phase per run (sorted): " a[1] " .. " a[NR] ", median " a[int((NR + 1) / 2)]}'
awk '$2 == "packed" {print $11}' "$work/runs.txt" | sort -n | awk '{a[NR] = $1} END {print "packed: dd/reads in flight per run (sorted): " a[1] " .. " a[NR] ", median " a[int((NR + 1) / 2)]}'
