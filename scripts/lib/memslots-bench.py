#!/usr/bin/env python3
"""Host kernel memory a virtio-mem region costs before anything is plugged.

Usage: memslots-bench.py ACCORDION_BIN WORK_DIR RUNS [CH_BIN]

For each region size (64 GiB, 1 TiB) and each VMM, starts the VMM with 512 MiB of boot RAM
and the region, nothing plugged and no guest running (a kernel that halts; QEMU with -S),
waits until its memory is set up, and records how much VmallocUsed and MemAvailable
(/proc/meminfo, system-wide) moved. Runs alternate between the VMMs. One JSON object a line
on stdout: {"vmm", "region_gib", "vmalloc_kib", "available_kib"}.
"""
import json
import os
import signal
import struct
import subprocess
import sys
import time


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def settled_meminfo():
    """The median of a few reads, a moment apart, to smooth unrelated activity."""
    reads = []
    for _ in range(5):
        reads.append(meminfo())
        time.sleep(0.2)
    mid = len(reads) // 2
    return {
        key: sorted(r[key] for r in reads)[mid]
        for key in ("VmallocUsed", "MemAvailable")
    }


def halting_pvh_kernel(path):
    """An ELF64 whose PVH entry (Xen note 18) at 1 MiB is `hlt; jmp $-1`."""
    load, code_off = 0x100000, 0x1000
    code = bytes([0xF4, 0xEB, 0xFD])
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", load)
    phnum = 2
    note_off = 64 + 56 * phnum
    elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, load, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    elf += struct.pack("<IIQQQQQQ", 1, 5, code_off, load, load, len(code), 0x1000, 0x1000)
    elf += struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    elf += note
    elf = elf.ljust(code_off, b"\0") + code
    with open(path, "wb") as f:
        f.write(elf)


def wait_socket(path, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def command(vmm, region_gib, work, accordion, ch):
    region = f"{region_gib}G"
    if vmm == "accordion":
        return [accordion, "--kernel", f"{work}/kernel", "--serial", "off",
                "--memory", f"size=512M,hotplug_size={region}"]
    if vmm == "cloud-hypervisor":
        return [ch, "--kernel", f"{work}/kernel", "--serial", "off", "--console", "off",
                "--memory", f"size=512M,hotplug_method=virtio-mem,hotplug_size={region}"]
    dynamic = "on" if vmm == "qemu-dynamic-memslots" else "off"
    return ["qemu-system-x86_64", "-S", "-display", "none", "-nodefaults",
            "-cpu", "host,host-phys-bits=on", "-machine", "q35,accel=kvm",
            "-m", f"512M,maxmem={region_gib + 1}G",
            "-object", f"memory-backend-ram,id=vmem0,size={region},reserve=off",
            "-device", f"virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0,dynamic-memslots={dynamic}",
            "-monitor", "none", "-serial", "none"]


def measure(vmm, region_gib, work, accordion, ch):
    before = settled_meminfo()
    proc = subprocess.Popen(command(vmm, region_gib, work, accordion, ch),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Every VMM here sets its memory up within a second of starting; give it three.
    time.sleep(3)
    alive = proc.poll() is None
    after = settled_meminfo() if alive else None
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    time.sleep(1)
    if not alive:
        return {"vmm": vmm, "region_gib": region_gib,
                "error": err.decode(errors="replace").strip()[-300:]}
    return {"vmm": vmm, "region_gib": region_gib,
            "vmalloc_kib": after["VmallocUsed"] - before["VmallocUsed"],
            "available_kib": before["MemAvailable"] - after["MemAvailable"]}


def main():
    accordion, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ch = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    halting_pvh_kernel(f"{work}/kernel")
    vmms = ["accordion", "qemu", "qemu-dynamic-memslots"] + (["cloud-hypervisor"] if ch else [])
    for region_gib in (64, 1024):
        for _ in range(runs):
            for vmm in vmms:
                print(json.dumps(measure(vmm, region_gib, work, accordion, ch)), flush=True)


if __name__ == "__main__":
    main()
