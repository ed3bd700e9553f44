#!/usr/bin/env python3
"""Snapshot and restore: Accordion against Cloud Hypervisor (when ACCORDION_CH_BIN names
its binary), same guest.

Usage: snapshot-bench.py ACCORDION_BIN_DIR GUEST_DIR WORK_DIR RUNS

Runs where /dev/kvm boots Linux (inside the test host). Each VMM boots the test guest with
512 MiB of boot RAM and a 16 GiB virtio-mem region, plugs 1 GiB and writes 256 MiB of random
data into a tmpfs; then, RUNS times, alternating between the VMMs: pause, vm.snapshot into a
new directory (timed from the request to its answer), resume; only the last snapshot of
each VMM is kept. The source VMMs are stopped,
and RUNS times per VMM and memory_restore_mode (Copy, OnDemand), alternating: a new process
with --restore ...,resume=true from that last snapshot, timed from its start until the guest echoes a line typed on
its console (restore to running, as the guest sees it). One JSON object per line on stdout:
  {"vmm": ..., "op": "snapshot", "run": N, "seconds": S, "file_len": B, "allocated": B}
  {"vmm": ..., "op": "restore-Copy"|"restore-OnDemand", "run": N, "seconds": S}
"""
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

rb = import_module("resize-bench")
Guest, http_put = rb.Guest, rb.http_put

MIB = 1 << 20
GIB = 1 << 30


class SocketGuest(Guest):
    """A VMM whose serial console is a unix socket (Cloud Hypervisor's --serial socket=,
    since it reads no console input from a pipe)."""

    def __init__(self, cmd, log_path, console_path, timeout=60):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.lines = queue.Queue()
        self.memtotal = None
        self.log = open(log_path, "w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(console_path)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.005)
        threading.Thread(target=self._read_socket, daemon=True).start()

    def _read_socket(self):
        for raw in self.sock.makefile("rb"):
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.log.write(line + "\n")
            self.log.flush()
            self.lines.put(line)

    def send(self, text):
        self.sock.sendall(text.encode() + b"\n")

    def stop(self):
        try:
            self.send("poweroff -f")
            self.proc.wait(60)
        except Exception:
            self.proc.kill()


def send(guest, text):
    if isinstance(guest, SocketGuest):
        guest.send(text)
    else:
        guest.proc.stdin.write(text.encode() + b"\n")
        guest.proc.stdin.flush()


def put_empty(sock_path, path):
    """A PUT without a body (Cloud Hypervisor refuses one on vm.pause and vm.resume)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % path.encode())
    reply = s.recv(4096)
    s.close()
    if not reply.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(path + ": " + reply.decode(errors="replace"))


def say(*args):
    print("snapshot-bench:", *args, file=sys.stderr, flush=True)


def wait_socket(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)


def console(guest, command, marker, timeout=300):
    send(guest, command)
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
    ch_console = os.path.join(work, "ch-console.sock")
    peers = [("accordion", accordion, [])]
    if ch_bin and os.access(ch_bin, os.X_OK):
        peers.append(("cloud-hypervisor", ch_bin,
                      ["--serial", "socket=" + ch_console, "--console", "off"]))

    def spawn(name, cmd, log):
        if name == "cloud-hypervisor":
            if os.path.exists(ch_console):
                os.unlink(ch_console)
            return SocketGuest(cmd, log, ch_console)
        return Guest(cmd, log)

    def sock_of(name):
        path = os.path.join(work, name + ".sock")
        if os.path.exists(path):
            os.unlink(path)
        return path

    sources = []
    try:
        for name, binary, extra in peers:
            sock = sock_of(name)
            g = spawn(name, [binary, "--kernel", kernel, "--initramfs", initrd, "--cmdline",
                             cmdline, "--cpus", "boot=1", "--memory", memory, "--api-socket",
                             "path=" + sock] + extra, os.path.join(work, name + "-source.log"))
            sources.append((name, g, sock))
        for name, g, sock in sources:
            ready = g.wait_for(lambda l: "ACCORDION_GUEST_READY" in l, 600)
            base = int(re.search(r"memtotal_kb=(\d+)", ready).group(1))
            say(name, "ready; plugging 1 GiB")
            http_put(sock, "/api/v1/vm.resize", {"desired_ram": 512 * MIB + GIB})
            g.wait_memtotal(base + GIB // 1024)
            say(name, "plugged; writing 256 MiB")
            console(g, "mkdir -p /p && mount -t tmpfs -o size=2G p /p && "
                       "dd if=/dev/urandom of=/p/data bs=1M count=256 2>/dev/null; echo WROTE",
                    "WROTE")
        for run in range(1, runs + 1):
            for name, g, sock in sources:
                # One snapshot per VMM on disk at a time (the test host's disk is its RAM).
                target = os.path.join(work, "%s-snap" % name)
                shutil.rmtree(target, ignore_errors=True)
                if name == "cloud-hypervisor":
                    os.mkdir(target)  # Cloud Hypervisor writes into an existing directory
                put_empty(sock, "/api/v1/vm.pause")
                t0 = time.monotonic()
                http_put(sock, "/api/v1/vm.snapshot", {"destination_url": "file://" + target})
                took = time.monotonic() - t0
                put_empty(sock, "/api/v1/vm.resume")
                file_len, allocated = du(target)
                say(name, "snapshot", run, "took", round(took, 2), "s,", file_len, "bytes")
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
                snap = os.path.join(work, "%s-snap" % name)
                restore = "source_url=file://%s,resume=true,memory_restore_mode=%s" % (
                    snap, mode.lower())
                t0 = time.monotonic()
                g = spawn(name, [binary, "--api-socket", "path=" + sock, "--restore", restore],
                          os.path.join(work, "%s-restore-%s-%d.log" % (name, mode, run)))
                try:
                    # The guest answers on its console once it runs.
                    console(g, "echo RUNNING_%d" % run, "RUNNING_%d" % run, 300)
                    took = time.monotonic() - t0
                    say(name, "restore", mode, run, "took", round(took, 2), "s")
                    print(json.dumps({"vmm": name, "op": "restore-" + mode, "run": run,
                                      "seconds": round(took, 3)}), flush=True)
                finally:
                    g.stop()
                time.sleep(1)


if __name__ == "__main__":
    main()
