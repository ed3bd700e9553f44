#!/usr/bin/env python3
"""Host kernel memory a virtio-mem region costs, with nothing or 1 GiB plugged.

Usage: memslots-bench.py ACCORDION_BIN WORK_DIR RUNS CH_BIN|"" REGIONS_GIB [PROBE_BIN]

For each region size (REGIONS_GIB, comma separated) and each VMM, starts the VMM with
512 MiB of boot RAM and the region, waits until its memory is set up, and records how much
VmallocUsed and MemAvailable (/proc/meminfo, system-wide) moved. Nothing plugged: no guest
runs (a kernel that halts; QEMU with -S). With PROBE_BIN (tests/probes/virtio_mem_plug.c
built with -DBENCH -DPLUG_MIB=1024, a flat binary entered at 1 MiB) each size is also run
with that guest, which plugs 1 GiB by the virtio-mem protocol without touching it and
prints "A" when the device acknowledged; the measure is taken then. Runs alternate between
the VMMs. One JSON object a line on stdout:
{"vmm", "region_gib", "plugged_gib", "vmalloc_kib", "available_kib"} (or "error").
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


def pvh_kernel(path, code):
    """An ELF64 whose PVH entry (Xen note 18) at 1 MiB is `code`."""
    load, code_off = 0x100000, 0x1000
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", load)
    phnum = 2
    note_off = 64 + 56 * phnum
    elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, load, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    memsz = max(len(code), 0x1000)
    elf += struct.pack("<IIQQQQQQ", 1, 7, code_off, load, load, len(code), memsz, 0x1000)
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


def command(vmm, region_gib, plugged_gib, work, accordion, ch):
    region = f"{region_gib}G"
    kernel = f"{work}/probe" if plugged_gib else f"{work}/kernel"
    serial = f"{work}/serial-{vmm}"
    plugged = f"{plugged_gib}G"
    if vmm == "accordion":
        return [accordion, "--kernel", kernel, "--serial", f"file={serial}",
                "--memory", f"size=512M,hotplug_size={region},hotplugged_size={plugged}"]
    if vmm == "cloud-hypervisor":
        return [ch, "--kernel", kernel, "--serial", f"file={serial}", "--console", "off",
                "--memory", f"size=512M,hotplug_method=virtio-mem,hotplug_size={region},"
                f"hotplugged_size={plugged}"]
    dynamic = "on" if vmm == "qemu-dynamic-memslots" else "off"
    run = ["-kernel", kernel] if plugged_gib else ["-S"]
    return ["qemu-system-x86_64", *run, "-display", "none", "-nodefaults",
            "-cpu", "host,host-phys-bits=on", "-machine", "q35,accel=kvm",
            "-m", f"512M,maxmem={region_gib + 1}G",
            "-object", f"memory-backend-ram,id=vmem0,size={region},reserve=off",
            "-device", f"virtio-mem-pci,id=vm0,memdev=vmem0,requested-size={plugged},"
            f"dynamic-memslots={dynamic}",
            "-monitor", "none", "-serial", f"file:{serial}"]


def wait_plugged(serial, proc, timeout=120):
    """Waits for the probe's answer line; returns it ("A" when the plug was acknowledged)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(serial, "rb") as f:
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        if "\n" in text:
            return text.strip()
        time.sleep(0.2)
    return None


def measure(vmm, region_gib, plugged_gib, work, accordion, ch):
    serial = f"{work}/serial-{vmm}"
    if os.path.exists(serial):
        os.unlink(serial)
    before = settled_meminfo()
    proc = subprocess.Popen(command(vmm, region_gib, plugged_gib, work, accordion, ch),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Every VMM here sets its memory up within a second of starting; give it three.
    time.sleep(3)
    answer = wait_plugged(serial, proc) if plugged_gib else "A"
    alive = proc.poll() is None and answer == "A"
    after = settled_meminfo() if alive else None
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    time.sleep(1)
    if not alive:
        return {"vmm": vmm, "region_gib": region_gib, "plugged_gib": plugged_gib,
                "error": f"probe answered {answer!r}; "
                + err.decode(errors="replace").strip()[-300:]}
    return {"vmm": vmm, "region_gib": region_gib, "plugged_gib": plugged_gib,
            "vmalloc_kib": after["VmallocUsed"] - before["VmallocUsed"],
            "available_kib": before["MemAvailable"] - after["MemAvailable"]}


def main():
    accordion, work, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ch = sys.argv[4] or None
    regions = [int(g) for g in sys.argv[5].split(",")]
    probe = sys.argv[6] if len(sys.argv) > 6 else None
    pvh_kernel(f"{work}/kernel", bytes([0xF4, 0xEB, 0xFD]))  # hlt; jmp $-1
    plugged = [0]
    if probe:
        with open(probe, "rb") as f:
            pvh_kernel(f"{work}/probe", f.read())
        plugged.append(1)
    vmms = ["accordion", "qemu", "qemu-dynamic-memslots"] + (["cloud-hypervisor"] if ch else [])
    for region_gib in regions:
        for plugged_gib in plugged:
            for _ in range(runs):
                for vmm in vmms:
                    row = measure(vmm, region_gib, plugged_gib, work, accordion, ch)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
