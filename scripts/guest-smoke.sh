#!/usr/bin/env bash
# Smoke test of the test environment, independent of Accordion: boot the test guest from
# scripts/build-guest.sh with QEMU on KVM and check its console protocol (the READY line,
# the CPU count, the command loop, MEMTOTAL after a virtio-mem resize, poweroff).
#
# Usage: scripts/test-host.sh scripts/guest-smoke.sh     (on a machine without hardware KVM)
#        scripts/guest-smoke.sh                          (where /dev/kvm boots Linux)
#
# Environment:
#   ACCORDION_GUEST_DIR     the guest to boot (default: $CACHE/guest/current; build it
#                           first with scripts/build-guest.sh, the test host has no network)
#   ACCORDION_SMOKE_TIMEOUT seconds allowed for each boot or command (default 120)
#   ACCORDION_SMOKE_VERBOSE=1  show each guest's console output
set -euo pipefail

LOG_TAG=guest-smoke
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

GUEST=${ACCORDION_GUEST_DIR:-$ACCORDION_CACHE/guest/current}
STEP_TIMEOUT=${ACCORDION_SMOKE_TIMEOUT:-120}
WORK=
QEMU_PID=
T0=
LOG_POS=0
MATCH=

# ---------------------------------------------------------------------------- one guest

# start_guest SMP EXTRA_CMDLINE [QEMU_ARGS...] — boot in the background; the console
# goes to $WORK/console.log, input comes from the fifo $WORK/in (kept open on fd 3).
start_guest() {
  local smp=$1 extra=$2
  shift 2
  rm -f "$WORK/console.log" "$WORK/in" "$WORK/mon"
  mkfifo "$WORK/in"
  LOG_POS=0
  exec 3<>"$WORK/in"
  T0=$EPOCHREALTIME
  qemu-system-x86_64 -accel kvm -cpu host -machine q35 -smp "$smp" -m 512M,slots=1,maxmem=4G \
    -nodefaults -display none -no-reboot -serial stdio \
    -monitor "unix:$WORK/mon,server=on,wait=off" \
    -kernel "$GUEST/bzImage" -initrd "$GUEST/initramfs.cpio.gz" \
    -append "$(cat "$GUEST/cmdline") $extra" "$@" \
    <&3 > "$WORK/console.log" 2>&1 &
  QEMU_PID=$!
}

elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for REGEX — until a console line after the last one matched matches REGEX (like
# expect: markers are consumed in order); the line goes to MATCH. Only complete lines count,
# and the guest's "\r\n" line ends are stripped.
wait_for() {
  local re=$1 deadline=$((SECONDS + STEP_TIMEOUT)) hit
  while [ $SECONDS -lt $deadline ]; do
    if hit=$(complete_lines_after "$LOG_POS" | grep -a -n -m1 -E "$re"); then
      LOG_POS=$((LOG_POS + ${hit%%:*}))
      MATCH=${hit#*:}
      return 0
    fi
    kill -0 "$QEMU_PID" 2>/dev/null || fail "QEMU exited before the console showed /$re/"
    sleep 0.1
  done
  fail "no /$re/ on the console within ${STEP_TIMEOUT} s"
}

complete_lines_after() {
  local log=$WORK/console.log
  [ -s "$log" ] || return 0
  if [ "$(tail -c1 "$log" | od -An -c | tr -d ' ')" = '\n' ]; then
    tail -n +"$(($1 + 1))" "$log"
  else
    tail -n +"$(($1 + 1))" "$log" | head -n -1
  fi | tr -d '\r'
}

# wait_exit — QEMU must end by itself (the guest powered off).
wait_exit() {
  local deadline=$((SECONDS + STEP_TIMEOUT)) rc=0
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "the guest did not power off within ${STEP_TIMEOUT} s"
    sleep 0.1
  done
  wait "$QEMU_PID" || rc=$?
  QEMU_PID=
  exec 3>&-
  if [ "${ACCORDION_SMOKE_VERBOSE:-0}" = 1 ]; then
    tr -d '\r' < "$WORK/console.log" | sed 's/^/    | /' >&2
  fi
  [ "$rc" = 0 ] || fail "QEMU exited with status $rc"
}

send() { printf '%s\n' "$1" >&3; }

# monitor CMD — one QEMU human monitor command over its unix socket.
monitor() {
  python - "$WORK/mon" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
time.sleep(0.5)
s.close()
PY
}

fail() {
  log "FAIL: $*"
  if [ -f "$WORK/console.log" ]; then
    log "console so far:"
    sed 's/^/    /' "$WORK/console.log" >&2
  fi
  exit 1
}

cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
  [ -n "$WORK" ] && rm -rf "$WORK"
  return 0
}

# ---------------------------------------------------------------------------- checks

check_poweroff_boot() {
  local smp=$1
  start_guest "$smp" accordion.action=poweroff
  wait_for 'ACCORDION_GUEST_READY '
  log "smp=$smp: READY after $(elapsed) s: $MATCH"
  [[ $MATCH =~ \ cpus=$smp\  ]] || fail "expected cpus=$smp in: $MATCH"
  wait_exit
  log "smp=$smp: powered off after $(elapsed) s"
}

check_command_loop() {
  local kb
  start_guest 1 "" -object memory-backend-ram,id=vmem0,size=1G \
    -device virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0
  wait_for 'ACCORDION_GUEST_READY '
  log "command loop: READY after $(elapsed) s: $MATCH"
  wait_for 'MEMTOTAL [0-9]+ kB'
  kb=$(echo "$MATCH" | awk '{ print $2 }')

  send 'echo hi; cat /proc/cpuinfo | grep -c processor'
  wait_for 'ACCORDION_CMD_DONE rc=0$'
  grep -a -q '^hi' "$WORK/console.log" || fail "no output of 'echo hi'"
  send 'exit 7'
  wait_for 'ACCORDION_CMD_DONE rc=7$'
  log "command loop: rc=0 and rc=7 reported after $(elapsed) s"

  # virtio-mem: plug 512 MiB; the MEMTOTAL watcher must report the new total.
  monitor "qom-set /machine/peripheral/vm0 requested-size 536870912"
  wait_for "MEMTOTAL $((kb + 524288)) kB"
  log "virtio-mem: MemTotal grew by 512 MiB, seen after $(elapsed) s"

  send 'cat /sys/devices/system/node/node0/meminfo | head -n 3'
  wait_for 'ACCORDION_CMD_DONE rc=0$'
  send 'poweroff -f'
  wait_exit
  log "command loop: powered off after $(elapsed) s"
}

main() {
  [ -f "$GUEST/bzImage" ] || die "no guest at $GUEST; run scripts/build-guest.sh first"
  [ -c /dev/kvm ] || die "no /dev/kvm here; run this through scripts/test-host.sh"
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is not installed"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/accordion-smoke.XXXXXX")
  trap cleanup EXIT
  log "guest: $GUEST"
  check_poweroff_boot 1
  check_poweroff_boot 2
  check_command_loop
  echo "guest-smoke: 3 passed, 0 failed"
}

main "$@"
