#!/usr/bin/env bash
# Boot-to-init benchmark: Accordion against QEMU and Cloud Hypervisor on the same test guest (kernel and
# initramfs from scripts/build-guest.sh, `accordion.action=poweroff`), on the same KVM.
#
# Usage: scripts/bench-boot.sh
#
# Builds what it needs (cargo build, build-guest.sh), then runs every boot inside ONE
# test host (scripts/test-host.sh; where /dev/kvm boots Linux, directly). Per run it
# measures, inside the test host (so the test host's own boot is not counted):
#   wall    seconds from just before the VMM process starts to the guest's
#           ACCORDION_GUEST_READY line appearing on the VMM's serial output (stdout);
#   uptime  the guest's own /proc/uptime printed in that line.
# Runs are interleaved (run 1 of every case, then run 2, ...) so that noise from other
# work on the machine spreads over all cases; a first warm-up round is not counted (the
# first start of a binary in the test host reads it over 9p, seconds for QEMU).
# Prints a markdown table of the medians on stdout, with the ratio of each row to QEMU
# q35 with the same kernel file (PVH vmlinux or bzImage), the individual runs and the
# machine's load average (other work on the machine adds noise); progress goes to stderr.
# Takes ~8 minutes with the defaults on a 2-core machine (nested test host).
#
# Environment:
#   BENCH_RUNS          counted runs per case (default 5)
#   BENCH_WARMUP        uncounted warm-up rounds (default 1)
#   BENCH_CASES         space separated VMM:KERNEL cases, VMM one of accordion, qemu
#                       (-machine q35), qemu-microvm, cloud-hypervisor; KERNEL one of
#                       vmlinux, bzImage (default "accordion:vmlinux accordion:bzImage
#                       qemu:vmlinux qemu:bzImage qemu-microvm:bzImage", and
#                       cloud-hypervisor:vmlinux when ACCORDION_CH_BIN is set)
#   ACCORDION_CH_BIN    a cloud-hypervisor binary to measure beside the others (.ci/run
#                       sets it where CI has one)
#   BENCH_TIMEOUT       seconds allowed per boot, READY to exit included (default 180)
#   BENCH_PROFILE       cargo profile of the accordion binary: release or debug
#                       (default release)
#   BENCH_ACCORDION     an accordion binary to use as is (no cargo build)
#   BENCH_KEEP=DIR      keep the consoles of all runs and runs.tsv in DIR
#   ACCORDION_GUEST_DIR the guest (default: built with scripts/build-guest.sh)
# and those of scripts/test-host.sh (ACCORDION_TEST_HOST, ACCORDION_TEST_HOST_MEM, ...).
set -euo pipefail

LOG_TAG=bench-boot
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$SCRIPTS_DIR")
SELF=$SCRIPTS_DIR/$(basename "${BASH_SOURCE[0]}")

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# ---------------------------------------------------------------------------- inside

# boot_cmd VMM KERNEL_FILE — the command line of one boot, into BOOT_CMD.
boot_cmd() {
  local vmm=$1 kernel=$GUEST/$2 cmdline
  cmdline="$(cat "$GUEST/cmdline") accordion.action=poweroff"
  case "$vmm" in
    accordion)
      BOOT_CMD=("$ACCORDION" --kernel "$kernel" --initramfs "$GUEST/initramfs.cpio.gz"
        --cmdline "$cmdline" --cpus boot=1 --memory size=512M --serial tty) ;;
    qemu|qemu-microvm)
      local machine=q35
      [ "$vmm" = qemu-microvm ] && machine=microvm
      BOOT_CMD=(qemu-system-x86_64 -enable-kvm -machine "$machine" -cpu host -smp 1 -m 512M
        -nodefaults -no-user-config -display none -serial stdio -no-reboot
        -kernel "$kernel" -initrd "$GUEST/initramfs.cpio.gz" -append "$cmdline") ;;
    cloud-hypervisor)
      [ -x "${ACCORDION_CH_BIN:-}" ] || die "cloud-hypervisor case without ACCORDION_CH_BIN"
      BOOT_CMD=("$ACCORDION_CH_BIN" --kernel "$kernel" --initramfs "$GUEST/initramfs.cpio.gz"
        --cmdline "$cmdline" --cpus boot=1 --memory size=512M --serial tty --console off) ;;
    *) die "unknown VMM in BENCH_CASES: $vmm" ;;
  esac
}

# inner OUT_DIR — run all boots (this is the part that runs in the test host) and append
# "case round wall uptime exit rc" lines to OUT_DIR/runs.tsv (round 0 = warm-up).
inner() {
  local out=$1 round case result rounds=$((BENCH_WARMUP + BENCH_RUNS)) n=0 total
  [ -c /dev/kvm ] || die "no /dev/kvm here"
  # shellcheck disable=SC2206  # a word list
  local cases=($BENCH_CASES)
  total=$((rounds * ${#cases[@]}))
  {
    if [ "${ACCORDION_IN_TEST_HOST:-0}" = 1 ]; then
      echo "Measured in the nested test host (QEMU TCG, kvm_amd): $(nproc) vCPUs, kernel $(uname -r)."
    else
      echo "Measured directly on this machine's KVM: $(nproc) CPUs, kernel $(uname -r)."
    fi
    echo "$(qemu-system-x86_64 --version | head -n1)."
  } > "$out/env.txt"
  sed 's/^/  /' "$out/env.txt" >&2
  for ((round = 1; round <= rounds; round++)); do
    for case in "${cases[@]}"; do
      n=$((n + 1))
      boot_cmd "${case%%:*}" "${case#*:}"
      local console=$out/console-${case//:/-}-$round.log counted=$((round - BENCH_WARMUP)) rc=0
      [ "$counted" -lt 1 ] && counted=0
      result=$(python "$SCRIPTS_DIR/lib/boot-timer.py" --timeout "$BENCH_TIMEOUT" \
        --log "$console" -- "${BOOT_CMD[@]}") || rc=$?
      log "[$n/$total] $case $([ "$counted" = 0 ] && echo warm-up || echo "run $counted"): $result"
      if [ "$rc" != 0 ]; then
        log "console of the failed run (last 20 lines):"
        tail -n 20 "$console" | tr -d '\r' | sed 's/^/    | /' >&2
      fi
      # "wall=1.2 uptime=0.8 exit=1.5 rc=0" -> tab separated values
      printf '%s\t%s\t%s\n' "$case" "$counted" "$(echo "$result" | sed 's/[a-z]*=//g; s/ /\t/g')" \
        >> "$out/runs.tsv"
    done
  done
}

# ---------------------------------------------------------------------------- outside

build_accordion() {
  if [ -n "${BENCH_ACCORDION:-}" ]; then
    ACCORDION=$(realpath "$BENCH_ACCORDION")
    return 0
  fi
  local profile_args=() dir=release
  case "$BENCH_PROFILE" in
    release) profile_args=(--release) ;;
    debug) dir=debug ;;
    *) die "BENCH_PROFILE must be release or debug, not '$BENCH_PROFILE'" ;;
  esac
  log "cargo build ${profile_args[*]} --bin accordion"
  (cd "$ROOT" && cargo build "${profile_args[@]}" --bin accordion >&2) || die "cargo build failed"
  ACCORDION=${CARGO_TARGET_DIR:-$ROOT/target}/$dir/accordion
  [ -x "$ACCORDION" ] || die "no binary at $ACCORDION"
}

# table RUNS_TSV — the markdown table of the counted runs.
table() {
  python - "$1" "$BENCH_CASES" <<'PY'
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
cases = sys.argv[2].split()
res = {}
for c in cases:
    runs = [r for r in rows if r[0] == c and r[1] != "0"]
    ok = [r for r in runs if r[2] != "-" and r[5] == "0"]
    wall = statistics.median(float(r[2]) for r in ok) if ok else None
    up = statistics.median(float(r[3]) for r in ok) if ok else None
    res[c] = (len(ok), len(runs), wall, up, [r[2] for r in runs], [r[3] for r in runs])

def base(c):
    """The QEMU row to compare with: q35 with the same kernel file, else any QEMU."""
    qemus = [q for q in cases if q.split(":")[0].startswith("qemu") and res[q][2] is not None]
    same = [q for q in qemus if q.split(":")[1] == c.split(":")[1]]
    q35 = [q for q in same if q.split(":")[0] == "qemu"]
    return (q35 or same or qemus or [None])[0]

f = lambda v: "-" if v is None else f"{v:.2f}"
ratio = lambda a, b: "-" if a is None or not b else f"{a / b:.2f}"
names = {"accordion": "Accordion", "qemu": "QEMU q35", "qemu-microvm": "QEMU microvm",
         "cloud-hypervisor": "Cloud Hypervisor"}
ch = next((c for c in cases if c.startswith("cloud-hypervisor:") and res[c][2] is not None), None)
print("| VMM | kernel | runs | median wall to READY (s) | median guest uptime at READY (s) "
      "| ratio vs QEMU (wall) | ratio vs QEMU (uptime) | ratio vs Cloud Hypervisor (wall) "
      "| ratio vs Cloud Hypervisor (uptime) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for c in cases:
    ok, n, wall, up, _, _ = res[c]
    vmm, kernel = c.split(":")
    b = base(c)
    if b is None or b == c:
        rw = ru = "1.00" if b == c else "-"
    else:
        rw, ru = ratio(wall, res[b][2]), ratio(up, res[b][3])
        if b.split(":")[1] != kernel:
            rw, ru = rw + f" (vs {b.split(':')[1]})", ru + f" (vs {b.split(':')[1]})"
    runs = str(n) if ok == n else f"{ok} of {n} ok"
    cw = cu = "-"
    if ch is not None:
        cw, cu = ratio(wall, res[ch][2]), ratio(up, res[ch][3])
        if ch.split(":")[1] != kernel:
            cw, cu = cw + f" (vs {ch.split(':')[1]})", cu + f" (vs {ch.split(':')[1]})"
    print(f"| {names.get(vmm, vmm)} | {kernel} | {runs} | {f(wall)} | {f(up)} | {rw} | {ru} "
          f"| {cw} | {cu} |")
print()
print("Ratios are to the QEMU q35 row with the same kernel file (PVH vmlinux or bzImage),"
      " and to Cloud Hypervisor (PVH vmlinux); below 1 is faster.")
print("Wall is measured inside the test host, from just before the VMM process starts to"
      " the READY line on its serial output; uptime is the guest's /proc/uptime in that line.")
print()
print("Individual runs (s):")
print()
for c in cases:
    print(f"- {c}: wall {' '.join(res[c][4])}; uptime {' '.join(res[c][5])}")
PY
}

outer() {
  local out keep=${BENCH_KEEP:-} rc=0 load0
  load0=$(cut -d' ' -f1-3 /proc/loadavg)
  build_accordion
  if [ -z "${ACCORDION_GUEST_DIR:-}" ]; then
    GUEST=$("$SCRIPTS_DIR/build-guest.sh" --print-dir)
  else
    GUEST=$ACCORDION_GUEST_DIR
  fi
  [ -f "$GUEST/vmlinux" ] || die "no guest at $GUEST"
  ensure_qemu

  if [ -n "$keep" ]; then
    mkdir -p "$keep"
    out=$(cd "$keep" && pwd -P)
    rm -f "$out"/runs.tsv "$out"/console-*.log
  else
    out=$(mktemp -d "${TMPDIR:-/tmp}/accordion-bench.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$out'" EXIT
  fi
  : > "$out/runs.tsv"
  log "accordion: $ACCORDION; guest: $GUEST; cases: $BENCH_CASES; $BENCH_RUNS runs + $BENCH_WARMUP warm-up"
  log "this machine: $(nproc) CPUs, loadavg $load0"

  # The test host's output (its console, the runs' progress) goes to stderr; the
  # results come back through the writable share $out.
  ACCORDION_TEST_HOST_RW=$out${ACCORDION_TEST_HOST_RW:+:$ACCORDION_TEST_HOST_RW} \
    "$SCRIPTS_DIR/test-host.sh" "$SELF" --inner "$out" "$ACCORDION" "$GUEST" \
    "$BENCH_RUNS" "$BENCH_WARMUP" "$BENCH_CASES" "$BENCH_TIMEOUT" >&2 || rc=$?
  [ -s "$out/runs.tsv" ] || die "no results (test host exit status $rc)"

  echo "Boot to init of $(basename "$GUEST"), medians of $BENCH_RUNS runs per case" \
    "(+ $BENCH_WARMUP uncounted warm-up), accordion $(basename "$(dirname "$ACCORDION")") build."
  [ -f "$out/env.txt" ] && cat "$out/env.txt"
  echo
  table "$out/runs.tsv"
  echo
  echo "loadavg of this machine: $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after"
  [ "$rc" = 0 ] || die "some runs failed (test host exit status $rc)"
}

main() {
  BENCH_RUNS=${BENCH_RUNS:-5}
  BENCH_WARMUP=${BENCH_WARMUP:-1}
  local default_cases="accordion:vmlinux accordion:bzImage qemu:vmlinux qemu:bzImage qemu-microvm:bzImage"
  [ -x "${ACCORDION_CH_BIN:-}" ] && default_cases+=" cloud-hypervisor:vmlinux"
  BENCH_CASES=${BENCH_CASES:-$default_cases}
  BENCH_TIMEOUT=${BENCH_TIMEOUT:-180}
  BENCH_PROFILE=${BENCH_PROFILE:-release}
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --inner)
      # --inner OUT ACCORDION GUEST RUNS WARMUP CASES TIMEOUT (from outer, in the test host)
      [ $# -eq 8 ] || die "--inner takes 7 arguments"
      ACCORDION=$3 GUEST=$4 BENCH_RUNS=$5 BENCH_WARMUP=$6 BENCH_CASES=$7 BENCH_TIMEOUT=$8
      local rc=0
      inner "$2" || rc=$?
      # Fail (after all runs) if any counted run failed.
      if awk -F'\t' '$2 != "0" && $6 != "0" { bad = 1 } END { exit !bad }' "$2/runs.tsv"; then
        die "some runs failed"
      fi
      return "$rc" ;;
    "") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  [[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
  [[ $BENCH_WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a number"
  outer
}

main "$@"
