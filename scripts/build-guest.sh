#!/usr/bin/env bash
# Build Accordion's test guest from Debian packages, without installing them on the host:
# Debian's cloud kernel from bookworm-backports (6.12: PVH note, virtio-pci built in,
# virtio_mem as a module) and a busybox initramfs whose /init speaks the console protocol
# the integration tests rely on (scripts/lib/guest-init.sh).
#
# Modules in the initramfs (with their dependencies; the cloud kernel has all three as =m):
#   virtio_mem  memory hot(un)plug (CONFIG_VIRTIO_MEM)
#   button      ACPI power button, PNP0C0C -> "Power Button" input device (CONFIG_ACPI_BUTTON)
#   evdev       /dev/input/event* for /init's power button watcher (CONFIG_INPUT_EVDEV)
# The GED that delivers the button's notification (drivers/acpi/evged.c) is always built in.
# ACCORDION_GUEST_MODULES replaces the list.
#
# Usage: scripts/build-guest.sh [--print-dir]
#
# Output directory $CACHE/guest/<kernel-release>-<key>/ (CACHE defaults to
# ~/.cache/accordion), also reachable as $CACHE/guest/current:
#   bzImage            the kernel as Debian ships it
#   vmlinux            the uncompressed ELF cut out of bzImage (has the Xen PVH entry note)
#   initramfs.cpio.gz  newc cpio, reproducible: busybox, /init, modules
#   cmdline            the default kernel command line
#   config             the kernel's .config
#   info.txt           package versions, loaded modules, sizes
#
# The directory is printed as the last line of stdout; with --print-dir it is the only
# thing on stdout. A second run with the same inputs only checks the versions (~1 s).
set -euo pipefail

LOG_TAG=build-guest
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

main() {
  local print_dir=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --print-dir) print_dir=1 ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
  done

  IMG_KIND=guest
  IMG_KERNEL=${ACCORDION_GUEST_KERNEL:-linux-image-cloud-amd64}
  IMG_SUITE=${ACCORDION_GUEST_SUITE:-bookworm-backports}
  IMG_INIT=$ACCORDION_LIB_DIR/guest-init.sh
  IMG_MODULES=${ACCORDION_GUEST_MODULES:-virtio_mem button evdev}
  IMG_VMLINUX=1
  IMG_CMDLINE="console=ttyS0 quiet memhp_default_state=online_movable"
  IMG_INPUTS=${BASH_SOURCE[0]}
  build_boot_image

  if [ "$print_dir" = 0 ]; then
    cat "$IMG_DIR/info.txt"
  fi
  echo "$IMG_DIR"
}

main "$@"
