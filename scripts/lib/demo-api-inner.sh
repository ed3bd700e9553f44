#!/bin/sh
# Runs where KVM boots Linux (called by scripts/demo-api.sh, possibly inside the test host):
# starts accordion with only an API socket and walks a VM through its life with
# accordion-remote, printing each command and its answer.
# Usage: demo-api-inner.sh BIN_DIR GUEST_DIR WORK_DIR
set -eu
BIN=$1 GUEST=$2 WORK=$3
SOCK=$WORK/api.sock
EVENTS=$WORK/events.jsonl
SERIAL=$WORK/serial.log
rm -f "$SOCK" "$EVENTS" "$SERIAL"

"$BIN/accordion" --api-socket "path=$SOCK" --event-monitor "path=$EVENTS" &
VMM=$!
trap 'kill $VMM 2>/dev/null || true' EXIT
# tick WHAT: one step of a wait; gives up when accordion has gone or after 10 minutes.
ticks=0
tick() {
  kill -0 $VMM 2>/dev/null || { echo "demo-api: accordion exited while waiting for $1" >&2; exit 1; }
  ticks=$((ticks + 1))
  [ "$ticks" -lt 3000 ] || { echo "demo-api: gave up waiting for $1" >&2; exit 1; }
  sleep 0.2
}

while [ ! -S "$SOCK" ]; do tick "the API socket"; done

run() {
  echo "\$ accordion-remote --api-socket $SOCK $*"
  "$BIN/accordion-remote" --api-socket "$SOCK" "$@" || echo "(exit status $?)"
}
wait_serial() {  # wait_serial PATTERN COUNT: until PATTERN is in the serial log COUNT times
  while :; do
    n=$(grep -c "$1" "$SERIAL" 2>/dev/null) || true
    [ "${n:-0}" -lt "$2" ] || break
    tick "$1 in the serial log"
  done
  grep "$1" "$SERIAL" | tail -1
}

cat > "$WORK/vm.json" <<JSON
{
  "cpus": {"boot_vcpus": 2},
  "memory": {"size": 1073741824},
  "payload": {"kernel": "$GUEST/vmlinux", "initramfs": "$GUEST/initramfs.cpio.gz",
              "cmdline": "$(cat "$GUEST/cmdline")"},
  "serial": {"mode": "File", "file": "$SERIAL"}
}
JSON

run ping
run create "$WORK/vm.json"
run boot
wait_serial ACCORDION_GUEST_READY 1
run info
run counters
run pause
run info | grep '"state"'
run resume
run boot
run reboot
wait_serial ACCORDION_GUEST_READY 2
run shutdown
run info | grep '"state"'
run boot
wait_serial ACCORDION_GUEST_READY 3
run power-button
wait $VMM && echo "accordion exited 0 after the guest powered off"
wait_serial ACCORDION_POWER_BUTTON 1

"$BIN/accordion" --api-socket "path=$SOCK" --event-monitor "path=$EVENTS.2" &
VMM=$!
while [ ! -S "$SOCK" ]; do tick "the API socket"; done
run create "$WORK/vm.json"
run delete
run info
run shutdown-vmm
wait $VMM && echo "accordion exited 0 after shutdown-vmm"
echo "--- events ---"
cat "$EVENTS" "$EVENTS.2"
