//! A guest that ignores the virtio-mem protocol and touches device memory it has not
//! plugged: in slots with no plugged block (not in KVM) and, after plugging one block by the
//! protocol, in the slot that block mapped. A tiny hand-made kernel (32-bit code that turns on PAE paging to reach the
//! region at 4 GiB) writes a pattern at one offset of the region and reads it back, then
//! prints `P` (the pattern stayed), `Z` (zeros: the write went nowhere) or `X` on the
//! serial port. Without a virtio_mem driver nothing is ever plugged (`hotplugged_size` is
//! only what the device asks a driver for), so no slot of the region is in KVM. What a user
//! checks: the guest never reads back what it wrote to unplugged memory, the host does not
//! back it, `vm.counters` and the event say where, and the VMM keeps serving its API. The probe turns on PAE paging, which KVM-PVM
//! does not run: those tests are `#[ignore]`d and run in the nested test host.

mod common;

use std::path::Path;
use std::time::Duration;

use common::api::{memory_device, remote_json, socket_in, spawn_with_api, timed_ping};
use common::{run_to_exit, tiny_elf_kernel, TempDir, Vmm, BOOT_TIMEOUT};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// With 64 MiB of boot RAM the region starts at 4 GiB (tests/resize_api.rs checks it).
const REGION: u64 = 1 << 32;

/// The probe kernel (assembled from the source in the comment below); its last 4 bytes are
/// the offset in the region to probe.
///
/// ```text
///   mov edi, 0x200000; xor eax, eax; mov ecx, 3072; rep stosd     ; page tables at 2 MiB
///   mov [0x200000], 0x201001; mov [0x200008], 0x202001            ; PDPT: PD0, PD1
///   mov [0x201000], 0x83                                          ; 0-2 MiB identity
///   PD1[i] = (4 GiB + i * 2 MiB) | 0x83 for i in 0..512           ; 1 GiB VA -> 4 GiB PA
///   CR4.PAE = 1; CR3 = 0x200000; CR0.PG = 1
///   esi = 0x40000000 + [offset]; [esi] = 0x5a5a5a5a; eax = [esi]
///   out 0x3f8: 'P' if eax == 0x5a5a5a5a, 'Z' if 0, 'X' otherwise; then '\n'; hlt forever
/// ```
const PROBE: [u8; 164] = [
    0xbf, 0x00, 0x00, 0x20, 0x00, 0x31, 0xc0, 0xb9, 0x00, 0x0c, 0x00, 0x00, 0xf3, 0xab, 0xc7, 0x05,
    0x00, 0x00, 0x20, 0x00, 0x01, 0x10, 0x20, 0x00, 0xc7, 0x05, 0x08, 0x00, 0x20, 0x00, 0x01, 0x20,
    0x20, 0x00, 0xc7, 0x05, 0x00, 0x10, 0x20, 0x00, 0x83, 0x00, 0x00, 0x00, 0xbf, 0x00, 0x20, 0x20,
    0x00, 0xb8, 0x83, 0x00, 0x00, 0x00, 0xb9, 0x00, 0x02, 0x00, 0x00, 0x89, 0x07, 0xc7, 0x47, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x20, 0x00, 0x83, 0xc7, 0x08, 0xe2, 0xed, 0x0f, 0x20,
    0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, 0xb8, 0x00, 0x00, 0x20, 0x00, 0x0f, 0x22, 0xd8, 0x0f,
    0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0xbe, 0x00, 0x00, 0x00, 0x40, 0x03,
    0x35, 0xa0, 0x00, 0x10, 0x00, 0xc7, 0x06, 0x5a, 0x5a, 0x5a, 0x5a, 0x8b, 0x06, 0x66, 0xba, 0xf8,
    0x03, 0x3d, 0x5a, 0x5a, 0x5a, 0x5a, 0x75, 0x04, 0xb0, 0x50, 0xeb, 0x0a, 0x85, 0xc0, 0x75, 0x04,
    0xb0, 0x5a, 0xeb, 0x02, 0xb0, 0x58, 0xee, 0xb0, 0x0a, 0xee, 0xf4, 0xeb, 0xfd, 0x8d, 0x76, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

fn probe_kernel(dir: &TempDir, offset: u64) -> String {
    assert!(offset < GIB, "the probe maps the first GiB of the region");
    let mut code = PROBE;
    let at = code.len() - 4;
    code[at..].copy_from_slice(&(offset as u32).to_le_bytes());
    let kernel = dir.path("probe");
    std::fs::write(&kernel, tiny_elf_kernel(&code, 0x1000, true)).unwrap();
    kernel.to_str().unwrap().to_string()
}

/// Boots the probe of `offset` with `memory` (a `--memory` value) and an API socket and an
/// event monitor; returns the VMM and the event file.
fn probe(tag: &str, dir: &TempDir, offset: u64, memory: &str) -> (Vmm, std::path::PathBuf) {
    let kernel = probe_kernel(dir, offset);
    let events = dir.path("events");
    let monitor = format!("path={}", events.display());
    let vmm = spawn_with_api(
        tag,
        dir,
        &[
            "--kernel",
            &kernel,
            "--memory",
            memory,
            "--serial",
            "tty",
            "--event-monitor",
            &monitor,
        ],
    );
    (vmm, events)
}

fn counters(socket: &Path) -> serde_json::Value {
    remote_json(socket, &["counters"])
}

fn events_named(path: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == name)
        .collect()
}

/// The Rss in KiB of the process's mappings of exactly `size` bytes with protection
/// `perms` (`---p`, `rw-p`), if there is one.
fn rss_of_mappings(pid: u32, size: u64, perms: &str) -> Option<u64> {
    let matching: Vec<u64> = common::process::vmas(pid)
        .iter()
        .filter(|v| v.end - v.start == size && v.perms == perms)
        .map(|v| v.field("Rss:"))
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

#[test]
#[ignore = "the probe turns on paging: needs real KVM (KVM-PVM runs no 32-bit paging), run through scripts/run-tests.sh"]
fn an_unmapped_slot_reads_zeros_drops_writes_and_costs_the_host_nothing() {
    let dir = TempDir::new("unplugged-unmapped");
    let socket = socket_in(&dir.0);
    // Asked for 2 MiB, but without a driver nothing is plugged: slot 4 (512 MiB in) is
    // not in KVM, nor is any other.
    let (mut vmm, events) = probe(
        "unplugged-unmapped",
        &dir,
        512 * MIB,
        "size=64M,hotplug_size=1G,hotplugged_size=2M",
    );
    vmm.explain_failure(|vmm| {
        let line = vmm.wait_for("", BOOT_TIMEOUT);
        assert_eq!(
            line, "Z",
            "the guest read back what it wrote to unplugged memory"
        );
        let dev = memory_device(&socket, "default");
        assert_eq!(dev["requested_size"], 2 * MIB);
        assert_eq!(dev["plugged_size"], 0);
        assert_eq!(dev["slot_size"], 128 * MIB, "{dev}");
        assert_eq!(dev["slots"], 8, "{dev}");
        assert_eq!(
            dev["slots_mapped"], 0,
            "no slot holds a plugged block: {dev}"
        );
        assert_eq!(dev["unplugged_inaccessible"], true);
        let c = &counters(&socket)["virtio-mem-default"];
        assert_eq!(c["unplugged_writes"], 1, "{c}");
        assert_eq!(c["unplugged_reads"], 1, "{c}");
        assert_eq!(c["slots_mapped"], 0, "{c}");
        let access = events_named(&events, "unplugged-access");
        assert_eq!(access.len(), 2, "one event per access: {access:?}");
        let gpa = format!("{:#x}", REGION + 512 * MIB);
        for (event, kind) in access.iter().zip(["write", "read"]) {
            assert_eq!(event["source"], "virtio-mem");
            assert_eq!(event["properties"]["id"], "default");
            assert_eq!(event["properties"]["gpa"], gpa.as_str(), "{event}");
            assert_eq!(event["properties"]["access"], kind, "{event}");
            assert_eq!(event["properties"]["vcpu"], "vcpu0", "{event}");
        }
        // The region is PROT_NONE on the host and holds nothing.
        assert_eq!(
            rss_of_mappings(vmm.pid(), GIB, "---p"),
            Some(0),
            "the region must be one PROT_NONE mapping with no pages"
        );
        assert!(vmm.is_running());
        assert!(timed_ping(&socket) < Duration::from_secs(30));
        assert!(
            vmm.stderr().contains("unplugged memory at 0x120000000"),
            "{}",
            vmm.stderr()
        );
    });
}

#[test]
#[ignore = "the probe turns on paging: needs real KVM (KVM-PVM runs no 32-bit paging), run through scripts/run-tests.sh"]
fn with_unplugged_inaccessible_off_the_region_is_mapped_and_readable() {
    let dir = TempDir::new("unplugged-off");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = probe(
        "unplugged-off",
        &dir,
        512 * MIB,
        "size=64M,hotplug_size=1G,unplugged_inaccessible=off",
    );
    vmm.explain_failure(|vmm| {
        assert_eq!(
            vmm.wait_for("", BOOT_TIMEOUT),
            "P",
            "today's behaviour, for old guests"
        );
        let dev = memory_device(&socket, "default");
        assert_eq!(dev["slots_mapped"], 8, "{dev}");
        assert_eq!(dev["unplugged_inaccessible"], false);
    });
}

/// Builds the C probe `tests/probes/NAME.c` into a flat binary with `tests/probes/build.sh`
/// (the host's gcc and ld, which the test host shares).
fn compile_probe(dir: &TempDir, name: &str) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/build.sh");
    let binary = dir.path(&format!("{name}.bin"));
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg(name)
        .arg(&binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "building the probe {name} failed (it needs gcc and ld): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&binary).expect("the probe's binary")
}

#[test]
#[ignore = "the probe turns on paging: needs real KVM (KVM-PVM runs no 32-bit paging), run through scripts/run-tests.sh"]
fn unplugged_blocks_in_a_mapped_slot_stop_the_guest_and_cost_the_host_nothing() {
    let dir = TempDir::new("unplugged-mapped");
    let socket = socket_in(&dir.0);
    let code = compile_probe(&dir, "virtio_mem_plug");
    let kernel = dir.path("plug-probe");
    std::fs::write(&kernel, tiny_elf_kernel(&code, 0x1000, true)).unwrap();
    let events = dir.path("events");
    let monitor = format!("path={}", events.display());
    let mut vmm = spawn_with_api(
        "unplugged-mapped",
        &dir,
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "size=64M,hotplug_size=1G,hotplugged_size=2M",
            "--serial",
            "tty",
            "--event-monitor",
            &monitor,
        ],
    );
    vmm.explain_failure(|vmm| {
        // Plugged by the protocol and readable; 256 MiB in (no plugged block in that slot)
        // zeros, as in the test above.
        assert_eq!(vmm.wait_for("", BOOT_TIMEOUT), "APZ");
        let dev = memory_device(&socket, "default");
        assert_eq!(dev["plugged_size"], 2 * MIB, "{dev}");
        assert_eq!(dev["slots_mapped"], 1, "the plugged block's slot: {dev}");
        let c = &counters(&socket)["virtio-mem-default"];
        assert_eq!(
            (&c["unplugged_writes"], &c["unplugged_reads"]),
            (&1.into(), &1.into())
        );
        // On the host: the plugged block is one read-write mapping holding at most the
        // block, the rest of the region is PROT_NONE with nothing resident.
        let vmas = common::process::vmas(vmm.pid());
        let rest = vmas
            .iter()
            .position(|v| v.end - v.start == GIB - 2 * MIB && v.perms == "---p")
            .expect("the unplugged rest of the region: one PROT_NONE mapping");
        assert_eq!(
            vmas[rest].field("Rss:"),
            0,
            "nothing resident in unplugged memory"
        );
        let block = &vmas[rest - 1];
        assert_eq!(
            (block.end, block.end - block.start, block.perms.as_str()),
            (vmas[rest].start, 2 * MIB, "rw-p"),
            "the plugged block, read-write, just before the rest"
        );
        // The probe's write reached the host's block.
        assert!(
            block.field("Rss:") > 0,
            "nothing resident in the plugged block"
        );

        // Now the second block: unplugged, in the slot that is in KVM. KVM cannot back it,
        // so the guest stops with that reason; the VMM stays up.
        vmm.send("go");
        assert_eq!(vmm.wait_for("", BOOT_TIMEOUT), "T");
        let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
        let info = loop {
            let info = remote_json(&socket, &["info"]);
            if info["state"] == "Failed" || std::time::Instant::now() > deadline {
                break info;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(info["state"], "Failed", "{info}");
        let reason = info["failure"].as_str().unwrap_or_default();
        let gpa = format!("at {:#x}", REGION + 2 * MIB);
        assert!(
            reason.contains("unplugged virtio-mem memory inside a mapped slot"),
            "{reason}"
        );
        // The address when KVM reports it (KVM_EXIT_MEMORY_FAULT); x86 KVM up to at least
        // 6.12 does not for a host page that is PROT_NONE, and the reason says so.
        assert!(
            reason.contains(&gpa) || reason.contains("KVM_RUN: EFAULT, no address"),
            "the address: {reason}"
        );
        let failed = events_named(&events, "failed");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0]["properties"]["reason"], reason);
        assert!(vmm.is_running());
        assert!(timed_ping(&socket) < Duration::from_secs(30));
        // The guest never got a result of its read.
        vmm.drain(Duration::from_secs(1));
        assert_eq!(vmm.serial_lines().last().map(String::as_str), Some("T"));
    });
}

#[test]
fn slot_options_are_checked_with_the_option_named() {
    let dir = TempDir::new("slot-options");
    let kernel = probe_kernel(&dir, 0);
    for (memory, needle) in [
        (
            "size=64M,hotplug_size=1G,slot_size=3M",
            "slot_size=3145728 is not a power of two",
        ),
        (
            "size=64M,hotplug_size=1G,slot_size=1M",
            "smaller than the block size",
        ),
        (
            "size=64M,hotplug_size=1G,unplugged_inaccessible=maybe",
            "expected on or off",
        ),
        // 65536 slots of 2 MiB; 128 GiB fits the 40 address bits of the test host's CPU.
        (
            "size=64M,hotplug_size=128G,slot_size=2M",
            "memslots and KVM supports",
        ),
        // 300 TiB: more than 48-bit physical addresses reach.
        (
            "size=64M,hotplug_size=307200G",
            "physical addresses this host",
        ),
    ] {
        let (status, stderr) = run_to_exit(&["--kernel", &kernel, "--memory", memory]);
        assert!(!status.success(), "{memory}: {stderr}");
        // Each names what to change.
        assert!(
            ["--memory", "slot_size", "hotplug_size"]
                .iter()
                .any(|named| stderr.contains(named)),
            "{memory}: {stderr}"
        );
        assert!(stderr.contains(needle), "{memory}: {stderr}");
    }
}

#[test]
fn a_slot_size_option_sets_the_slots() {
    let dir = TempDir::new("slot-size");
    let socket = socket_in(&dir.0);
    let kernel = common::halting_kernel(&dir);
    let _vmm = spawn_with_api(
        "slot-size",
        &dir,
        &[
            "--kernel",
            &kernel,
            "--serial",
            "off",
            "--memory",
            "size=64M,hotplug_size=1G,slot_size=256M",
        ],
    );
    let dev = memory_device(&socket, "default");
    assert_eq!(dev["slot_size"], 256 * MIB, "{dev}");
    assert_eq!(dev["slots"], 4);
    assert_eq!(dev["slots_mapped"], 0);
}
