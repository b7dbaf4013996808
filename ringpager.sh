#!/usr/bin/env bash
# ringpager's one entry point for newcomers and CI (run as root on Debian bookworm):
#   ./ringpager.sh demo   install what is missing, build, restore a generated snapshot into
#                         simulated VMs with ringpager (lazy and prefetch) and a baseline handler,
#                         and print the comparison report
#                         (demo --real-guest: a real Linux guest under QEMU instead; see docs/realguest.md;
#                         demo --remote: a snapshot pushed to a throwaway Ceph RGW and restored from s3://
#                         through the chunk cache, cold and warm, beside a local one; see docs/remote.md)
#   ./ringpager.sh test   install what is missing, build (plus ASan/UBSan and TSan builds), run every
#                         test, then fuzz each parser of hostile bytes for a minute (fuzz/run.sh)
#   ./ringpager.sh build  install what is missing and build into ./build
set -euo pipefail
cd "$(dirname "$0")"

packages=(g++ meson ninja-build pkg-config cmake python3 liburing-dev libmimalloc-dev libxxhash-dev libzstd-dev liblz4-dev
          nlohmann-json3-dev libcli11-dev libgtest-dev libbenchmark-dev prometheus-cpp-dev
          libsystemd-dev systemd  # sd_listen_fds/sd_notify; the tests run systemd-socket-activate, and systemd as PID 1
          util-linux                          # unshare, nsenter: the systemd-pid1 test's namespaces
          libcurl4-openssl-dev                 # the S3 client (src/remote)
          ceph-mon ceph-osd radosgw            # the remote suite's object store (tests/remote/rgw.sh)
          qemu-system-x86)  # the real-guest suite; its kernel and busybox come by `apt-get download`
fuzz_packages=(clang-19 libfuzzer-19-dev libclang-rt-19-dev)   # fuzz/run.sh, in `test` only

install_deps() {  # install_deps PACKAGE...
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "== installing: ${missing[*]}"
        if [ "$(id -u)" != 0 ]; then echo "ringpager.sh: run as root to install packages" >&2; exit 1; fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

build() {  # build DIR [meson options...]
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then meson setup "$dir" "$@" >/dev/null; fi
    ninja -C "$dir" >/dev/null
}

run_tests() {  # run_tests DIR: meson test, then one closing line counting GoogleTest cases
    local dir=$1; shift
    rm -rf "$dir/test-results"
    local rc=0
    meson test -C "$dir" --print-errorlogs "$@" || rc=$?
    python3 - "$dir/test-results" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
passed = failed = skipped = 0
failures = []
for f in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    try:
        root = ET.parse(f).getroot()
    except ET.ParseError as e:  # a test binary that crashed mid-run leaves a cut-off file
        failed += 1
        failures.append(f"{f}: unreadable results ({e}); the test binary probably crashed")
        continue
    for case in root.iter("testcase"):
        failure = case.find("failure")
        if failure is not None:
            failed += 1
            message = (failure.get("message") or failure.text or "").strip().splitlines()
            failures.append(f"{case.get('classname')}.{case.get('name')}: " + " | ".join(message[:6]))
        elif case.get("result") == "skipped" or case.find("skipped") is not None: skipped += 1
        else: passed += 1
for line in failures:  # named again here so the end of a long log says what failed
    print("FAILED " + line)
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
    return $rc
}

case "${1:-}" in
    build)
        install_deps "${packages[@]}"
        build build
        echo "built: build/src/cli/ringpager, build/tools/guestsim/rp-guestsim, build/tools/bench/rp-bench"
        ;;
    demo)
        install_deps "${packages[@]}"
        build build
        shift
        if [ "${1:-}" = --real-guest ]; then
            shift
            exec build/tools/realguest/rp-realguest demo "$@"
        fi
        if [ "${1:-}" = --remote ]; then
            shift
            work=$(mktemp -d /tmp/ringpager-remote-demo.XXXXXX)
            trap 'rm -rf "$work"' EXIT
            benchmarks/remote_restore.sh build "$work" "${1:-256M}" "${2:-1 10}"
            exit
        fi
        exec build/tools/bench/rp-bench "$@"
        ;;
    test)
        install_deps "${packages[@]}" "${fuzz_packages[@]}"
        build build
        echo "== tests (debugoptimized build)"
        rc=0
        run_tests build || rc=$?
        echo "== tests (ASan + UBSan build)"
        build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
        # systemd-pid1 checks the shipped units and their sandbox, not the code: normal build only
        # (the sandbox's seccomp filter and personality lock are not made for sanitizer runtimes).
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
            run_tests build-asan --no-suite bench-smoke --no-suite real-guest --no-suite systemd-pid1 || rc=$?
        echo "== tests (TSan build)"
        # -O0 (debug): half the compile time of -O2 and the tests stay I/O-bound; no access is
        # optimized away. Only the `ringpager` binary links mimalloc, and libtsan comes first in
        # its link order, so TSan's malloc interposes and mimalloc stays idle (as under ASan).
        # bench-smoke stays in (about 12 s): it runs the baseline's and rp-bench's threads; so does
        # remote (about 14 s, half of it starting and stopping RGW): the range fetcher is a thread.
        build build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
        # real-guest is built and run in the normal build only (QEMU under TCG is slow enough).
        TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
            run_tests build-tsan --no-suite real-guest --no-suite systemd-pid1 || rc=$?
        echo "== fuzzing (libFuzzer + ASan/UBSan, 60 s per target)"
        fuzz/run.sh 60 || rc=$?
        exit $rc
        ;;
    *)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
