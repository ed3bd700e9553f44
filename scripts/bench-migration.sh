#!/usr/bin/env bash
# Live migration: Accordion against Cloud Hypervisor (when ACCORDION_CH_BIN names its binary;
# .ci/run sets it where CI has one) on the same test guest, in the same test host
# (scripts/test-host.sh; directly where /dev/kvm boots Linux): an idle guest with 1 GiB of
# boot RAM and a 16 GiB virtio-mem region with 1 GiB plugged, over a unix socket. Prints a
# markdown table of the medians of BENCH_RUNS alternating runs: the total time, the
# downtime the guest's console shows (the gap in a tick it prints about every millisecond), and the
# bytes the source wrote; with the ratios of Accordion to Cloud Hypervisor.
#
# Usage: scripts/bench-migration.sh
# Environment: BENCH_RUNS (default 5), BENCH_KEEP=DIR (keep consoles and results).
set -euo pipefail

LOG_TAG=bench-migration
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 0 ] || die "unknown option '$1' (usage: scripts/bench-migration.sh)"
RUNS=${BENCH_RUNS:-5}

log "building accordion (release)"
(cd "$ROOT" && cargo build --release --bin accordion >&2)
GUEST=$("$ROOT/scripts/build-guest.sh" --print-dir)
WORK=${BENCH_KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/accordion-bench-migration.XXXXXX")}
mkdir -p "$WORK"
[ -n "${BENCH_KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
# Inside the test host, the interpreter by absolute path (scripts/README.md); the paths go
# as arguments. Two guests of 2 GiB each at the moment of the migration.
# shellcheck disable=SC2016  # $1.. belong to the inner shell
ACCORDION_TEST_HOST_MEM=${ACCORDION_TEST_HOST_MEM:-10G} ACCORDION_TEST_HOST_RW=$WORK "$ROOT/scripts/test-host.sh" \
  sh -c 'd=$(mktemp -d); /usr/bin/python3 "$1" "$2" "$3" "$d" "$5" > "$4/results.jsonl"; s=$?; cp "$d"/*.log "$d"/*.stderr "$4"/ 2>/dev/null; rm -rf "$d"; exit $s' sh \
  "$ROOT/scripts/lib/migration-bench.py" "$ROOT/target/release" "$GUEST" "$WORK" "$RUNS" >&2
python - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(vmm, key):
    xs = [r[key] for r in rows if r["vmm"] == vmm]
    return (statistics.median(xs), xs) if xs else (None, [])
ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b else "-"
has_ch = any(r["vmm"] == "cloud-hypervisor" for r in rows)
print("| measure | Accordion median | Cloud Hypervisor median | Accordion/Cloud Hypervisor "
      "| Accordion runs | Cloud Hypervisor runs |")
print("| --- | --- | --- | --- | --- | --- |")
for label, key, unit in (("total (s)", "total_s", 1), ("downtime (ms)", "downtime_ms", 1),
                         ("bytes on the wire (MiB)", "bytes", 1 << 20)):
    a, ar = med("accordion", key)
    c, cr = med("cloud-hypervisor", key)
    scale = lambda v: round(v / unit, 1) if v is not None and unit > 1 else v
    print(f"| {label} | {scale(a)} | {scale(c) if has_ch else 'not run'} | {ratio(a, c)} "
          f"| {[scale(x) for x in ar]} | {[scale(x) for x in cr]} |")
PY
