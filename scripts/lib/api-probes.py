#!/usr/bin/env python3
"""What Schemathesis does not send: vm.create bodies the server must accept, checked both
ways against the OpenAPI file, and bodies at and over the size limit.

Usage: api-probes.py API_SOCKET KERNEL_FILE WORK_DIR
       api-probes.py --tiny-kernel halt|triple-fault PATH

Round trips: for each sample body (a minimal one, Cloud Hypervisor's full body at neutral values from
vmm/src/testdata/ch_vm_create.json, zones with NUMA nodes and virtio-mem, a serial file):
the body must be a valid VmConfig; vm.create must answer 204; vm.info's answer must be a
valid VmInfo and its config a valid VmConfig; that config sent back to vm.create (after
vm.delete) must be accepted and give the same vm.info; vm.delete ends each. KERNEL_FILE is
any readable regular file: the VM is never booted. Needs no VM to exist at the start and
leaves none.

A failed guest: a tiny kernel (written to WORK_DIR) that triple-faults at once is booted;
vm.info must reach state Failed with a failure reason, as a valid VmInfo, vm.counters
answer 409, and vm.delete end it.

--tiny-kernel writes a minimal ELF kernel with a PVH note (as tests/common's
tiny_elf_kernel): `halt` halts its vCPU with interrupts off (a VM that runs and costs no
CPU), `triple-fault` executes ud2 with no IDT.

Body sizes: a vm.create body just under the 256 KiB limit is read and answered 400 (its
kernel does not exist), one over it 413, with error chains as the file says; the api
thread's seccomp filter must let both through (it once killed the VMM on ~131 KB bodies).

Exits 1 on the first mismatch. Run it with the venv's python (jsonschema).
"""

import http.client
import importlib.util
import json
import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

spec = importlib.util.spec_from_file_location(
    "validate_against_openapi", os.path.join(HERE, "validate-against-openapi.py")
)
validator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validator)


# 32-bit protected-mode code at the PVH entry.
TINY_CODE = {
    "halt": bytes.fromhex("faf4ebfd"),  # cli; hlt; jmp back to hlt
    "triple-fault": bytes.fromhex("0f0b"),  # ud2 with an empty IDT: #UD, #GP, #DF, triple fault
}


def tiny_elf_kernel(code, memsz=0x1000):
    """An ELF64 kernel: one PT_LOAD of `code` at 1 MiB and a Xen PVH entry note."""
    load, offset = 0x100000, 0x1000
    elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, load, 64, 0, 0, 64, 56, 2, 64, 0, 0)
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", load)
    elf += struct.pack("<IIQQQQQQ", 1, 5, offset, load, load, len(code), max(memsz, len(code)), 0x1000)
    elf += struct.pack("<IIQQQQQQ", 4, 4, 64 + 2 * 56, 0, 0, len(note), len(note), 4)
    elf += note
    return elf.ljust(offset, b"\0") + code


def write_tiny_kernel(kind, path):
    with open(path, "wb") as f:
        f.write(tiny_elf_kernel(TINY_CODE[kind]))


def fail(message):
    print(f"api-probes: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


class Api:
    def __init__(self, path):
        self.path = path

    def call(self, method, endpoint, body=None):
        conn = http.client.HTTPConnection("localhost", timeout=10)
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(10)
        conn.sock.connect(self.path)
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, f"/api/v1/{endpoint}", body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        return response.status, (json.loads(raw) if raw else None)

    def expect(self, status, method, endpoint, body=None):
        got, answer = self.call(method, endpoint, body)
        if got != status:
            fail(f"{method} {endpoint} answered {got}, expected {status}: {answer}")
        return answer


def samples(kernel):
    with open(os.path.join(ROOT, "vmm", "src", "testdata", "ch_vm_create.json")) as f:
        ch = json.load(f)
    ch["payload"]["kernel"] = kernel
    ch["payload"]["initramfs"] = kernel
    ch["serial"]["mode"] = "Null"
    yield "minimal", {"payload": {"kernel": kernel}}
    yield "Cloud Hypervisor's full body", ch
    yield "zones, NUMA, virtio-mem", {
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
        "memory": {
            "size": 0,
            "block_size": 4194304,
            "prefault": False,
            "zones": [
                {"id": "mem0", "size": 536870912, "hotplug_size": 1073741824,
                 "hotplugged_size": 268435456},
                {"id": "mem1", "size": 536870912, "shared": True},
            ],
        },
        "numa": [
            {"guest_numa_id": 0, "cpus": [0], "memory_zones": ["mem0"],
             "distances": [{"destination": 1, "distance": 20}]},
            {"guest_numa_id": 1, "cpus": [1], "memory_zones": ["mem1"]},
        ],
        "payload": {"kernel": kernel, "cmdline": "console=ttyS0"},
    }
    yield "serial file, default zone hotplug", {
        "memory": {"size": 1073741824, "hotplug_method": "VirtioMem",
                   "hotplug_size": 8589934592, "hotplugged_size": 0},
        "payload": {"kernel": kernel},
        "serial": {"mode": "File", "file": "/nonexistent/serial.log"},
        "console": {"mode": "Off"},
    }


def check(schemas, name, document, what):
    errors = validator.errors_of(schemas, name, document)
    if errors:
        fail(f"{what} is not a valid {name}:\n  " + "\n  ".join(errors))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--tiny-kernel" and sys.argv[2] in TINY_CODE:
        write_tiny_kernel(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    api = Api(sys.argv[1])
    kernel = os.path.abspath(sys.argv[2])
    work = sys.argv[3]
    schemas = validator.load_schemas(validator.DEFAULT_SPEC)
    count = 0
    for label, body in samples(kernel):
        check(schemas, "VmConfig", body, f"the {label} body")
        api.expect(204, "PUT", "vm.create", body)
        info = api.expect(200, "GET", "vm.info")
        check(schemas, "VmInfo", info, f"vm.info after the {label} body")
        check(schemas, "VmConfig", info["config"], f"vm.info's config after the {label} body")
        api.expect(204, "PUT", "vm.delete")
        api.expect(204, "PUT", "vm.create", info["config"])
        again = api.expect(200, "GET", "vm.info")
        if again != info:
            fail(f"vm.info's config sent back to vm.create gave another vm.info:\n{again}\n{info}")
        api.expect(204, "PUT", "vm.delete")
        count += 1
    print(f"api-probes: {count} vm.create bodies accepted, valid both ways and round-tripped")

    faulty = os.path.join(work, "triple-fault-kernel")
    write_tiny_kernel("triple-fault", faulty)
    api.expect(204, "PUT", "vm.create", {"payload": {"kernel": faulty}, "memory": {"size": 64 << 20}})
    api.expect(204, "PUT", "vm.boot")
    deadline = time.monotonic() + 60
    while True:
        info = api.expect(200, "GET", "vm.info")
        if info["state"] == "Failed":
            break
        if time.monotonic() > deadline:
            fail(f"the triple-faulting guest did not fail in 60 s: {info}")
        time.sleep(0.05)
    check(schemas, "VmInfo", info, "vm.info of a failed guest")
    if "triple fault" not in info.get("failure", ""):
        fail(f"vm.info of a failed guest gives no reason: {info}")
    check(schemas, "ErrorChain", api.expect(409, "GET", "vm.counters"), "vm.counters of a failed guest")
    api.expect(204, "PUT", "vm.delete")
    print("api-probes: a triple-faulting guest: state Failed with its reason, a valid VmInfo")

    limit = 256 * 1024
    for size, status in ((limit - 64, 400), (limit + 1, 413), (4 * limit, 413)):
        body = {"payload": {"kernel": "/nonexistent/vmlinux", "cmdline": ""}}
        body["payload"]["cmdline"] = "x" * (size - len(json.dumps(body)))
        assert len(json.dumps(body)) == size
        answer = api.expect(status, "PUT", "vm.create", body)
        check(schemas, "ErrorChain", answer, f"the answer to a {size}-byte vm.create")
    print(f"api-probes: vm.create bodies of {limit - 64} bytes answered 400, over {limit} 413")


if __name__ == "__main__":
    main()
