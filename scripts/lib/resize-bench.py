#!/usr/bin/env python3
"""Resize latency of virtio-mem: Accordion (REST API) against Cloud Hypervisor (REST API, when
ACCORDION_CH_BIN names its binary) and QEMU (QMP), same guest.

Usage: resize-bench.py ACCORDION_BIN_DIR GUEST_DIR WORK_DIR RUNS

Runs where /dev/kvm boots Linux (inside the test host). Each VMM boots the test guest with
1 GiB of boot RAM and a 4 GiB virtio-mem region (block size 2 MiB); once all are READY, RUNS
rounds alternate between them: each asks for +2 GiB, timed from the request until the
guest's MemTotal line shows the target, then -2 GiB likewise. Prints one JSON object per line on stdout:
  {"vmm": "accordion"|"cloud-hypervisor"|"qemu", "op": "+2G"|"-2G", "run": N, "seconds": S}
and for Accordion, at the end, {"vmm": "accordion", "device": {...vm.counters...}} and
{"vmm": "accordion", "exits": {...}}: what the vCPU exits to the VMM (vm.counters'
vcpu-exits, pio-accesses and mmio-accesses) added during the runs, the boot left out.
ACCORDION_BENCH_MEMORY_OPTIONS (e.g. "slot_size=4G") is added to Accordion's --memory, to
measure what an option costs.
"""
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time

GIB = 1 << 30
MEMTOTAL = re.compile(r"MEMTOTAL (\d+) kB")


class Guest:
    """A VMM process whose serial console (stdout) is watched for MEMTOTAL lines."""

    def __init__(self, cmd, log_path):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines = queue.Queue()
        self.memtotal = None
        self.log = open(log_path, "w")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.log.write(line + "\n")
            self.log.flush()
            self.lines.put(line)

    def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("timed out")
            m = MEMTOTAL.search(line)
            if m:
                self.memtotal = int(m.group(1))
            if pred(line):
                return line

    def wait_memtotal(self, kb, timeout=300):
        if self.memtotal == kb:
            return
        self.wait_for(lambda l: f"MEMTOTAL {kb} kB" in l, timeout)

    def stop(self):
        try:
            self.proc.stdin.write(b"poweroff -f\n")
            self.proc.stdin.flush()
            self.proc.wait(60)
        except Exception:
            self.proc.kill()


def http_put(sock_path, path, body):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    data = json.dumps(body).encode()
    s.sendall(b"PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
    reply = s.recv(4096)
    s.close()
    if not reply.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(reply.decode(errors="replace"))


def http_get(sock_path, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


class Qmp:
    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.f = self.s.makefile("rwb")
        self.f.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(reply["error"])


def main():
    bin_dir, guest, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cmdline = open(os.path.join(guest, "cmdline")).read().strip()
    kernel = os.path.join(guest, "vmlinux")
    initrd = os.path.join(guest, "initramfs.cpio.gz")

    def fresh(path):
        if os.path.exists(path):
            os.unlink(path)
        return path

    # Every VMM boots its guest first; then the runs alternate between them (run 1 of each,
    # then run 2...), so that noise on the machine spreads over all of them.
    vmms = []  # (name, guest, resize)
    try:
        sock = fresh(os.path.join(work, "accordion.sock"))
        acc = Guest([os.path.join(bin_dir, "accordion"), "--kernel", kernel, "--initramfs", initrd,
                     "--cmdline", cmdline, "--cpus", "boot=1",
                     "--memory", "size=1G,hotplug_method=virtio-mem,hotplug_size=4G"
                     + "".join("," + o for o in
                               [os.environ.get("ACCORDION_BENCH_MEMORY_OPTIONS", "")] if o),
                     "--api-socket", "path=" + sock], os.path.join(work, "accordion.log"))
        vmms.append(("accordion", acc,
                     lambda plugged: http_put(sock, "/api/v1/vm.resize", {"desired_ram": GIB + plugged})))

        ch_bin = os.environ.get("ACCORDION_CH_BIN", "")
        if ch_bin and os.access(ch_bin, os.X_OK):
            ch_sock = fresh(os.path.join(work, "ch.sock"))
            ch = Guest([ch_bin, "--kernel", kernel, "--initramfs", initrd, "--cmdline", cmdline,
                        "--cpus", "boot=1",
                        "--memory", "size=1G,hotplug_method=virtio-mem,hotplug_size=4G",
                        "--serial", "tty", "--console", "off", "--api-socket", "path=" + ch_sock],
                       os.path.join(work, "cloud-hypervisor.log"))
            vmms.append(("cloud-hypervisor", ch,
                         lambda plugged: http_put(ch_sock, "/api/v1/vm.resize", {"desired_ram": GIB + plugged})))

        qmp_path = fresh(os.path.join(work, "qmp.sock"))
        qemu = Guest(["qemu-system-x86_64", "-enable-kvm", "-machine", "q35", "-cpu", "host", "-smp", "1",
                      "-m", "1G,maxmem=5G", "-nodefaults", "-no-user-config", "-display", "none",
                      "-serial", "stdio", "-no-reboot",
                      "-object", "memory-backend-ram,id=vmem0mem,size=4G",
                      "-device", "virtio-mem-pci,id=vmem0,memdev=vmem0mem,block-size=2M,requested-size=0",
                      "-qmp", "unix:%s,server=on,wait=off" % qmp_path,
                      "-kernel", kernel, "-initrd", initrd, "-append", cmdline],
                     os.path.join(work, "qemu.log"))
        qmp = Qmp(qmp_path)
        vmms.append(("qemu", qemu,
                     lambda plugged: qmp.cmd("qom-set", path="vmem0", property="requested-size", value=plugged)))

        bases = {}
        for name, guest_proc, _ in vmms:
            ready = guest_proc.wait_for(lambda l: "ACCORDION_GUEST_READY" in l, 600)
            bases[name] = int(re.search(r"memtotal_kb=(\d+)", ready).group(1))
            guest_proc.wait_memtotal(bases[name])
        time.sleep(2)
        before = http_get(sock, "/api/v1/vm.counters")
        for run in range(1, runs + 1):
            for name, guest_proc, resize in vmms:
                for op, plugged in (("+2G", 2 * GIB), ("-2G", 0)):
                    t0 = time.monotonic()
                    resize(plugged)
                    guest_proc.wait_memtotal(bases[name] + plugged // 1024)
                    took = time.monotonic() - t0
                    print(json.dumps({"vmm": name, "op": op, "run": run, "seconds": round(took, 3)}),
                          flush=True)
                    time.sleep(1)
        after = http_get(sock, "/api/v1/vm.counters")
        print(json.dumps({"vmm": "accordion", "device": after.get("virtio-mem-default", {})}),
              flush=True)
        exits = {f"{group} {name}": value - before.get(group, {}).get(name, 0)
                 for group in ("vcpu-exits", "pio-accesses", "mmio-accesses")
                 for name, value in after.get(group, {}).items()}
        print(json.dumps({"vmm": "accordion", "exits": exits}), flush=True)
    finally:
        for _, guest_proc, _ in vmms:
            guest_proc.stop()


if __name__ == "__main__":
    main()
