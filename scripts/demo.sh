#!/usr/bin/env bash
# Builds Accordion and the test guest, then boots the guest: it reports its CPUs and
# MemTotal on the serial console and powers itself off. Runs inside the nested test host
# when this machine's KVM cannot boot Linux (scripts/test-host.sh says which).
#
# Usage: scripts/demo.sh [--cpus N] [--memory SIZE]     (defaults: 2 vCPUs, 1G)
set -euo pipefail

LOG_TAG=demo
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CPUS=2
MEMORY=1G
while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) CPUS=${2:?--cpus needs a number}; shift 2 ;;
    --memory) MEMORY=${2:?--memory needs a size}; shift 2 ;;
    *) die "unknown option '$1' (usage: scripts/demo.sh [--cpus N] [--memory SIZE])" ;;
  esac
done

log "building accordion (release)"
(cd "$ROOT" && cargo build --release)
GUEST=$("$ROOT/scripts/build-guest.sh" --print-dir)
log "booting $GUEST/vmlinux with $CPUS vCPUs and $MEMORY of RAM"
"$ROOT/scripts/test-host.sh" "$ROOT/target/release/accordion" \
  --kernel "$GUEST/vmlinux" --initramfs "$GUEST/initramfs.cpio.gz" \
  --cmdline "$(cat "$GUEST/cmdline") accordion.action=poweroff" \
  --cpus "boot=$CPUS" --memory "size=$MEMORY" -v
log "the guest powered off; accordion exited 0"
