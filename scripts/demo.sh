#!/usr/bin/env bash
# Builds Accordion and the test guest, boots the guest with a virtio-mem region, and grows
# and shrinks its memory through the REST API (accordion-remote resize) while printing the
# guest's MemTotal; then presses the power button. Runs inside the nested test host when this
# machine's KVM cannot boot Linux (scripts/test-host.sh says which).
#
# Usage: scripts/demo.sh [--cpus N] [--memory SIZE] [--hotplug-size SIZE]
#        (defaults: 2 vCPUs, 1G of boot RAM, an 8G virtio-mem region)
set -euo pipefail

LOG_TAG=demo
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CPUS=2
MEMORY=1G
HOTPLUG=8G
usage="usage: scripts/demo.sh [--cpus N] [--memory SIZE] [--hotplug-size SIZE]"
while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) CPUS=${2:?--cpus needs a number}; shift 2 ;;
    --memory) MEMORY=${2:?--memory needs a size}; shift 2 ;;
    --hotplug-size) HOTPLUG=${2:?--hotplug-size needs a size}; shift 2 ;;
    *) die "unknown option '$1' ($usage)" ;;
  esac
done

log "building accordion and accordion-remote (release)"
(cd "$ROOT" && cargo build --release --bins)
GUEST=$("$ROOT/scripts/build-guest.sh" --print-dir)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/accordion-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "booting $GUEST/vmlinux: $CPUS vCPUs, $MEMORY of boot RAM, a $HOTPLUG virtio-mem region"
ACCORDION_TEST_HOST_RW=$WORK "$ROOT/scripts/test-host.sh" \
  "$ROOT/scripts/lib/demo-inner.sh" "$ROOT/target/release" "$GUEST" "$WORK" "$CPUS" "$MEMORY" "$HOTPLUG"
