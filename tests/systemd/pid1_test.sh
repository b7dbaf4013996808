#!/usr/bin/env bash
# The shipped units (contrib/systemd) under a real systemd as PID 1: systemd
# boots in a PID and mount namespace of its own, the unit files, config and
# binary are put where docs/systemd.md installs them, and then:
#   - ringpager.socket listens and a VM's connect activates ringpager.service;
#   - the service serves the VM with its whole sandbox on (every page checked
#     by rp-guestsim), and reaches "active" only through READY=1;
#   - inside the service: no capabilities, no new privileges, a seccomp
#     filter, a read-only /usr and a private /tmp;
#   - `systemctl stop` is a clean exit (Result=success, status 0);
#   - the socket stays with systemd: the next VM activates the service again
#     and is served.
# The host is left as it was. systemd's early boot (sysinit.target) would
# clean /tmp, apply sysctls and create users: here sysinit.target is empty,
# /proc/sys is read-only (as container managers leave it), /run and /tmp are
# fresh tmpfs, and /etc, /var and /usr/local are overlays whose writes go to
# a tmpfs. systemd is powered off at the end and the cgroups it made are
# removed. A canary file in the host's /tmp must survive.
# Usage: pid1_test.sh RINGPAGER RP_GUESTSIM CONTRIB_SYSTEMD_DIR WORK_PARENT
set -euo pipefail

ringpager=$(realpath "$1") guestsim=$(realpath "$2") contrib=$(realpath "$3") parent=$4
systemd=/lib/systemd/systemd
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root: systemd runs as PID 1 of a new PID namespace"
[ -x "$systemd" ] || fail "no $systemd (apt-get install systemd)"
command -v unshare >/dev/null && command -v nsenter >/dev/null || fail "needs unshare and nsenter (util-linux)"
grep -qw overlay /proc/filesystems || fail "needs overlayfs (the namespace's /etc, /var and /usr/local)"

# Not under /tmp: the namespace gets a /tmp of its own.
mkdir -p "$parent"
work=$(mktemp -d "$(realpath "$parent")/rp-pid1.XXXXXX")
canary=$(mktemp /tmp/rp-pid1-canary.XXXXXX)
init="" unshare_pid=""
cgroups_before=$(find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | sort)
cleanup() {
    # SIGKILL to a PID namespace's init ends every process in it.
    if [ -n "$init" ] && kill -0 "$init" 2>/dev/null; then kill -9 "$init" 2>/dev/null || true; fi
    if [ -n "$unshare_pid" ]; then wait "$unshare_pid" 2>/dev/null || true; fi
    # The cgroups systemd made (named after its units, empty once its
    # processes are gone), deepest first.
    local made
    made=$(comm -13 <(echo "$cgroups_before") <(find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | sort) |
        grep -E '\.(slice|scope|service|socket|mount|swap)(/|$)' | sort -r || true)
    for d in $made; do rmdir "$d" 2>/dev/null || true; done
    rm -rf "$work"
    rm -f "$canary"
}
trap cleanup EXIT

"$guestsim" generate --out "$work/vm.mem" --size 16M >/dev/null
cp "$ringpager" "$work/ringpager"
cp "$contrib/ringpager.service" "$contrib/ringpager.socket" "$contrib/serve.json" "$work/"
# Prefetch, so that the default pace (auto) reads its signals under the sandbox.
sed -i 's/"mode": "lazy"/"mode": "prefetch"/' "$work/serve.json"
grep -q '"mode": "prefetch"' "$work/serve.json" || fail "serve.json has no lazy listener to turn to prefetch"

# Runs as PID 1 of the new namespaces, then becomes systemd.
cat > "$work/inner.sh" <<'INNER'
#!/usr/bin/env bash
set -euo pipefail
work=$1 systemd=$2
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for d in /etc /var /usr/local; do
    n=$(basename "$d")
    mkdir -p "/run/rp-upper/$n/upper" "/run/rp-upper/$n/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=/run/rp-upper/$n/upper,workdir=/run/rp-upper/$n/work" "$d"
done
mount -t tmpfs tmpfs /usr/lib/systemd/system/sysinit.target.wants
printf '[Unit]\nDescription=System Initialization (empty: ringpager PID 1 test)\n' > /etc/systemd/system/sysinit.target
printf '[Unit]\nDescription=ringpager PID 1 test\n' > /etc/systemd/system/rp-pid1-test.target
# Installed as docs/systemd.md says.
mkdir -p /usr/local/bin /etc/ringpager /var/lib/ringpager
cp "$work/ringpager" /usr/local/bin/ringpager
cp "$work/serve.json" /etc/ringpager/serve.json
cp "$work/vm.mem" /var/lib/ringpager/vm.mem
cp "$work/ringpager.service" "$work/ringpager.socket" /etc/systemd/system/
export container=rp-pid1-test NOTIFY_SOCKET="$work/notify"
exec "$systemd" --system --unit=rp-pid1-test.target
INNER
chmod +x "$work/inner.sh"

# systemd in a container tells its manager READY=1 on NOTIFY_SOCKET once it
# has started up (as under systemd-nspawn): this script is that manager.
python3 - "$work/notify" > "$work/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
s.settimeout(120)
while True:
    msg = s.recv(4096).decode(errors="replace")
    print(msg, flush=True)
    if "READY=1" in msg.split("\n"):
        break
PY
listener=$!
until grep -q bound "$work/notify.log" 2>/dev/null; do
    kill -0 "$listener" 2>/dev/null || fail "the notify listener did not start: $(cat "$work/notify.log")"
done
unshare --pid --fork --mount --propagation private --mount-proc "$work/inner.sh" "$work" "$systemd" \
    > "$work/systemd.log" 2>&1 &
unshare_pid=$!
wait "$listener" || fail "systemd sent no READY=1 within 120 s: $(cat "$work/notify.log" "$work/systemd.log")"
init=$(pgrep -P "$unshare_pid") || fail "no init under unshare: $(cat "$work/systemd.log")"
in_ns() { timeout 60 nsenter -t "$init" -m -p "$@"; }
prop() { in_ns systemctl show "$1" -p "$2" --value; }

state=$(in_ns systemctl is-system-running || true)
[ "$state" = running ] || fail "systemd is not running: $state; $(cat "$work/systemd.log")"
[ -e "$canary" ] || fail "the host's /tmp was cleaned"
# The journal (pulled in by the sysinit.target emptied above) keeps the
# service's log; it writes to the overlaid /var or to /run.
in_ns systemctl start systemd-journald.service || fail "systemd-journald did not start"
ok "systemd $(in_ns systemctl --version | head -1 | cut -d' ' -f2) is PID 1 of its namespace"

in_ns systemctl start ringpager.socket || fail "ringpager.socket did not start"
in_ns test -S /run/ringpager/vm.sock || fail "no socket at /run/ringpager/vm.sock"
[ "$(prop ringpager.service ActiveState)" = inactive ] || fail "the service ran before any VM connected"
ok "ringpager.socket listens on /run/ringpager/vm.sock; the service is not started"

restore() {  # restore NAME: one VM through the socket, every page checked
    local out
    out=$(in_ns "$guestsim" run --socket /run/ringpager/vm.sock --mem-file /var/lib/ringpager/vm.mem \
        --regions 16M --pattern random --vcpus 2 2>&1) || fail "$1: rp-guestsim failed: $out"
    case "$out" in
        *"verify: 4096 pages checked (0 expected zero), 0 mismatches"*) ;;
        *) fail "$1: not every page verified: $out" ;;
    esac
}

restore "first VM"
[ "$(prop ringpager.service ActiveState)" = active ] || fail "service not active after the first VM"
status=$(prop ringpager.service StatusText)
case "$status" in
    "serving: "*"1 accepted"*) ;;
    *) fail "STATUS= is '$status'" ;;
esac
ok "the first VM activated ringpager.service (Type=notify: active), was served byte-exact; STATUS=$status"

main=$(prop ringpager.service MainPID)
proc_status=$(in_ns cat "/proc/$main/status")
grep -q '^NoNewPrivs:[[:space:]]*1$' <<<"$proc_status" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:[[:space:]]*2$' <<<"$proc_status" || fail "no seccomp filter"
grep -q '^CapEff:[[:space:]]*0000000000000000$' <<<"$proc_status" || fail "capabilities left: $(grep Cap <<<"$proc_status")"
grep -q '^CapBnd:[[:space:]]*0000000000000000$' <<<"$proc_status" || fail "bounding set not empty"
if in_ns nsenter -t "$main" -m test -w /usr; then fail "/usr is writable in the service"; fi  # access(): EROFS
in_ns sh -c ': > /tmp/rp-pid1-outside'
if in_ns nsenter -t "$main" -m test -e /tmp/rp-pid1-outside; then fail "/tmp is not private"; fi
ok "inside the service: no capabilities, NoNewPrivs, seccomp, read-only /usr, private /tmp"

in_ns systemctl stop ringpager.service || fail "systemctl stop failed"
result=$(prop ringpager.service Result) code=$(prop ringpager.service ExecMainStatus)
[ "$result" = success ] && [ "$code" = 0 ] || fail "stop: Result=$result ExecMainStatus=$code"
in_ns test -S /run/ringpager/vm.sock || fail "the socket went with the service"
ok "systemctl stop: clean exit (Result=success, status 0); the socket stays with systemd"

restore "second VM"
[ "$(prop ringpager.service ActiveState)" = active ] || fail "the second VM did not activate the service"
in_ns journalctl --no-pager -u ringpager.service | grep -q '/run/ringpager/vm.sock (from systemd)' ||
    fail "the engine did not say it took the socket from systemd"
ok "the second VM activated the service again and was served byte-exact"
# The sandbox leaves the default prefetch pace (auto) its signals: the VM
# process's threads (the guest runs as the service's user, so
# ProtectProc=invisible shows it) and /proc/pressure/cpu.
journal=$(in_ns journalctl --no-pager -u ringpager.service)
! grep -q 'CPU pressure unavailable\|run delay unreadable' <<<"$journal" ||
    fail "the sandboxed service cannot read a pace signal: $(grep 'unavailable\|unreadable' <<<"$journal")"
ok "the sandboxed service reads its VMs' run delay and /proc/pressure/cpu (the auto prefetch pace's signals)"

in_ns systemctl stop ringpager.service ringpager.socket
# In a container, poweroff ends PID 1 once every unit has stopped.
in_ns systemctl poweroff --no-block 2>/dev/null || fail "systemctl poweroff failed"
timeout 60 tail --pid="$unshare_pid" -f /dev/null || fail "systemd did not power off within 60 s"
wait "$unshare_pid" || true
unshare_pid="" init=""
[ -e "$canary" ] || fail "the host's /tmp was cleaned"
echo "PASS: the shipped units work under systemd as PID 1"
