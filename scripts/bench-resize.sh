#!/usr/bin/env bash
# virtio-mem resize latency: Accordion (vm.resize) against Cloud Hypervisor (vm.resize, when
# ACCORDION_CH_BIN names its binary; .ci/run sets it where CI has one) and QEMU (qom-set
# requested-size) on the same test guest, in the same test host (scripts/test-host.sh;
# directly where /dev/kvm boots Linux). Each VMM boots the guest with 1 GiB of boot RAM and a
# 4 GiB region; then BENCH_RUNS rounds, alternating between the VMMs, grow it by 2 GiB and
# shrink it by 2 GiB; a resize is timed from the request to the guest's MemTotal line showing
# the target. Prints a markdown table of the medians with the ratios of Accordion to each
# peer, and the Accordion device thread's own time per request from vm.counters (median over
# its last 1024 requests).
#
# Usage: scripts/bench-resize.sh
# Environment: BENCH_RUNS (default 5), BENCH_KEEP=DIR (keep consoles and results),
# ACCORDION_BENCH_MEMORY_OPTIONS (more --memory options for Accordion, e.g. slot_size=4G).
set -euo pipefail

LOG_TAG=bench-resize
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 0 ] || die "unknown option '$1' (usage: scripts/bench-resize.sh)"
RUNS=${BENCH_RUNS:-5}

ensure_qemu  # the QEMU side of the comparison, also where no test host is needed
log "building accordion (release)"
(cd "$ROOT" && cargo build --release --bin accordion >&2)
GUEST=$("$ROOT/scripts/build-guest.sh" --print-dir)
WORK=${BENCH_KEEP:-$(mktemp -d "${TMPDIR:-/tmp}/accordion-bench-resize.XXXXXX")}
mkdir -p "$WORK"
[ -n "${BENCH_KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT
# Inside the test host, the interpreter by absolute path (scripts/README.md); the paths go
# as arguments, not spliced into the shell text.
# shellcheck disable=SC2016  # $1.. belong to the inner shell
ACCORDION_TEST_HOST_RW=$WORK "$ROOT/scripts/test-host.sh" \
  sh -c '/usr/bin/python3 "$1" "$2" "$3" "$4" "$5" > "$4/results.jsonl"' sh \
  "$ROOT/scripts/lib/resize-bench.py" "$ROOT/target/release" "$GUEST" "$WORK" "$RUNS" >&2
python - "$WORK/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(vmm, op):
    xs = [r["seconds"] for r in rows if r.get("vmm") == vmm and r.get("op") == op]
    return (statistics.median(xs), xs) if xs else (None, [])
ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
has_ch = any(r.get("vmm") == "cloud-hypervisor" for r in rows)
print("| resize | Accordion median (s) | Cloud Hypervisor median (s) | QEMU median (s) "
      "| Accordion/Cloud Hypervisor | Accordion/QEMU | Accordion runs | Cloud Hypervisor runs | QEMU runs |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for op in ("+2G", "-2G"):
    a, ar = med("accordion", op)
    c, cr = med("cloud-hypervisor", op)
    q, qr = med("qemu", op)
    print(f"| {op} | {a} | {c if has_ch else 'not run'} | {q} | {ratio(a, c)} | {ratio(a, q)} "
          f"| {ar} | {cr} | {qr} |")
dev = next((r["device"] for r in rows if "device" in r), {})
if dev:
    print()
    print("| Accordion device thread | value |")
    print("| --- | --- |")
    for k in ("latency_count", "latency_median_ns", "latency_max_ns", "latency_total_ns",
              "discard_count", "discard_median_ns", "discard_max_ns",
              "plug_requests", "unplug_requests", "ack_responses", "nack_responses"):
        print(f"| {k} | {dev.get(k)} |")
exits = next((r["exits"] for r in rows if "exits" in r), {})
if exits:
    print()
    print("| Accordion's exits to the VMM during the runs (vm.counters) | count | VMM time (ms) |")
    print("| --- | --- | --- |")
    for k, v in sorted(exits.items()):
        if k.endswith("_ns") or not (v or exits.get(k + "_ns")):
            continue
        print(f"| {k} | {v} | {exits.get(k + '_ns', 0) / 1e6:.1f} |")
PY
