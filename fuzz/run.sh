#!/usr/bin/env bash
# fuzz/run.sh SECONDS: builds the libFuzzer targets (clang-19, ASan + UBSan) into
# build-fuzz and runs each for SECONDS seconds on a temporary copy of its seed
# corpus (fuzz/corpus/TARGET; the repository is never written). Prints each
# target's executions; exits 1 if any target crashed, printing the saved input
# (under build-fuzz/crashes/TARGET/) and the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: fuzz/run.sh SECONDS" >&2
    exit 2
fi
targets=(fuzz_handshake fuzz_manifest fuzz_config fuzz_ws)

if [ ! -f build-fuzz/build.ninja ]; then
    CXX=clang++-19 meson setup build-fuzz -Dfuzz=true -Dtests=false >/dev/null
fi
# Only the fuzz targets: they are all this build is for.
if ! build_log=$(ninja -C build-fuzz -j "$(nproc)" "${targets[@]/#/fuzz/}" 2>&1); then
    echo "$build_log" >&2
    echo "fuzz/run.sh: building the fuzz targets failed" >&2
    exit 1
fi

# Symbolized stacks in crash reports when a symbolizer is installed (llvm-19, or any llvm).
for symbolizer in llvm-symbolizer-19 /usr/lib/llvm-19/bin/llvm-symbolizer llvm-symbolizer; do
    if command -v "$symbolizer" >/dev/null; then
        export ASAN_SYMBOLIZER_PATH="$(command -v "$symbolizer")"
        break
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
for target in "${targets[@]}"; do
    corpus="$work/$target"
    crashes="build-fuzz/crashes/$target"
    mkdir -p "$corpus" "$crashes"
    cp fuzz/corpus/"$target"/* "$corpus"/
    dict=()
    if [ -f "fuzz/dict/$target.dict" ]; then dict=(-dict="fuzz/dict/$target.dict"); fi
    log="$work/$target.log"
    status=0
    "build-fuzz/fuzz/$target" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" "${dict[@]}" "$corpus" >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ "$status" = 0 ] && [ -n "$executions" ]; then
        echo "$target: $executions executions in ${seconds}s, no crash"
        continue
    fi
    rc=1
    echo "$target: FAILED (exit $status) after ${executions:-?} executions"
    grep -E "invariant failed|runtime error|^==[0-9]+==ERROR|^SUMMARY|deadly signal|Test unit written to" "$log" \
        | head -n 20 | sed 's/^/  /' || true
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    cp "$log" "$crashes/last-run.log"
    if [ -n "$input" ]; then
        echo "  crash input: $input"
        echo "  reproduce:   build-fuzz/fuzz/$target $input"
    fi
    echo "  full log:    $crashes/last-run.log"
done
exit $rc
