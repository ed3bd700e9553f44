#!/usr/bin/env python3
"""Writes the seed corpus of the `api_request` target: corpus/api_request/seed-*.

Each seed is an input as `vmm::api::harness::Script::decode` reads it: a control byte
(bits 0-2: split points; bit 3: the client stalls at the end; bits 4-5: the client's
receive window; bit 6: small limits follow), two limit bytes if bit 6 is set, a
little-endian u16 per split point (the length of each read), then the client's bytes.
"""

import json
import os
import struct

STALL = 0x08
SMALL_LIMITS = 0x40


def window(n):
    """n: 0 no limit, 1 256 B, 2 4 KiB, 3 64 KiB."""
    return n << 4


def encode(stream, control=0, limits=None, splits=()):
    assert len(splits) <= 7
    control = (control & ~0x47) | len(splits) | (SMALL_LIMITS if limits else 0)
    out = bytes([control])
    if limits:
        out += bytes(limits)
    for s in splits:
        out += struct.pack("<H", s)
    return out + stream


def request(method, endpoint, body=None, headers=(), version="HTTP/1.1"):
    lines = [f"{method} /api/v1/{endpoint} {version}", "Host: localhost"] + list(headers)
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        lines += [f"Content-Length: {len(data)}", "Content-Type: application/json"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


FULL_CONFIG = {
    "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
    "memory": {
        "size": 1 << 30,
        "hotplug_method": "VirtioMem",
        "hotplug_size": 4 << 30,
        "hotplugged_size": 0,
        "block_size": 2 << 20,
        "shared": False,
        "hugepages": False,
        "prefault": False,
    },
    "payload": {"kernel": "/proc/self/exe", "cmdline": "console=ttyS0"},
    "serial": {"mode": "Off"},
    "console": {"mode": "Off"},
}

ZONES_CONFIG = {
    "cpus": {"boot_vcpus": 2},
    "memory": {
        "size": 0,
        "zones": [
            {"id": "mem0", "size": 512 << 20, "hotplug_size": 1 << 30},
            {"id": "mem1", "size": 512 << 20, "hotplug_size": 1 << 30, "hotplugged_size": 0},
        ],
    },
    "payload": {"kernel": "/proc/self/exe"},
    "numa": [
        {"guest_numa_id": 0, "cpus": [0], "memory_zones": ["mem0"]},
        {"guest_numa_id": 1, "cpus": [1], "memory_zones": ["mem1"],
         "distances": [{"destination": 0, "distance": 20}]},
    ],
}

ping = request("GET", "vmm.ping")
info = request("GET", "vm.info")
lifecycle = (
    request("PUT", "vm.create", FULL_CONFIG)
    + request("PUT", "vm.boot")
    + request("PUT", "vm.resize", {"desired_ram": 3 << 30})
    + info
)
zones = (
    request("PUT", "vm.create", ZONES_CONFIG)
    + request("PUT", "vm.boot")
    + request("PUT", "vm.resize-zone", {"id": "mem1", "desired_ram": 1 << 30})
    + request("PUT", "vm.resize", {"desired_ram": 2 << 30})
)
pair = ping + info
resize = request("PUT", "vm.resize", {"desired_ram": 1 << 30}, headers=["Expect: 100-continue"])
resize_head = resize.index(b"\r\n\r\n") + 4

SEEDS = {
    "ping": encode(ping),
    "create-boot-resize-info": encode(lifecycle),
    "zones-resize-zone": encode(zones, control=window(1)),
    "pipelined-pair-split": encode(pair, splits=(5, len(ping) - 5, 3)),
    "pipelined-pair-stalled": encode(pair + b"GET /api/v1/vm.in", control=STALL),
    "oversized-header": encode(
        request("GET", "vmm.ping", headers=["X-Filler: " + "a" * (16 * 1024)])),
    "oversized-body": encode(
        b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 262145\r\n\r\n{"),
    # At most 336 bytes of head and 64 of body; the body comes after the 100 Continue.
    "small-limits-continue": encode(
        resize, control=STALL, limits=(40, 4), splits=(resize_head,)),
    "http10-head-close": encode(
        request("HEAD", "vmm.ping", version="HTTP/1.0", headers=["Connection: keep-alive"])
        + request("GET", "vm.info", headers=["Connection: close"])
        + ping),
    "bad-requests": encode(
        request("GET", "vm.nope")
        + request("PUT", "vmm.ping")
        + request("PUT", "vm.create", b"{not json")
        + request("PUT", "vm.create", {"payload": {"kernel": "/nonexistent"}, "bogus": 1})
        + b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
}

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus", "api_request")
os.makedirs(out, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out, "seed-" + name), "wb") as f:
        f.write(data)
print(f"{len(SEEDS)} seeds in {out}")
