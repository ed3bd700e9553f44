//! Guest memory asks the host for transparent huge pages, as Cloud Hypervisor and QEMU do,
//! and `--memory thp=off` refuses them: checked in the VMM's own `/proc/PID/smaps`, whose
//! `VmFlags` say `hg` (MADV_HUGEPAGE) or `nh` (MADV_NOHUGEPAGE) for each mapping. Runs on
//! any KVM: the guest is a tiny kernel that halts its vCPU.

mod common;

use common::api::{remote_json, remote_ok, socket_in, spawn_with_api};
use common::{halting_kernel, TempDir, EXIT_TIMEOUT};

const MIB: u64 = 1 << 20;

/// The `VmFlags` of each mapping of exactly `size` bytes in `pid`'s smaps.
fn flags_of_mappings(pid: u32, size: u64) -> Vec<Vec<String>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut found = Vec::new();
    let mut current_size = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            if let (Ok(s), Ok(e)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) {
                current_size = e - s;
            }
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            if current_size == size {
                found.push(flags.split_whitespace().map(str::to_string).collect());
            }
        }
    }
    found
}

fn check(tag: &str, memory: &str, want: &str, not: &str) {
    let dir = TempDir::new(tag);
    let socket = socket_in(&dir.0);
    let kernel = halting_kernel(&dir);
    let mut vmm = spawn_with_api(
        tag,
        &dir,
        &["--kernel", &kernel, "--serial", "off", "--memory", memory],
    );
    assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
    // Boot RAM (72 MiB) and the virtio-mem region (1 GiB; PROT_NONE until plugged).
    for size in [72 * MIB, 1024 * MIB] {
        let mappings = flags_of_mappings(vmm.pid(), size);
        assert_eq!(
            mappings.len(),
            1,
            "{size} bytes: {mappings:?}\n{}",
            std::fs::read_to_string(format!("/proc/{}/maps", vmm.pid())).unwrap_or_default()
        );
        let flags = &mappings[0];
        assert!(flags.iter().any(|f| f == want), "{size} bytes: {flags:?}");
        assert!(!flags.iter().any(|f| f == not), "{size} bytes: {flags:?}");
    }
    remote_ok(&socket, &["shutdown-vmm"]);
    assert_eq!(
        vmm.wait_exit(EXIT_TIMEOUT).code(),
        Some(0),
        "{}",
        vmm.stderr()
    );
}

#[test]
fn guest_memory_asks_for_transparent_huge_pages() {
    check(
        "thp-on",
        "size=72M,hotplug_method=virtio-mem,hotplug_size=1G",
        "hg",
        "nh",
    );
}

#[test]
fn thp_off_refuses_them() {
    check(
        "thp-off",
        "size=72M,hotplug_method=virtio-mem,hotplug_size=1G,thp=off",
        "nh",
        "hg",
    );
}
