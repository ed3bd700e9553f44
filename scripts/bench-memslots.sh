#!/usr/bin/env bash
# Host kernel memory a large virtio-mem region costs before the guest plugs anything:
# Accordion (dynamic memslots: a slot is in KVM only while it holds a plugged block) against
# QEMU with dynamic-memslots=off and =on, and Cloud Hypervisor when ACCORDION_CH_BIN names
# its binary, on this machine's KVM, regions of 64 GiB and 1 TiB, runs alternating. KVM's
# per-slot arrays (rmap, write tracking, dirty bitmap) are the cost: the drop of MemAvailable
# while the VMM runs is the measure (VmallocUsed is shown too; on some hosts the largest
# arrays do not show there). Prints a markdown table of the medians and what each peer costs
# more than Accordion. Both counters are system-wide: run it on a quiet machine.
#
# Usage: scripts/bench-memslots.sh
# Environment: BENCH_RUNS (default 3), ACCORDION_CH_BIN.
set -euo pipefail

LOG_TAG=bench-memslots
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 0 ] || die "unknown option '$1' (usage: scripts/bench-memslots.sh)"
RUNS=${BENCH_RUNS:-3}
[ -w /dev/kvm ] || die "needs /dev/kvm"

ensure_qemu
log "building accordion (release)"
(cd "$ROOT" && cargo build --release --bin accordion >&2)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/accordion-bench-memslots.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
python "$ROOT/scripts/lib/memslots-bench.py" "$ROOT/target/release/accordion" "$WORK" "$RUNS" \
  "${ACCORDION_CH_BIN:-}" > "$WORK/results.jsonl"
python - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
names = {"accordion": "Accordion", "qemu": "QEMU dynamic-memslots=off",
         "qemu-dynamic-memslots": "QEMU dynamic-memslots=on", "cloud-hypervisor": "Cloud Hypervisor"}
vmms = [v for v in names if any(r["vmm"] == v for r in rows)]
def med(vmm, gib, key):
    xs = [r[key] for r in rows if r["vmm"] == vmm and r["region_gib"] == gib and key in r]
    return statistics.median(xs) if xs else None
print("| region, nothing plugged | VMM | MemAvailable drop (MiB) | VmallocUsed delta (MiB) | more than Accordion (MiB, MemAvailable) | runs |")
print("| --- | --- | --- | --- | --- | --- |")
for gib in (64, 1024):
    base = med("accordion", gib, "available_kib")
    for v in vmms:
        vm, av = med(v, gib, "vmalloc_kib"), med(v, gib, "available_kib")
        errors = [r["error"] for r in rows if r["vmm"] == v and r["region_gib"] == gib and "error" in r]
        if vm is None:
            print(f"| {gib} GiB | {names[v]} | failed: {errors[:1]} | | | 0 |")
            continue
        more = "-" if v == "accordion" or base is None else f"{(av - base) / 1024:.0f}"
        runs = sum(1 for r in rows if r["vmm"] == v and r["region_gib"] == gib and "vmalloc_kib" in r)
        print(f"| {gib} GiB | {names[v]} | {av / 1024:.1f} | {vm / 1024:.1f} | {more} | {runs} |")
PY
