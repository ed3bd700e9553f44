#!/usr/bin/env bash
# Checks the API server against its contract, docs/api/accordion.yaml, with Schemathesis
# (every check on, a fixed seed, a bounded number of test cases), on an API-only VMM with
# seccomp on (the default):
#
#   1. no VM: every operation but vmm.shutdown is fuzzed;
#   2. vm.create bodies the server must take (minimal, Cloud Hypervisor's full body at
#      neutral values, zones with NUMA nodes, virtio-mem, a serial file): each a valid
#      VmConfig, answered 204, vm.info a valid VmInfo whose config vm.create takes back
#      (lib/api-probes.py, which also boots a tiny kernel that triple-faults: state Failed
#      with its reason; and sends bodies just under and over the 256 KiB limit: 400, 413);
#   3. a created VM that is never booted (its "kernel" is the accordion binary, a readable
#      file): the operations that do not change the state (not vm.boot, vm.delete,
#      vmm.shutdown) are fuzzed again, so vm.info's 200 answers are checked against VmInfo;
#   4. a booted VM (a tiny kernel that halts its vCPU, with a virtio-mem device): vm.info and
#      vm.counters checked against their schemas, then every operation but vm.delete and
#      vmm.shutdown fuzzed (pause, resume, shutdown, boot, reboot move it between states);
#   5. the VMM must still be alive after each run (else its stderr is shown: a seccomp
#      violation prints `accordion: seccomp: thread ... made a forbidden system call ...`);
#      vm.delete then gives 204 and vm.info 404; PUT vmm.shutdown must answer 204 and the
#      process exit 0 and remove its socket.
#
# Any Schemathesis finding, warning that the file is wrong, or failed step makes it exit 1.
# It prints Schemathesis's report and, last, one totals line per run. No Linux guest is
# booted, only tiny hand-made kernels (as tests/guest_failures.rs), so it runs on any KVM,
# this machine's KVM-PVM included.
#
# Usage: scripts/api-conformance.sh [ACCORDION_BINARY]
#        scripts/api-conformance.sh --print-venv
#   ACCORDION_BINARY   test this binary instead of building one (also ACCORDION_BIN)
#   --print-venv       install the venv if needed and print its directory (its bin/python
#                      has PyYAML and jsonschema for lib/validate-against-openapi.py)
#
# Environment:
#   ACCORDION_CONFORMANCE_EXAMPLES  test cases per operation (default: schemathesis.toml's)
#   ACCORDION_CONFORMANCE_SEED      seed (default: schemathesis.toml's)
#   ACCORDION_CONFORMANCE_KEEP=DIR  keep the VMM's output and Schemathesis's reports there
#   CARGO_TARGET_DIR                where the build goes (default target/)
#
# Schemathesis comes from PyPI into a venv under $CACHE/schemathesis-<version>/ (once).
set -euo pipefail

LOG_TAG=api-conformance
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPEC=$ROOT/docs/api/accordion.yaml
CONFIG=$ROOT/scripts/schemathesis.toml

# Pinned; a new version is a new venv directory.
SCHEMATHESIS_VERSION=4.32.5
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.4
VENV=$ACCORDION_CACHE/schemathesis-$SCHEMATHESIS_VERSION

# ---------------------------------------------------------------------------- the venv

# ensure_venv — Schemathesis, jsonschema and PyYAML in $VENV. Built in place and marked
# complete at the end (a venv cannot be moved); an incomplete one is rebuilt.
ensure_venv() {
  [ -e "$VENV/.complete" ] && { touch "$VENV"; return 0; }
  if ! python -c 'import ensurepip, venv' 2>/dev/null; then
    # Debian keeps ensurepip in python3-venv.
    [ "$(id -u)" -eq 0 ] || die "python3 cannot make a venv: install python3-venv (needs root)"
    log "apt-get update (to install python3-venv)"
    apt-get update -q >&2 || log "warning: apt-get update reported errors, trying the install anyway"
    apt_install_host python3-venv || die "could not install python3-venv"
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$ACCORDION_CACHE"
  python -m venv "$VENV" >&2
  "$VENV/bin/pip" install --disable-pip-version-check -q \
    "schemathesis==$SCHEMATHESIS_VERSION" "jsonschema==$JSONSCHEMA_VERSION" \
    "PyYAML==$PYYAML_VERSION" >&2 || die "pip install into $VENV failed"
  touch "$VENV/.complete"
}

BIN=${ACCORDION_BIN:-}
case "${1:-}" in
  --print-venv)
    [ $# -eq 1 ] || die "--print-venv takes nothing more"
    ensure_venv
    echo "$VENV"
    exit 0
    ;;
  -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  -*) die "unknown option '$1' (usage: scripts/api-conformance.sh [ACCORDION_BINARY])" ;;
  "") ;;
  *) BIN=$1; [ $# -eq 1 ] || die "one binary at most" ;;
esac

ensure_venv
ST=$VENV/bin/schemathesis
PY=$VENV/bin/python

if [ -z "$BIN" ]; then
  log "building accordion"
  (cd "$ROOT" && cargo build -q --bin accordion)
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/accordion
fi
BIN=$(realpath "$BIN")
[ -x "$BIN" ] || die "$BIN is not an executable"

# ---------------------------------------------------------------------------- processes

WORK=$(mktemp -d "${TMPDIR:-/tmp}/accordion-conformance.XXXXXX")
SOCK=$WORK/api.sock
VMM_PID=''
PROXY_PID=''

cleanup() {
  local status=$?
  # Only the processes this script started, by their ids.
  if [ -n "$PROXY_PID" ] && kill -0 "$PROXY_PID" 2>/dev/null; then
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
  fi
  if [ -n "$VMM_PID" ] && kill -0 "$VMM_PID" 2>/dev/null; then
    kill "$VMM_PID" 2>/dev/null || true
    wait "$VMM_PID" 2>/dev/null || true
  fi
  if [ -n "${ACCORDION_CONFORMANCE_KEEP:-}" ]; then
    mkdir -p "$ACCORDION_CONFORMANCE_KEEP"
    cp -r "$WORK"/. "$ACCORDION_CONFORMANCE_KEEP"/ 2>/dev/null || true
    rm -f "$ACCORDION_CONFORMANCE_KEEP/api.sock"
    log "kept the VMM's output and the reports in $ACCORDION_CONFORMANCE_KEEP"
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

vmm_stderr() {
  log "accordion's stderr:"
  sed 's/^/    /' "$WORK/vmm.err" >&2
}

# check_alive WHEN — the VMM must still run.
check_alive() {
  if ! kill -0 "$VMM_PID" 2>/dev/null; then
    local status=0
    wait "$VMM_PID" || status=$?
    VMM_PID=
    log "FAIL: accordion died $1 (exit status $status$( [ "$status" -gt 128 ] && echo ", signal $((status - 128))"))"
    vmm_stderr
    exit 1
  fi
}

# api METHOD PATH [BODY] — one request on the unix socket itself; prints the status on the
# first line and the body after it.
api() {
  python - "$SOCK" "$@" <<'EOF'
import http.client, socket, sys
path, method, url = sys.argv[1:4]
body = sys.argv[4] if len(sys.argv) > 4 else None
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
c = Unix("localhost")
c.request(method, "/api/v1/" + url, body=body,
          headers={"Content-Type": "application/json"} if body is not None else {})
r = c.getresponse()
print(r.status)
print(r.read().decode())
EOF
}

# expect STATUS METHOD PATH [BODY] — the request must get STATUS; prints the body.
expect() {
  local want=$1 out status
  shift
  out=$(api "$@") || { check_alive "on $1 $2"; die "$1 $2: no answer"; }
  status=$(head -n1 <<<"$out")
  if [ "$status" != "$want" ]; then
    check_alive "on $1 $2"
    die "$1 $2 answered $status, expected $want: $(tail -n +2 <<<"$out")"
  fi
  tail -n +2 <<<"$out"
}

mkdir -p "$WORK/cwd"
log "starting $BIN --api-socket path=$SOCK (seccomp on)"
# An empty working directory: a relative kernel path that Schemathesis makes up never names
# a file.
(cd "$WORK/cwd" && exec "$BIN" --api-socket "path=$SOCK") >"$WORK/vmm.out" 2>"$WORK/vmm.err" &
VMM_PID=$!
for _ in $(seq 100); do
  [ -S "$SOCK" ] && break
  check_alive "at start"
  sleep 0.1
done
[ -S "$SOCK" ] || die "accordion made no socket at $SOCK in 10 s"

# The venv's interpreter itself (not a shell function), so that $! is the proxy.
"$PY" "$ROOT/scripts/lib/unix-tcp-proxy.py" "$SOCK" --host 127.0.0.1 \
  --port-file "$WORK/port" >/dev/null 2>"$WORK/proxy.err" &
PROXY_PID=$!
for _ in $(seq 100); do
  [ -s "$WORK/port" ] && break
  kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.err" >&2; die "the proxy did not start"; }
  sleep 0.1
done
[ -s "$WORK/port" ] || die "the proxy did not listen in 10 s"
PORT=$(cat "$WORK/port")
URL=http://127.0.0.1:$PORT/api/v1
expect 200 GET vmm.ping >/dev/null
log "API at $SOCK, on $URL through lib/unix-tcp-proxy.py"

# ---------------------------------------------------------------------------- runs

ST_ARGS=(--checks all --no-color --report ndjson)
[ -n "${ACCORDION_CONFORMANCE_EXAMPLES:-}" ] && ST_ARGS+=(--max-examples "$ACCORDION_CONFORMANCE_EXAMPLES")
[ -n "${ACCORDION_CONFORMANCE_SEED:-}" ] && ST_ARGS+=(--seed "$ACCORDION_CONFORMANCE_SEED")
FAILED=0
TOTALS=()

# totals NAME REPORT_DIR — one line: operations, test cases, checks passed and failed,
# counted from Schemathesis's ndjson report.
totals() {
  python - "$1" "$2" <<'EOF'
import glob, json, sys
name, folder = sys.argv[1:3]
ops, cases, checks = 0, set(), {}
for path in glob.glob(folder + "/*.ndjson"):
    for line in open(path):
        event = json.loads(line)
        if "LoadingFinished" in event:
            ops = event["LoadingFinished"]["statistic"]["operations"]["selected"]
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        label = recorder["label"]
        for case_id, results in recorder.get("checks", {}).items():
            cases.add((label, case_id))
            for r in results:
                checks[(label, case_id, r["name"])] = r["status"]
passed = sum(1 for s in checks.values() if s == "success")
failed = sum(1 for s in checks.values() if s == "failure")
print(f"{name}: {ops} operations, {len(cases)} test cases, {passed} checks passed, {failed} failed")
EOF
}

# run_schemathesis NAME SCHEMATHESIS_ARGS... — one run; a finding marks the whole script failed.
run_schemathesis() {
  local name=$1 status=0
  shift
  log "== schemathesis: $name"
  (cd "$WORK" && timeout 900 "$ST" --config-file "$CONFIG" run "$SPEC" --url "$URL" \
    "${ST_ARGS[@]}" --report-dir "$WORK/report-${name// /-}" "$@") || status=$?
  TOTALS+=("$(totals "$name" "$WORK/report-${name// /-}") (schemathesis exit $status)")
  if [ "$status" -ne 0 ]; then
    log "FAIL: schemathesis ($name) exited $status"
    FAILED=1
  fi
  check_alive "during the schemathesis run ($name)"
}

START=$(date +%s)
# The migration endpoints are probed below rather than fuzzed: a valid receive waits for a
# sender (its answer comes when the migration ends), and a valid send starts a migration
# that holds the VM for as long as connecting to a made-up address takes.
NO_MIGRATION=(--exclude-operation-id vm.receive-migration --exclude-operation-id vm.send-migration)
run_schemathesis "no VM" --exclude-operation-id vmm.shutdown "${NO_MIGRATION[@]}"

# Bodies the server must accept (CH's full one among them): valid VmConfig, 204, vm.info a
# valid VmInfo whose config vm.create takes back. Their "kernel" is this binary, a readable
# regular file; the VMs are never booted. Then bodies at and over the size limit.
"$PY" "$ROOT/scripts/lib/api-probes.py" "$SOCK" "$BIN" "$WORK" >&2 || { check_alive "in the probes"; FAILED=1; }
check_alive "in the probes"

# A VM that exists but never boots, for the second run.
CREATE_BODY=$(printf '{"payload": {"kernel": "%s"}, "memory": {"size": 1073741824, "hotplug_size": 2147483648}}' "$BIN")
expect 204 PUT vm.create "$CREATE_BODY" >/dev/null
expect 200 GET vm.info >"$WORK/vm-info.json"
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" VmInfo "$WORK/vm-info.json" >&2 || FAILED=1
run_schemathesis "created VM" --exclude-operation-id vmm.shutdown \
  --exclude-operation-id vm.boot --exclude-operation-id vm.delete "${NO_MIGRATION[@]}"
# A receive on a VMM with a VM, and bodies that name what cannot work.
expect 409 PUT vm.receive-migration "{\"receiver_url\": \"unix:$WORK/migration.sock\"}" >/dev/null
expect 400 PUT vm.receive-migration '{"receiver_url": "tcp:localhost:6000"}' >/dev/null
expect 400 PUT vm.send-migration '{"destination_url": "unix:/x", "connections": 2}' >/dev/null
expect 409 PUT vm.send-migration "{\"destination_url\": \"unix:$WORK/nobody.sock\"}" >/dev/null

# The fuzzing changed nothing: still the same created VM.
expect 200 GET vm.info >"$WORK/vm-info-after.json"
if ! python -c 'import json, sys; a, b = (json.load(open(p)) for p in sys.argv[1:]); sys.exit(a != b)' \
    "$WORK/vm-info.json" "$WORK/vm-info-after.json"; then
  log "FAIL: vm.info changed during the run: $(cat "$WORK/vm-info-after.json")"
  FAILED=1
fi
expect 204 PUT vm.delete >/dev/null

# A booted VM: a tiny kernel that halts its vCPU (it runs on any KVM, this machine's
# KVM-PVM included, and costs no CPU), with a virtio-mem region so that vm.info lists a
# device and vm.counters its counters. Every operation but vm.delete and vmm.shutdown is
# fuzzed: pause, resume, shutdown, boot and reboot move the VM between states as they come.
"$PY" "$ROOT/scripts/lib/api-probes.py" --tiny-kernel halt "$WORK/halt-kernel"
# 1 GiB of boot RAM and a 4 GiB region (neither is touched: cheap), so that the file's
# resize examples (3 GiB, and 2 GiB for zone "default") are sizes this VM takes.
expect 204 PUT vm.create "$(printf '{"payload": {"kernel": "%s"}, "memory": {"size": 1073741824, "hotplug_size": 4294967296}}' "$WORK/halt-kernel")" >/dev/null
expect 204 PUT vm.boot >/dev/null
expect 200 GET vm.info >"$WORK/vm-info-running.json"
expect 200 GET vm.counters >"$WORK/vm-counters.json"
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" VmInfo "$WORK/vm-info-running.json" >&2 || FAILED=1
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" VmCounters "$WORK/vm-counters.json" >&2 || FAILED=1
# vm.snapshot is kept out: a paused VM would be saved wherever a made-up URL points. It is
# probed below, into this run's directory.
run_schemathesis "booted VM" --exclude-operation-id vmm.shutdown --exclude-operation-id vm.delete \
  --exclude-operation-id vm.snapshot "${NO_MIGRATION[@]}"
expect 200 GET vm.info >"$WORK/vm-info-end.json"
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" VmInfo "$WORK/vm-info-end.json" >&2 || FAILED=1

# Snapshot and restore of the booted VM, on this machine's KVM: back to Running first (the
# fuzzing left it in any state), then 409 while it runs, 204 paused, 400 over an existing
# directory; restore 409 while a VM exists, then 204 on a VMM without one, running.
case "$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["state"])' "$WORK/vm-info-end.json")" in
  Created) expect 204 PUT vm.boot >/dev/null ;;
  Paused) expect 204 PUT vm.resume >/dev/null ;;
esac
# A migration to nobody: started (204), then failed, and the VM runs on as before.
expect 204 PUT vm.send-migration "{\"destination_url\": \"unix:$WORK/nobody.sock\"}" >/dev/null
for _ in $(seq 1 100); do
  expect 200 GET vm.info >"$WORK/vm-info-migrated.json"
  grep -q '"migration":' "$WORK/vm-info-migrated.json" || break
  sleep 0.1
done
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" VmInfo "$WORK/vm-info-migrated.json" >&2 || FAILED=1
if ! grep -q '"state":"Running"' "$WORK/vm-info-migrated.json" \
    || grep -q '"migration":' "$WORK/vm-info-migrated.json"; then
  log "FAIL: after a failed migration the VM is not running as before: $(cat "$WORK/vm-info-migrated.json")"
  FAILED=1
fi
SNAP_BODY=$(printf '{"destination_url": "file://%s/snap"}' "$WORK")
expect 409 PUT vm.snapshot "$SNAP_BODY" >/dev/null
expect 204 PUT vm.pause >/dev/null
expect 204 PUT vm.snapshot "$SNAP_BODY" >/dev/null
expect 400 PUT vm.snapshot "$SNAP_BODY" >/dev/null
RESTORE_BODY=$(printf '{"source_url": "file://%s/snap", "resume": true}' "$WORK")
expect 409 PUT vm.restore "$RESTORE_BODY" >/dev/null
expect 204 PUT vm.delete >/dev/null
expect 204 PUT vm.restore "$RESTORE_BODY" >/dev/null
expect 200 GET vm.info >"$WORK/vm-info-restored.json"
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" VmInfo "$WORK/vm-info-restored.json" >&2 || FAILED=1
if ! grep -q '"state":"Running"' "$WORK/vm-info-restored.json"; then
  log "FAIL: the restored VM is not running: $(cat "$WORK/vm-info-restored.json")"
  FAILED=1
fi

expect 204 PUT vm.delete >/dev/null
expect 404 GET vm.info >"$WORK/no-vm.json"
"$PY" "$ROOT/scripts/lib/validate-against-openapi.py" ErrorChain "$WORK/no-vm.json" >&2 || FAILED=1

# vmm.shutdown, kept out of the runs: 204, then the process exits 0 and removes its socket.
expect 204 PUT vmm.shutdown >/dev/null
EXIT=0
for _ in $(seq 100); do
  kill -0 "$VMM_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$VMM_PID" 2>/dev/null; then
  log "FAIL: accordion still runs 10 s after vmm.shutdown"
  FAILED=1
else
  wait "$VMM_PID" || EXIT=$?
  VMM_PID=
  if [ "$EXIT" -ne 0 ]; then
    log "FAIL: accordion exited $EXIT after vmm.shutdown"
    vmm_stderr
    FAILED=1
  elif [ -e "$SOCK" ]; then
    log "FAIL: accordion left its socket $SOCK behind"
    FAILED=1
  else
    log "vmm.shutdown: 204, exit status 0, socket removed"
  fi
fi

log "took $(( $(date +%s) - START )) s"
for line in "${TOTALS[@]}"; do
  echo "api-conformance: $line"
done
if [ "$FAILED" -ne 0 ]; then
  echo "api-conformance: FAILED"
  exit 1
fi
echo "api-conformance: passed"
