#!/bin/sh
# Runs where KVM boots Linux (called by scripts/demo.sh, possibly inside the test host):
# boots the test guest with a virtio-mem region, grows it and shrinks it through the API
# while the guest's MemTotal lines are shown, then presses the power button.
# Usage: demo-inner.sh BIN_DIR GUEST_DIR WORK_DIR CPUS MEMORY HOTPLUG_SIZE
set -eu
BIN=$1 GUEST=$2 WORK=$3 CPUS=$4 MEMORY=$5 HOTPLUG=$6
SOCK=$WORK/api.sock
SERIAL=$WORK/serial.log
rm -f "$SOCK" "$SERIAL"
: > "$SERIAL"

"$BIN/accordion" --kernel "$GUEST/vmlinux" --initramfs "$GUEST/initramfs.cpio.gz" \
  --cmdline "$(cat "$GUEST/cmdline")" --cpus "boot=$CPUS" \
  --memory "size=$MEMORY,hotplug_method=virtio-mem,hotplug_size=$HOTPLUG" \
  --serial "file=$SERIAL" --api-socket "path=$SOCK" &
VMM=$!
# tail ends with accordion, and grep with it.
tail --pid=$VMM -f "$SERIAL" | grep --line-buffered -E 'ACCORDION_GUEST_READY|MEMTOTAL|ACCORDION_POWER_BUTTON' &
TAIL=$!
trap 'kill $VMM $TAIL 2>/dev/null || true' EXIT

remote() { "$BIN/accordion-remote" --api-socket "$SOCK" "$@"; }
# tick WHAT: one step of a wait; gives up when accordion has gone or after 10 minutes.
ticks=0
tick() {
  kill -0 $VMM 2>/dev/null || { echo "demo: accordion exited while waiting for $1" >&2; exit 1; }
  ticks=$((ticks + 1))
  [ "$ticks" -lt 3000 ] || { echo "demo: gave up waiting for $1" >&2; exit 1; }
  sleep 0.2
}
plugged() { remote info | sed -n 's/.*"plugged_size": \([0-9]*\).*/\1/p' | head -1; }
requested() { remote info | sed -n 's/.*"requested_size": \([0-9]*\).*/\1/p' | head -1; }
settle() {  # until the guest has plugged what was requested
  while [ "$(plugged)" != "$(requested)" ]; do tick "the guest to plug what was requested"; done
  echo "demo: plugged $(($(plugged) >> 20)) MiB; memory_actual_size $(($(remote info | sed -n 's/.*"memory_actual_size": \([0-9]*\).*/\1/p') >> 20)) MiB"
}

until grep -q ACCORDION_GUEST_READY "$SERIAL"; do tick "the guest to boot"; done
sleep 1
for size in 3G 5G 2G 1G; do
  echo "demo: accordion-remote resize --memory $size"
  remote resize --memory "$size"
  settle
done
echo "demo: accordion-remote power-button"
remote power-button
wait $VMM
echo "demo: the guest powered off; accordion exited 0"
