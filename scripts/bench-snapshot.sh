#!/usr/bin/env bash
# Snapshot and restore: Accordion against Cloud Hypervisor (when ACCORDION_CH_BIN names its
# binary; .ci/run sets it where CI has one) on the same test guest, in the same test host
# (scripts/test-host.sh; directly where /dev/kvm boots Linux): 512 MiB of boot RAM and 1 GiB
# plugged in a 16 GiB virtio-mem region, 256 MiB of it written. Prints a markdown table of
# the medians of BENCH_RUNS runs: the snapshot's time, the files' length and the disk they
# take, and the time from starting a VMM with --restore (Copy and OnDemand) until the guest
# answers on its console; with the ratios of Accordion to Cloud Hypervisor.
#
# Usage: scripts/bench-snapshot.sh
# Environment: BENCH_RUNS (default 5), BENCH_KEEP=DIR (keep consoles, snapshots and results).
set -euo pipefail

LOG_TAG=bench-snapshot
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 0 ] || die "unknown option '$1' (usage: scripts/bench-snapshot.sh)"
RUNS=${BENCH_RUNS:-5}

log "building accordion (release)"
(cd "$ROOT" && cargo build --release --bin accordion >&2)
GUEST=$("$ROOT/scripts/build-guest.sh" --print-dir)
WORK=${BENCH_KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/accordion-bench-snapshot.XXXXXX")}
mkdir -p "$WORK"
[ -n "${BENCH_KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
# Inside the test host, the interpreter by absolute path (scripts/README.md); the paths go
# as arguments, not spliced into the shell text. The snapshots go to the test host's own
# disk (its TMPDIR), not through the shared folder.
# shellcheck disable=SC2016  # $1.. belong to the inner shell
# 12 GiB: two guests of 1.5 GiB and their snapshots, in a test host whose disk is its RAM.
ACCORDION_TEST_HOST_MEM=${ACCORDION_TEST_HOST_MEM:-12G} ACCORDION_TEST_HOST_RW=$WORK "$ROOT/scripts/test-host.sh" \
  sh -c 'd=$(mktemp -d); /usr/bin/python3 "$1" "$2" "$3" "$d" "$5" > "$4/results.jsonl"; cp "$d"/*.log "$4"/ 2>/dev/null; rm -rf "$d"' sh \
  "$ROOT/scripts/lib/snapshot-bench.py" "$ROOT/target/release" "$GUEST" "$WORK" "$RUNS" >&2
python - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(vmm, op, key="seconds"):
    xs = [r[key] for r in rows if r.get("vmm") == vmm and r.get("op") == op]
    return (statistics.median(xs), xs) if xs else (None, [])
ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
has_ch = any(r.get("vmm") == "cloud-hypervisor" for r in rows)
print("| measure | Accordion median | Cloud Hypervisor median | Accordion/Cloud Hypervisor "
      "| Accordion runs | Cloud Hypervisor runs |")
print("| --- | --- | --- | --- | --- | --- |")
for label, op, key, unit in (("snapshot time (s)", "snapshot", "seconds", 1),
                             ("files' length (MiB)", "snapshot", "file_len", 1 << 20),
                             ("disk taken, du (MiB)", "snapshot", "allocated", 1 << 20),
                             ("restore to running, Copy (s)", "restore-Copy", "seconds", 1),
                             ("restore to running, OnDemand (s)", "restore-OnDemand", "seconds", 1)):
    a, ar = med("accordion", op, key)
    c, cr = med("cloud-hypervisor", op, key)
    scale = lambda v: round(v / unit, 1) if v is not None and unit > 1 else v
    print(f"| {label} | {scale(a)} | {scale(c) if has_ch else 'not run'} | {ratio(a, c)} "
          f"| {[scale(x) for x in ar]} | {[scale(x) for x in cr]} |")
a, _ = med("accordion", "restore-OnDemand")
c, _ = med("cloud-hypervisor", "restore-Copy")
print(f"\nAccordion OnDemand against Cloud Hypervisor's Copy restore: {ratio(a, c)}")
PY
