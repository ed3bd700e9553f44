#!/bin/busybox sh
# shellcheck shell=sh
# /init (PID 1) of Accordion's test guest, run by busybox sh from the initramfs.
#
# Console protocol (the integration tests parse it; keep it stable):
#   accordion-init: no power button
#       once, before READY, only if the guest has no "Power Button" input device (no
#       PNP0C0C device in the DSDT, or no button.ko);
#   ACCORDION_GUEST_READY cpus=<online CPUs> memtotal_kb=<kB> kernel=<release> uptime=<s>
#       once, when the guest is up, the modules are loaded and the power button is
#       watched (so a press sent right after READY is seen);
#   MEMTOTAL <kB> kB
#       from then on, in the background, whenever MemTotal changes (polled every 50 ms;
#       the first one right after the READY line);
#   ACCORDION_POWER_BUTTON
#       at any time after READY, in the background, when the ACPI power button is pressed
#       (the VMM's power-button request, through the GED and \_SB_.PWRB); the guest then
#       runs `sync` and `poweroff -f`, as acpid or systemd-logind would shut a distro down;
#   then, per kernel command line option accordion.action=:
#       poweroff  -> `poweroff -f` once the console has sent READY
#       reboot    -> `reboot -f` once the console has sent READY
#       (absent)  -> a command loop: each non-blank line read from the console runs as
#                    `sh -c "$line"` (stdin /dev/null, output to the console), followed by
#                    ACCORDION_CMD_DONE rc=<exit status>

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# devtmpfs is not mounted automatically when the root is an initramfs.
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "accordion-init: $*"; }

# `quiet` keeps the boot short; raise the console level again so that driver messages
# printed from now on (virtio_mem probing, plug and unplug) are visible to the tests.
echo "7 4 1 7" > /proc/sys/kernel/printk

# Hot-added memory must come online by itself (there is no udev): the kernel command line
# normally says memhp_default_state=online_movable; cover a kernel that ignores it.
aob=/sys/devices/system/memory/auto_online_blocks
if [ -w "$aob" ] && [ "$(cat "$aob")" = offline ]; then
  echo online_movable > "$aob"
fi

# Modules that are not built in (virtio_mem, button, evdev and their
# dependencies), in dependency order.
while read -r mod; do
  [ -n "$mod" ] && { insmod "/lib/modules/$mod.ko" || say "insmod $mod failed"; }
done < /etc/modules.load

# console_drained — waits (at most 2 s) until the serial port has sent what is queued for
# it: `poweroff -f` does not wait for the tty, and a READY line still in its buffer would be
# lost (seen with a one-vCPU test host). Done when the 8250 driver's transmit count
# (/proc/tty/driver/serial, port 0) has not moved for two samples 20 ms apart.
console_drained() {
  prev=-1 same=0 tries=0
  while [ "$tries" -lt 100 ] && [ "$same" -lt 2 ]; do
    tx=$(sed -n 's/^0:.* tx:\([0-9]*\).*/\1/p' /proc/tty/driver/serial 2>/dev/null)
    [ -n "$tx" ] || return 0
    if [ "$tx" = "$prev" ]; then same=$((same + 1)); else same=0; fi
    prev=$tx tries=$((tries + 1))
    usleep 20000
  done
}

# The power button. Without acpid or systemd-logind nothing acts on it, so do what they do:
# the ACPI button driver (button.ko) reports a press of the PNP0C0C device as KEY_POWER on
# an input device named "Power Button", and the first event read from its evdev node
# (evdev.ko) powers the guest off.
#
# power_button_watch — with the device open on fd 3: wait for one event, then shut down.
power_button_watch() {
  # An input_event is 24 bytes on x86-64 (struct timeval, type, code, value), and evdev
  # hands out whole events only, so this returns with the first one: the press.
  if [ "$(dd bs=24 count=1 <&3 2>/dev/null | wc -c)" != 24 ]; then
    say "power button: reading the event device failed"
    return 1
  fi
  echo ACCORDION_POWER_BUTTON
  sync
  # The line must leave the serial port before the power goes (poweroff -f does not wait).
  console_drained
  poweroff -f
}

power_buttons=0
for input in /sys/class/input/input*; do
  [ "$(cat "$input/name" 2>/dev/null)" = "Power Button" ] || continue
  for ev in "$input"/event*; do
    [ -e "$ev" ] || continue
    node=/dev/input/${ev##*/}
    # devtmpfs creates the node before the driver's registration returns; allow for a
    # late one all the same (at most 1 s).
    tries=0
    while [ ! -c "$node" ] && [ "$tries" -lt 20 ]; do usleep 50000; tries=$((tries + 1)); done
    # Open it here, in PID 1, before READY: evdev queues events for an open file from the
    # moment it is opened, so a press that comes before the watcher runs is not lost.
    # (`command` keeps a failed redirection from ending PID 1.)
    if command exec 3< "$node"; then
      power_button_watch > /dev/console 2>&1 &
      exec 3<&-
      power_buttons=$((power_buttons + 1))
    else
      say "power button: cannot open $node"
    fi
  done
done
[ "$power_buttons" -gt 0 ] || say "no power button"

cmdline_arg() {  # cmdline_arg NAME -> value of NAME=value on the kernel command line
  # shellcheck disable=SC2013  # the command line is one line of words
  for word in $(cat /proc/cmdline); do
    case "$word" in "$1"=*) echo "${word#*=}"; return 0 ;; esac
  done
}

memtotal_kb() {
  while read -r key value _; do
    if [ "$key" = MemTotal: ]; then echo "$value"; return 0; fi
  done < /proc/meminfo
}

# Reads /proc/meminfo in the shell itself rather than through $(memtotal_kb): a command
# substitution forks, and this runs 20 times a second for the guest's whole life.
memtotal_watch() {
  last=
  while :; do
    while read -r key value _; do
      [ "$key" = MemTotal: ] && break
    done < /proc/meminfo
    if [ "$value" != "$last" ]; then
      echo "MEMTOTAL $value kB"
      last=$value
    fi
    usleep 50000
  done
}

# Without echo the console output holds only what the commands print. Do it before READY:
# a command typed right after READY must not race with a change of the terminal's mode.
stty -echo < /dev/console 2>/dev/null || true

read -r uptime _ < /proc/uptime
cpus=$(grep -c '^processor' /proc/cpuinfo)
echo "ACCORDION_GUEST_READY cpus=$cpus memtotal_kb=$(memtotal_kb) kernel=$(uname -r) uptime=$uptime"
memtotal_watch > /dev/console 2>&1 &

case "$(cmdline_arg accordion.action)" in
  poweroff) console_drained; poweroff -f ;;
  reboot) console_drained; reboot -f ;;
esac

# Command loop (echo was switched off before READY).
while :; do
  while IFS= read -r line; do
    case "$line" in *[![:space:]]*) ;; *) continue ;; esac
    sh -c "$line" < /dev/null > /dev/console 2>&1
    echo "ACCORDION_CMD_DONE rc=$?"
  done < /dev/console
  # read returns at end of file (a ^D on the console); PID 1 must not exit, so listen again.
done
