#!/usr/bin/env bash
# Builds Accordion and the test guest, then walks a VM through its life over the REST API
# with accordion-remote (create, boot, info, counters, pause, resume, reboot, shutdown,
# power-button, delete, shutdown-vmm), printing each command, its answer and the events.
# Runs inside the nested test host when this machine's KVM cannot boot Linux.
#
# Usage: scripts/demo-api.sh
set -euo pipefail

LOG_TAG=demo-api
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 0 ] || die "unknown option '$1' (usage: scripts/demo-api.sh)"

log "building accordion and accordion-remote (release)"
(cd "$ROOT" && cargo build --release --bins)
GUEST=$("$ROOT/scripts/build-guest.sh" --print-dir)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/accordion-demo-api.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ACCORDION_TEST_HOST_RW=$WORK "$ROOT/scripts/test-host.sh" \
  "$ROOT/scripts/lib/demo-api-inner.sh" "$ROOT/target/release" "$GUEST" "$WORK"
