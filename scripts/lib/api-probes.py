#!/usr/bin/env python3
"""What Schemathesis does not send: vm.create bodies the server must accept, checked both
ways against the OpenAPI file, and bodies at and over the size limit.

Usage: api-probes.py API_SOCKET KERNEL_FILE

Round trips: for each sample body (a minimal one, Cloud Hypervisor's full body at neutral values from
vmm/src/testdata/ch_vm_create.json, zones with NUMA nodes and virtio-mem, a serial file):
the body must be a valid VmConfig; vm.create must answer 204; vm.info's answer must be a
valid VmInfo and its config a valid VmConfig; that config sent back to vm.create (after
vm.delete) must be accepted and give the same vm.info; vm.delete ends each. KERNEL_FILE is
any readable regular file: the VM is never booted. Needs no VM to exist at the start and
leaves none.

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
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

spec = importlib.util.spec_from_file_location(
    "validate_against_openapi", os.path.join(HERE, "validate-against-openapi.py")
)
validator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(validator)


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
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    api = Api(sys.argv[1])
    kernel = os.path.abspath(sys.argv[2])
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
