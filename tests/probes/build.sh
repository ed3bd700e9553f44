#!/bin/sh
# Builds a probe guest: tests/probes/NAME.c into the flat binary OUT (loaded and entered at
# 1 MiB in 32-bit protected mode, see probe.ld), with the host's gcc and ld (no 32-bit
# libraries needed: the probes use no headers and no libgcc). Extra arguments go to gcc
# (-DNAME=VALUE settings). Used by tests/unplugged_memory.rs and scripts/bench-memslots.sh.
#
# Usage: tests/probes/build.sh NAME OUT [GCC_ARG...]
set -eu
[ $# -ge 2 ] || { echo "usage: $0 NAME OUT [GCC_ARG...]" >&2; exit 2; }
dir=$(cd "$(dirname "$0")" && pwd)
name=$1 out=$2
shift 2
gcc -m32 -march=i686 -ffreestanding -fno-pic -fno-stack-protector \
  -fno-asynchronous-unwind-tables -Os -nostdlib -Wall -Wextra -Werror "$@" \
  -c "$dir/$name.c" -o "$out.o"
ld -m elf_i386 -T "$dir/probe.ld" --oformat binary -o "$out" "$out.o"
rm -f "$out.o"
