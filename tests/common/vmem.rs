//! The test guest with a large virtio-mem region, as the snapshot and migration tests use
//! it: booting it, resizing it, reading facts off its console, reading its event log.

use std::path::Path;
use std::time::{Duration, Instant};

use super::api::{memory_device, remote_ok, socket_in, wait_for_socket, SOCKET_TIMEOUT};
use super::{field, guest, TempDir, Vmm, BOOT_TIMEOUT, READY};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// Boot RAM of [`boot`]'s guest.
pub const BOOT_RAM: u64 = 256 * MIB;
/// Plugging is quick; unplugging makes the guest migrate pages (about 1.5 s per 128 MiB in
/// the nested test host).
pub const RESIZE_TIMEOUT: Duration = Duration::from_secs(240);

/// The test guest with a 64 GiB virtio-mem region, an API socket and an event log
/// (`events.jsonl`) in `dir`.
pub fn boot(tag: &str, dir: &TempDir) -> Vmm {
    let socket = socket_in(&dir.0);
    let api = format!("path={}", socket.display());
    let events = format!("path={}", dir.path("events.jsonl").display());
    let memory = format!(
        "size={}M,hotplug_method=virtio-mem,hotplug_size=64G",
        BOOT_RAM / MIB
    );
    let mut vmm = Vmm::boot_guest(
        tag,
        &guest().vmlinux,
        "",
        &[
            "--api-socket",
            &api,
            "--event-monitor",
            &events,
            "--memory",
            &memory,
        ],
    );
    vmm.wait_for(READY, BOOT_TIMEOUT);
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    vmm
}

/// Waits until the device of zone `default` has `plugged` bytes; returns how long it took.
pub fn wait_plugged(socket: &Path, plugged: u64, timeout: Duration) -> Duration {
    let started = Instant::now();
    while memory_device(socket, "default")["plugged_size"] != plugged {
        assert!(
            started.elapsed() < timeout,
            "the guest did not reach {plugged} plugged bytes within {timeout:?}: {}",
            memory_device(socket, "default")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Asks for `plugged` bytes of virtio-mem memory and waits until the guest has them.
pub fn resize(socket: &Path, plugged: u64) {
    remote_ok(
        socket,
        &[
            "resize",
            "--memory",
            &format!("{}M", (BOOT_RAM + plugged) / MIB),
        ],
    );
    wait_plugged(socket, plugged, RESIZE_TIMEOUT);
}

/// Plugs 1.25 GiB, writes a 320 MiB pattern (larger than boot RAM, so that part of it
/// lives in plugged memory) into a tmpfs of its own at `/p/pattern` (the initramfs root is
/// limited to half the boot RAM), then unplugs down to 1 GiB: the guest moved those pages
/// out. Returns the pattern's checksum and the MemTotal line.
pub fn plug_write_unplug(vmm: &mut Vmm, socket: &Path) -> (String, String) {
    resize(socket, GIB + 256 * MIB);
    let done = vmm.run_command(
        "mkdir -p /p && mount -t tmpfs -o size=2G p /p && \
         dd if=/dev/urandom of=/p/pattern bs=1M count=320",
    );
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
    resize(socket, GIB);
    guest_facts(vmm)
}

/// The output line of a guest command that prints `TAG value...`, as `value...`.
pub fn guest_line(vmm: &mut Vmm, tag: &str, command: &str) -> String {
    let done = vmm.run_command(&format!("echo {tag} $({command})"));
    assert_eq!(field(&done, "rc"), Some(0), "{command}: {done}");
    let prefix = format!("{tag} ");
    vmm.serial_lines()
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {tag} line after {command}"))
        .trim()
        .to_string()
}

/// The checksum of the pattern file `/p/pattern` and the guest's MemTotal line.
pub fn guest_facts(vmm: &mut Vmm) -> (String, String) {
    (
        guest_line(vmm, "PATTERN", "md5sum /p/pattern"),
        guest_line(vmm, "MEMINFO", "grep MemTotal /proc/meminfo"),
    )
}

/// The `vm` events named `event` in the event log `file` in `dir`.
pub fn events(dir: &Path, file: &str, event: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["source"] == "vm" && e["event"] == event)
        .collect()
}
