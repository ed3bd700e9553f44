#!/usr/bin/env bash
# The virtio-mem device thread's own time per request, on this machine's CPU: the real device
# behind the real virtio-pci transport over a real mapping, driven through its queue as the
# Linux driver drives it. Two tables: over the discard backend alone
# (virtio-devices/benches/mem_device.rs), and over the VMM's protecting backend, which also
# mprotects blocks, adds and removes KVM memslots on a real VM and republishes the VMM's view
# of guest memory (vmm/benches/protected_device.rs; needs /dev/kvm, skipped without it).
# No guest runs. Target: median device time per request <= 5 us, slot updates included.
#
# Usage: scripts/bench-device.sh
# Environment: BENCH_ROUNDS (default 10).
set -euo pipefail

LOG_TAG=bench-device
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 0 ] || die "unknown option '$1' (usage: scripts/bench-device.sh)"
cd "$ROOT"
cargo bench -q -p virtio-devices --features test-utils --bench mem_device
echo
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  cargo bench -q -p vmm --bench protected_device
else
  log "no usable /dev/kvm: the table with KVM slot updates is skipped"
fi
