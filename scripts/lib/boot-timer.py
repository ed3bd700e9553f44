#!/usr/bin/env python3
"""Time one guest boot: run a VMM command, watch its serial output for the READY line.

Usage: boot-timer.py [--timeout S] [--log FILE] -- CMD [ARGS...]

Prints one line on stdout:
    wall=<s from just before the process start to the READY line> uptime=<guest uptime
    from the READY line> exit=<s from the start to the process exit> rc=<exit status>
(`wall=- uptime=-` when no READY line came). Exit status 0 if READY came and the command
exited 0 within the timeout, else 1. The command's stdin is /dev/null; its stdout and
stderr are read together (serial console lines end in "\\r\\n"; the marker may follow
kernel output on the same line) and copied to --log.
"""
import argparse
import os
import re
import select
import signal
import subprocess
import sys
import time

READY = re.compile(rb"ACCORDION_GUEST_READY .*\buptime=([0-9.]+)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--log")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command")

    log = open(args.log, "wb") if args.log else None
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    fd = proc.stdout.fileno()
    deadline = t0 + args.timeout
    buf = b""
    wall = uptime = None
    eof = False
    while not eof:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        data = os.read(fd, 65536)
        now = time.monotonic()
        if not data:
            eof = True
        if log:
            log.write(data)
        buf += data
        # Only complete lines count; keep the partial tail for the next read.
        *lines, buf = buf.split(b"\n")
        if eof and buf:
            lines.append(buf)
        for line in lines:
            m = READY.search(line.replace(b"\r", b""))
            if m and wall is None:
                wall, uptime = now - t0, float(m.group(1))

    rc = None
    try:
        rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        sys.stderr.write(f"boot-timer: timed out after {args.timeout:.0f} s: {cmd[0]}\n")
    exit_s = time.monotonic() - t0
    if log:
        log.close()
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    print(f"wall={fmt(wall)} uptime={fmt(uptime)} exit={exit_s:.3f} "
          f"rc={'timeout' if rc is None else rc}")
    return 0 if wall is not None and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
