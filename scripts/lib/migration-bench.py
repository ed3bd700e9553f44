#!/usr/bin/env python3
"""Live migration: Accordion against Cloud Hypervisor (when ACCORDION_CH_BIN names its
binary), same guest, over a unix socket in one host.

Usage: migration-bench.py ACCORDION_BIN_DIR GUEST_DIR WORK_DIR RUNS

Runs where /dev/kvm boots Linux (inside the test host). RUNS times, alternating between the
VMMs: a source boots the test guest with 1 GiB of boot RAM and a 16 GiB virtio-mem region,
plugs 1 GiB and starts a loop printing "T <n>" on its console as fast as the serial port
takes it (shell builtins only, a tick about every millisecond; the guest is otherwise idle); a destination VMM with only an API socket receives, through a
proxy that counts the bytes the source writes; then vm.send-migration. Measured:
  total     from the send request until the destination's vm.receive-migration answers;
  downtime  the gap in the guest's ticks as the host receives them: from the last tick on
            the source's console to the first on the destination's (the guest's own clock
            is restored across the pause, so it cannot see the gap itself);
  bytes     what the source wrote to the socket.
Both VMMs' consoles are ptys (Cloud Hypervisor reads console input from a terminal only).
One JSON object per line on stdout:
  {"vmm": ..., "run": N, "total_s": S, "downtime_ms": MS, "bytes": B}
"""
import json
import os
import pty
import queue
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

rb = import_module("resize-bench")
sb = import_module("snapshot-bench")
http_put, wait_path = rb.http_put, sb.wait_socket

MIB = 1 << 20
GIB = 1 << 30
TICK = re.compile(r"^T (\d+)")


def say(*args):
    print("migration-bench:", *args, file=sys.stderr, flush=True)


class PtyGuest(sb.SocketGuest):
    """A VMM whose serial console is a pty; tick lines are kept with their arrival time,
    the others go to `wait_for`."""

    def __init__(self, cmd, log_path):
        self.master, slave = pty.openpty()
        # Raw: no echo of what is typed, no CR/LF translation.
        import tty
        tty.setraw(slave)
        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave,
                                     stderr=open(log_path + ".stderr", "w"))
        os.close(slave)
        self.lines = queue.Queue()
        self.memtotal = None
        self.ticks = []
        self.log = open(log_path, "w")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                self.log.write("%.6f %s\n" % (now, line))
                if TICK.match(line):
                    self.ticks.append(now)
                else:
                    self.lines.put(line)

    def send(self, text):
        os.write(self.master, text.encode() + b"\r")


class CountingProxy:
    """Forwards one connection from LISTEN to TARGET, counting the bytes the sender writes."""

    def __init__(self, listen, target):
        if os.path.exists(listen):
            os.unlink(listen)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(listen)
        self.server.listen(1)
        self.target = target
        self.bytes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _pump(self, src, dst, count):
        try:
            while True:
                data = src.recv(1 << 20)
                if not data:
                    break
                if count:
                    self.bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (dst,):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _run(self):
        conn, _ = self.server.accept()
        out = socket.socket(socket.AF_UNIX)
        out.connect(self.target)
        back = threading.Thread(target=self._pump, args=(out, conn, False), daemon=True)
        back.start()
        self._pump(conn, out, True)
        back.join(60)


def main():
    bin_dir, guest_dir, work, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cmdline = open(os.path.join(guest_dir, "cmdline")).read().strip()
    kernel = os.path.join(guest_dir, "vmlinux")
    initrd = os.path.join(guest_dir, "initramfs.cpio.gz")
    memory = "size=1G,hotplug_method=virtio-mem,hotplug_size=16G"
    peers = [("accordion", os.path.join(bin_dir, "accordion"))]
    ch_bin = os.environ.get("ACCORDION_CH_BIN", "")
    if ch_bin and os.access(ch_bin, os.X_OK):
        peers.append(("cloud-hypervisor", ch_bin))

    for run in range(1, runs + 1):
        for name, binary in peers:
            src_sock = os.path.join(work, name + "-src.sock")
            dst_sock = os.path.join(work, name + "-dst.sock")
            mig_sock = os.path.join(work, name + "-migration.sock")
            proxy_sock = os.path.join(work, name + "-proxy.sock")
            for p in (src_sock, dst_sock, mig_sock, proxy_sock):
                if os.path.exists(p):
                    os.unlink(p)
            extra = ["--serial", "tty", "--console", "off"] if name == "cloud-hypervisor" else []
            # Accordion's source logs where its pause went (-v: info).
            verbose = ["-v"] if name == "accordion" else []
            src = PtyGuest([binary, "--kernel", kernel, "--initramfs", initrd, "--cmdline",
                            cmdline, "--cpus", "boot=1", "--memory", memory,
                            "--api-socket", "path=" + src_sock] + extra + verbose,
                           os.path.join(work, "%s-source-%d.log" % (name, run)))
            dst = None
            try:
                src.wait_for(lambda l: "ACCORDION_GUEST_READY" in l, 600)
                http_put(src_sock, "/api/v1/vm.resize", {"desired_ram": 2 * GIB})
                src.wait_for(lambda l: "MEMTOTAL" in l and int(l.split()[1]) > 1800000, 300)
                # Shell builtins only (a fork per tick would space the ticks ~45 ms apart
                # under TCG): as fast as the serial port takes them, a tick every ~1 ms.
                src.send("(n=0; while :; do n=$((n+1)); echo \"T $n\"; done) &")
                deadline = time.monotonic() + 60
                while len(src.ticks) < 20:
                    if time.monotonic() > deadline:
                        raise TimeoutError("no ticks on the source's console")
                    time.sleep(0.05)
                dst = PtyGuest([binary, "--api-socket", "path=" + dst_sock] + verbose,
                               os.path.join(work, "%s-destination-%d.log" % (name, run)))
                wait_path(dst_sock)
                received = {}

                def receive():
                    try:
                        http_put(dst_sock, "/api/v1/vm.receive-migration",
                                 {"receiver_url": "unix:" + mig_sock})
                        received["at"] = time.monotonic()
                    except Exception as e:  # noqa: BLE001
                        received["error"] = str(e)

                rt = threading.Thread(target=receive, daemon=True)
                rt.start()
                wait_path(mig_sock)
                proxy = CountingProxy(proxy_sock, mig_sock)
                t0 = time.monotonic()
                http_put(src_sock, "/api/v1/vm.send-migration",
                         {"destination_url": "unix:" + proxy_sock})
                rt.join(900)
                if "at" not in received:
                    raise RuntimeError("%s: the migration did not finish: %s" % (name, received))
                total = received["at"] - t0
                deadline = time.monotonic() + 60
                while not dst.ticks:
                    if time.monotonic() > deadline:
                        raise TimeoutError("no ticks on the destination's console")
                    time.sleep(0.01)
                last_src = max(src.ticks)
                downtime = (dst.ticks[0] - last_src) * 1000
                proxy.thread.join(60)
                say(name, run, "total %.2f s, downtime %.1f ms, %d bytes" % (
                    total, downtime, proxy.bytes))
                print(json.dumps({"vmm": name, "run": run, "total_s": round(total, 3),
                                  "downtime_ms": round(downtime, 1), "bytes": proxy.bytes}),
                      flush=True)
            finally:
                if src.proc.poll() is None:
                    src.stop()
                if dst is not None:
                    dst.stop()
            time.sleep(1)


if __name__ == "__main__":
    main()
