#!/usr/bin/env python3
"""Snapshot and restore: Accordion against Cloud Hypervisor (when ACCORDION_CH_BIN names
its binary), same guest.

Usage: snapshot-bench.py ACCORDION_BIN_DIR GUEST_DIR WORK_DIR RUNS

Runs where /dev/kvm boots Linux (inside the test host). Each VMM boots the test guest with
512 MiB of boot RAM and a 16 GiB virtio-mem region, plugs 1 GiB and writes 256 MiB of random
data into a tmpfs; then, RUNS times, alternating between the VMMs: pause, vm.snapshot into a
new directory (timed from the request to its answer), resume. The source VMMs are stopped,
and RUNS times per VMM and memory_restore_mode (Copy, OnDemand), alternating: a new process
with --restore ...,resume=on, timed from its start until the guest echoes a line typed on
its console (restore to running, as the guest sees it). One JSON object per line on stdout:
  {"vmm": ..., "op": "snapshot", "run": N, "seconds": S, "file_len": B, "allocated": B}
  {"vmm": ..., "op": "restore-Copy"|"restore-OnDemand", "run": N, "seconds": S}
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

rb = import_module("resize-bench")
Guest, http_put, http_get = rb.Guest, rb.http_put, rb.http_get

MIB = 1 << 20
GIB = 1 << 30


def wait_socket(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def plugged(sock):
    info = http_get(sock, "/api/v1/vm.info")
    devices = info.get("memory", {}).get("devices")
    if devices:
        return devices[0]["plugged_size"]
    return info.get("memory_actual_size", 0) - 512 * MIB


def console(guest, command, marker, timeout=300):
    guest.proc.stdin.write((command + "\n").encode())
    guest.proc.stdin.flush()
    return guest.wait_for(lambda l: l.startswith(marker), timeout)


def du(directory):
    total_len = total_alloc = 0
    for name in os.listdir(directory):
        st = os.stat(os.path.join(directory, name))
        total_len += st.st_size
        total_alloc += st.st_blocks * 512
    return total_len, total_alloc


def main():
    bin_dir, guest_dir, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cmdline = open(os.path.join(guest_dir, "cmdline")).read().strip()
    kernel = os.path.join(guest_dir, "vmlinux")
    initrd = os.path.join(guest_dir, "initramfs.cpio.gz")
    memory = "size=512M,hotplug_method=virtio-mem,hotplug_size=16G"
    accordion = os.path.join(bin_dir, "accordion")
    ch_bin = os.environ.get("ACCORDION_CH_BIN", "")
    peers = [("accordion", accordion, [])]
    if ch_bin and os.access(ch_bin, os.X_OK):
        peers.append(("cloud-hypervisor", ch_bin, ["--serial", "tty", "--console", "off"]))

    def sock_of(name):
        path = os.path.join(work, name + ".sock")
        if os.path.exists(path):
            os.unlink(path)
        return path

    sources = []
    try:
        for name, binary, extra in peers:
            sock = sock_of(name)
            g = Guest([binary, "--kernel", kernel, "--initramfs", initrd, "--cmdline", cmdline,
                       "--cpus", "boot=1", "--memory", memory, "--api-socket", "path=" + sock]
                      + extra, os.path.join(work, name + "-source.log"))
            sources.append((name, g, sock))
        for name, g, sock in sources:
            g.wait_for(lambda l: "ACCORDION_GUEST_READY" in l, 600)
            http_put(sock, "/api/v1/vm.resize", {"desired_ram": 512 * MIB + GIB})
            deadline = time.monotonic() + 300
            while plugged(sock) != GIB:
                if time.monotonic() > deadline:
                    raise TimeoutError(name + ": 1 GiB not plugged")
                time.sleep(0.2)
            console(g, "mkdir -p /p && mount -t tmpfs -o size=2G p /p && "
                       "dd if=/dev/urandom of=/p/data bs=1M count=256 2>/dev/null; echo WROTE",
                    "WROTE")
        for run in range(1, runs + 1):
            for name, g, sock in sources:
                target = os.path.join(work, "%s-snap-%d" % (name, run))
                shutil.rmtree(target, ignore_errors=True)
                http_put(sock, "/api/v1/vm.pause", {})
                t0 = time.monotonic()
                http_put(sock, "/api/v1/vm.snapshot", {"destination_url": "file://" + target})
                took = time.monotonic() - t0
                http_put(sock, "/api/v1/vm.resume", {})
                file_len, allocated = du(target)
                print(json.dumps({"vmm": name, "op": "snapshot", "run": run,
                                  "seconds": round(took, 3), "file_len": file_len,
                                  "allocated": allocated}), flush=True)
                time.sleep(1)
    finally:
        for _, g, _ in sources:
            g.stop()

    for run in range(1, runs + 1):
        for mode in ("Copy", "OnDemand"):
            for name, binary, extra in peers:
                sock = sock_of(name)
                snap = os.path.join(work, "%s-snap-%d" % (name, run))
                restore = "source_url=file://%s,resume=true,memory_restore_mode=%s" % (
                    snap, mode.lower())
                t0 = time.monotonic()
                g = Guest([binary, "--api-socket", "path=" + sock, "--restore", restore],
                          os.path.join(work, "%s-restore-%s-%d.log" % (name, mode, run)))
                try:
                    # The guest answers on its console once it runs.
                    console(g, "echo RUNNING_%d" % run, "RUNNING_%d" % run, 300)
                    took = time.monotonic() - t0
                    print(json.dumps({"vmm": name, "op": "restore-" + mode, "run": run,
                                      "seconds": round(took, 3)}), flush=True)
                finally:
                    g.stop()
                time.sleep(1)


if __name__ == "__main__":
    main()
