#!/bin/busybox sh
# shellcheck shell=sh
# /init (PID 1) of the nested test host that scripts/test-host.sh boots under QEMU TCG.
#
# It makes /dev/kvm real (kvm_amd on the emulated SVM CPU), shows the host's own root at
# /host (9p, read-only, with a RAM overlay on top so that it is writable for the run),
# runs the command that test-host.sh wrote into the shared directory in `chroot /host`,
# and reports the exit status back through that directory:
#   share (9p tag accshare) holds  share_path  the share's path on the host
#                                  run.sh      environment, cd and exec of the command
#                                  mounts      optional "tag path" lines: more writable shares
#   and receives                   status      "rc=N" or "error=message"
# Lines it prints to the console start with "test-host:".

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "test-host: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# Report to the caller through the share (if it is mounted) and power off. PID 1 must not
# exit; with panic=-1 and QEMU's -no-reboot a failed poweroff still ends the VM.
share_mounted=0
finish() {
  if [ "$share_mounted" = 1 ]; then echo "$1" > /share/status; sync; fi
  poweroff -f
  sleep 5
  exit 1
}
fail() { say "ERROR: $*"; finish "error=$*"; }

# The command's output goes through this console; without onlcr the caller gets "\n"
# line ends (not "\r\n") whether it writes to a terminal, a pipe or a file.
stty -onlcr < /dev/console 2>/dev/null || true
say "kernel $(uname -r) up after $(uptime_s) s"

while read -r mod; do
  [ -n "$mod" ] && { insmod "/lib/modules/$mod.ko" || say "insmod $mod failed"; }
done < /etc/modules.load

# Loopback, for tests that talk TCP to 127.0.0.1 (a live migration over tcp:).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null || say "cannot bring up lo"

NINEP=trans=virtio,version=9p2000.L,msize=524288
mkdir -p /share
mount -t 9p -o "$NINEP" accshare /share || fail "cannot mount the shared directory (9p)"
share_mounted=1
# Tells test-host.sh's boot watchdog that the test host came up.
echo up > /share/booted

if [ ! -c /dev/kvm ]; then
  fail "no /dev/kvm: kvm_amd did not load (the outer QEMU must emulate an AMD CPU with svm; $(grep -cw svm /proc/cpuinfo) CPUs show svm)"
fi
say "/dev/kvm ready (kvm_amd nested=$(cat /sys/module/kvm_amd/parameters/nested) npt=$(cat /sys/module/kvm_amd/parameters/npt))"

# The host root, read-only over 9p, under a tmpfs overlay: the command sees the host's
# files at their usual paths and may write anywhere; writes vanish with the test host
# (results go to the writable shares mounted below).
mkdir -p /lower /upper /host
mount -t 9p -o "ro,$NINEP,cache=loose" hostroot /lower || fail "cannot mount the host root (9p)"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
root_mode=overlay
if ! mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /host 2>/dev/null; then
  say "overlay failed; the host root is read-only (TMPDIR and HOME go to /run)"
  mount --bind /lower /host
  root_mode=ro
fi
for d in proc sys dev; do mount --bind "/$d" "/host/$d"; done
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts 2>/dev/null || true
mount -t tmpfs -o mode=1777 shm /host/dev/shm
mount -t tmpfs -o mode=0755 run /host/run
mkdir -m 1777 /host/run/tmp

share_path=$(cat /share/share_path)
mkdir -p "/host$share_path" 2>/dev/null || true
mount --bind /share "/host$share_path" || fail "cannot bind the share at $share_path"
if [ -f /share/mounts ]; then
  while read -r tag path; do
    [ -n "$tag" ] || continue
    mkdir -p "/host$path" 2>/dev/null || true
    mount -t 9p -o "$NINEP" "$tag" "/host$path" || fail "cannot mount writable share $path"
  done < /share/mounts
fi

# For a guest that triple-faults: KVM on AMD resets the vCPU when it intercepts the shutdown,
# so the VMM can no longer say where the guest was; KVM's kvm_exit tracepoint records the
# guest's RIP before that. With kvm_trace=1 on the test host's command line
# (ACCORDION_TEST_HOST_KVM_TRACE=1), keep only shutdown exits (SVM_EXIT_SHUTDOWN, 0x7f) and
# the exceptions KVM injects; the tests print the trace when a guest dies of a triple fault.
tracing=/sys/kernel/tracing
if grep -qw kvm_trace=1 /proc/cmdline \
  && mount -t tracefs nodev "$tracing" 2>/dev/null && [ -d "$tracing/events/kvm/kvm_exit" ]; then
  echo 'exit_reason == 127' > "$tracing/events/kvm/kvm_exit/filter" \
    && echo 1 > "$tracing/events/kvm/kvm_exit/enable" \
    && echo 1 > "$tracing/events/kvm/kvm_inj_exception/enable" \
    || say "could not enable KVM's shutdown trace"
fi

say "running the command after $(uptime_s) s"
start=$(uptime_s)
env -i ACCORDION_TEST_HOST_ROOT="$root_mode" \
  /bin/busybox chroot /host /bin/sh "$share_path/run.sh" < /dev/null
rc=$?
say "command exited with status $rc after $(echo "$(uptime_s) $start" | awk '{ printf "%.1f", $1 - $2 }') s"
finish "rc=$rc"
