#!/usr/bin/python3
"""Kernel image helpers for Accordion's scripts (Python 3 standard library only).

  kimage.py modules --modroot DIR --dest ROOT MODULE...
      Resolve MODULE and its dependencies (from each module's .modinfo `depends`),
      skip the ones built into the kernel, write them decompressed to
      ROOT/lib/modules/NAME.ko and the load order to ROOT/etc/modules.load (one a
      line, dependencies first). Prints the load order.

  kimage.py cpio --root DIR --out FILE.gz [--dir PATH]... [--dev PATH:c|b:MAJ:MIN:MODE]...
      Write DIR as a gzip'ed newc cpio archive that is byte-for-byte reproducible:
      sorted entries, owner root, mtime 0, normalised permissions. --dir and --dev
      add directories and device nodes that need no counterpart in DIR (so no root
      privileges or mknod are needed to build it).

  kimage.py vmlinux --bzimage FILE --out FILE [--require-pvh]
      Cut the compressed kernel out of a bzImage (setup header payload_offset and
      payload_length at 0x248/0x24c), decompress it to the ELF vmlinux and look for the
      Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18), which a PVH-booting VMM needs.
      Prints key=value lines about it.
"""

import argparse
import bz2
import gzip
import io
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib


def die(msg):
    sys.exit("kimage: error: " + msg)


# ----------------------------------------------------------------------------- modules

def decompress_file(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return run_tool(["zstd", "-dcq"], data)
    return data


def run_tool(argv, data):
    if shutil.which(argv[0]) is None:
        die("%s is needed to decompress this kernel" % argv[0])
    res = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if res.returncode != 0:
        die("%s failed: %s" % (" ".join(argv), res.stderr.decode(errors="replace").strip()))
    return res.stdout


def elf_sections(elf):
    """Yield (name, offset, size) of each section of an ELF64 little-endian file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        die("not an ELF64 file")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = headers[shstrndx][4]
    for h in headers:
        start = strtab_off + h[0]
        name = elf[start:elf.index(b"\0", start)].decode()
        yield name, h[4], h[5]


def modinfo(ko):
    for name, off, size in elf_sections(ko):
        if name == ".modinfo":
            info = {}
            for item in ko[off:off + size].split(b"\0"):
                if b"=" in item:
                    k, v = item.decode(errors="replace").split("=", 1)
                    info.setdefault(k, v)
            return info
    return {}


def canon(name):
    # Module names treat '-' and '_' alike; the kernel uses '_'.
    return name.replace("-", "_")


def module_stem(filename):
    return canon(os.path.basename(filename).split(".ko")[0])


def cmd_modules(args):
    index = {}
    for dirpath, _, files in os.walk(os.path.join(args.modroot, "kernel")):
        for f in files:
            if ".ko" in f:
                index[module_stem(f)] = os.path.join(dirpath, f)
    builtin = set()
    builtin_list = os.path.join(args.modroot, "modules.builtin")
    if os.path.exists(builtin_list):
        with open(builtin_list) as f:
            builtin = {module_stem(line.strip()) for line in f if line.strip()}

    order, blobs, seen = [], {}, set()

    def add(name):
        name = canon(name)
        if name in seen:
            return
        seen.add(name)
        if name in builtin:
            print("kimage: %s is built in" % name, file=sys.stderr)
            return
        if name not in index:
            die("module %s not found under %s" % (name, args.modroot))
        ko = decompress_file(index[name])
        for dep in filter(None, modinfo(ko).get("depends", "").split(",")):
            add(dep)
        order.append(name)
        blobs[name] = ko

    for m in args.module:
        add(m)

    moddir = os.path.join(args.dest, "lib", "modules")
    os.makedirs(moddir, exist_ok=True)
    os.makedirs(os.path.join(args.dest, "etc"), exist_ok=True)
    for name in order:
        with open(os.path.join(moddir, name + ".ko"), "wb") as f:
            f.write(blobs[name])
    with open(os.path.join(args.dest, "etc", "modules.load"), "w") as f:
        f.write("".join(n + "\n" for n in order))
    for name in order:
        print(name)


# ----------------------------------------------------------------------------- cpio

def cmd_cpio(args):
    entries = {}  # path -> (mode, data, rdev major, rdev minor)
    root = args.root
    for dirpath, dirnames, files in os.walk(root):
        for name in dirnames + files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = (stat.S_IFLNK | 0o777, os.readlink(full).encode(), 0, 0)
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = (stat.S_IFDIR | 0o755, b"", 0, 0)
            elif stat.S_ISREG(st.st_mode):
                perm = 0o755 if st.st_mode & 0o111 else 0o644
                with open(full, "rb") as f:
                    entries[rel] = (stat.S_IFREG | perm, f.read(), 0, 0)
            else:
                die("unsupported file type: " + full)
    for d in args.dir:
        entries.setdefault(d, (stat.S_IFDIR | 0o755, b"", 0, 0))
    for spec in args.dev:
        path, kind, major, minor, mode = spec.split(":")
        ftype = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[kind]
        entries[path] = (ftype | int(mode, 8), b"", int(major), int(minor))
        # Make sure the parent directories exist in the archive too.
        parent = os.path.dirname(path)
        while parent:
            entries.setdefault(parent, (stat.S_IFDIR | 0o755, b"", 0, 0))
            parent = os.path.dirname(parent)

    out = io.BytesIO()

    def write_entry(ino, path, mode, data, rmaj, rmin):
        name = path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name), 0)
        out.write(b"070701" + "".join("%08x" % v for v in fields).encode() + name)
        out.write(b"\0" * (-(110 + len(name)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))

    # Sorted paths put every directory before what it contains.
    for ino, path in enumerate(sorted(entries), start=1):
        write_entry(ino, path, *entries[path])
    write_entry(0, "TRAILER!!!", 0, b"", 0, 0)

    raw = out.getvalue()
    with open(args.out, "wb") as f:
        with gzip.GzipFile(filename="", fileobj=f, mode="wb", compresslevel=9, mtime=0) as gz:
            gz.write(raw)


# ----------------------------------------------------------------------------- vmlinux

def decompress_payload(p):
    """Return (kind, ELF bytes). All but gzip payloads end in a 4-byte size."""
    if p[:2] == b"\x1f\x8b":
        return "gzip", zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(p)
    body, size = p[:-4], struct.unpack("<I", p[-4:])[0]
    if p[:4] == b"\x28\xb5\x2f\xfd":
        kind, elf = "zstd", run_tool(["zstd", "-dcq"], body)
    elif p[:6] == b"\xfd7zXZ\x00":
        kind, elf = "xz", lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(body)
    elif p[:3] == b"\x5d\x00\x00":
        kind, elf = "lzma", lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(body)
    elif p[:3] == b"BZh":
        kind, elf = "bzip2", bz2.BZ2Decompressor().decompress(body)
    elif p[:4] == b"\x02\x21\x4c\x18":
        kind, elf = "lz4", run_tool(["lz4", "-dcq"], body)
    elif p[:3] == b"\x89LZ":
        kind, elf = "lzo", run_tool(["lzop", "-dcq"], body)
    else:
        die("unknown bzImage payload compression (magic %r)" % p[:6])
    if len(elf) != size:
        die("%s payload: decompressed %d bytes, size trailer says %d" % (kind, len(elf), size))
    return kind, elf


def pvh_entry(elf):
    """The address in the Xen PHYS32_ENTRY note of an ELF64 file, or None."""
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if ptype != 4:  # PT_NOTE
            continue
        pos = off
        while pos + 12 <= off + filesz:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            desc = pos + 12 + ((namesz + 3) & ~3)
            if name == b"Xen" and ntype == 18:
                return struct.unpack_from("<I", elf, desc)[0]
            pos = desc + ((descsz + 3) & ~3)
    return None


def cmd_vmlinux(args):
    with open(args.bzimage, "rb") as f:
        b = f.read()
    if b[0x202:0x206] != b"HdrS":
        die(args.bzimage + " is not a bzImage (no HdrS signature)")
    setup_sects = b[0x1F1] or 4
    prot_mode_start = (setup_sects + 1) * 512
    payload_offset, payload_length = struct.unpack_from("<II", b, 0x248)
    start = prot_mode_start + payload_offset
    kind, elf = decompress_payload(b[start:start + payload_length])
    if elf[:4] != b"\x7fELF":
        die("the bzImage payload is not an ELF file")
    entry = pvh_entry(elf)
    if entry is None and args.require_pvh:
        die("vmlinux has no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY): cannot PVH-boot it")
    with open(args.out, "wb") as f:
        f.write(elf)
    print("bzImage_payload=%s" % kind)
    print("vmlinux_bytes=%d" % len(elf))
    print("pvh_phys32_entry=%s" % (hex(entry) if entry is not None else "none"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("modules")
    m.add_argument("--modroot", required=True)
    m.add_argument("--dest", required=True)
    m.add_argument("module", nargs="*")
    c = sub.add_parser("cpio")
    c.add_argument("--root", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--dir", action="append", default=[])
    c.add_argument("--dev", action="append", default=[])
    v = sub.add_parser("vmlinux")
    v.add_argument("--bzimage", required=True)
    v.add_argument("--out", required=True)
    v.add_argument("--require-pvh", action="store_true")
    args = ap.parse_args()
    {"modules": cmd_modules, "cpio": cmd_cpio, "vmlinux": cmd_vmlinux}[args.cmd](args)


if __name__ == "__main__":
    main()
