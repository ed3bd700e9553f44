#!/usr/bin/env bash
# Host kernel memory a large virtio-mem region costs: Accordion (dynamic memslots: a slot is
# in KVM only while it holds a plugged block) against QEMU with dynamic-memslots=off and =on,
# and Cloud Hypervisor when ACCORDION_CH_BIN names its binary, runs alternating. KVM's
# per-slot arrays (rmap, write tracking, dirty bitmap) are the cost: the drop of MemAvailable
# while the VMM runs is the measure (VmallocUsed is shown too; on some hosts the largest
# arrays do not show there). Two places:
#   - this machine's KVM, regions of 64 GiB and 1 TiB, nothing plugged (no guest runs: this
#     KVM runs no 32-bit guest code);
#   - the nested test host (scripts/test-host.sh), regions of 64 GiB and 512 GiB (its CPU has
#     40 physical address bits, too few for 1 TiB and the PCI window), nothing plugged and
#     1 GiB plugged by a probe guest that speaks the virtio-mem protocol to each VMM
#     (tests/probes/virtio_mem_plug.c, built with the host's gcc).
# Prints a markdown table of the medians and what each peer costs more than Accordion. Both
# counters are system-wide: run it on a quiet machine.
#
# Usage: scripts/bench-memslots.sh
# Environment: BENCH_RUNS (default 3), ACCORDION_CH_BIN, BENCH_NO_TEST_HOST=1 (host only).
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
mkdir -p "$WORK/host" "$WORK/test-host"
log "this machine's KVM"
python "$ROOT/scripts/lib/memslots-bench.py" "$ROOT/target/release/accordion" "$WORK/host" \
  "$RUNS" "${ACCORDION_CH_BIN:-}" 64,1024 > "$WORK/host/results.jsonl"
if [ -z "${BENCH_NO_TEST_HOST:-}" ]; then
  log "the test host, with a probe guest that plugs 1 GiB"
  sh "$ROOT/tests/probes/build.sh" virtio_mem_plug "$WORK/test-host/probe.bin" -DBENCH \
    -DPLUG_MIB=1024
  # shellcheck disable=SC2016  # $1.. belong to the inner shell
  ACCORDION_TEST_HOST_RW=$WORK/test-host "$ROOT/scripts/test-host.sh" \
    sh -c '/usr/bin/python3 "$1" "$2" "$3" "$4" "$5" "$6" "$7" > "$3/results.jsonl"' sh \
    "$ROOT/scripts/lib/memslots-bench.py" "$ROOT/target/release/accordion" "$WORK/test-host" \
    "$RUNS" "${ACCORDION_CH_BIN:-}" 64,512 "$WORK/test-host/probe.bin" >&2
fi
python - "$WORK" <<'PY'
import json, os, statistics, sys
rows = []
for where in ("host", "test-host"):
    path = os.path.join(sys.argv[1], where, "results.jsonl")
    if os.path.exists(path):
        rows += [dict(json.loads(l), where=where) for l in open(path) if l.strip()]
names = {"accordion": "Accordion", "qemu": "QEMU dynamic-memslots=off",
         "qemu-dynamic-memslots": "QEMU dynamic-memslots=on", "cloud-hypervisor": "Cloud Hypervisor"}
vmms = [v for v in names if any(r["vmm"] == v for r in rows)]
places = {"host": "this machine's KVM", "test-host": "test host (nested)"}
def pick(v, where, gib, plugged):
    return [r for r in rows if r["vmm"] == v and r["where"] == where
            and r["region_gib"] == gib and r.get("plugged_gib", 0) == plugged]
def med(rs, key):
    xs = [r[key] for r in rs if key in r]
    return statistics.median(xs) if xs else None
print("| where | region | plugged | VMM | MemAvailable drop (MiB) | VmallocUsed delta (MiB) "
      "| more than Accordion (MiB, MemAvailable) | runs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
cases = sorted({(r["where"], r["region_gib"], r.get("plugged_gib", 0)) for r in rows},
               key=lambda c: (c[0] != "host", c[1], c[2]))
for where, gib, plugged in cases:
    base = med(pick("accordion", where, gib, plugged), "available_kib")
    for v in vmms:
        rs = pick(v, where, gib, plugged)
        vm, av = med(rs, "vmalloc_kib"), med(rs, "available_kib")
        head = f"| {places[where]} | {gib} GiB | {plugged} GiB | {names[v]} "
        if vm is None:
            errors = [r["error"] for r in rs if "error" in r]
            print(f"{head}| failed: {errors[:1]} | | | 0 |")
            continue
        more = "-" if v == "accordion" or base is None else f"{(av - base) / 1024:.0f}"
        runs = sum(1 for r in rs if "vmalloc_kib" in r)
        print(f"{head}| {av / 1024:.1f} | {vm / 1024:.1f} | {more} | {runs} |")
PY
