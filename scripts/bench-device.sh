#!/usr/bin/env bash
# The virtio-mem device thread's own time per request, on this machine's CPU: the real device
# behind the real virtio-pci transport over a real mapping, driven through its queue as the
# Linux driver drives it (virtio-devices/benches/mem_device.rs). No guest and no KVM needed.
# Prints a markdown table. Target: median device time per request <= 5 us.
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
