//! What the VMM holds stays flat however often it builds a VM: file descriptors, threads
//! and memory are counted in /proc before and after 1,000 `vm.boot`/`vm.shutdown` cycles
//! (with failed boots, reboots, pauses and a serial port on the terminal among them) and
//! across hundreds of guest-initiated reboots. Tiny kernels that halt or reset stand in for
//! the guest, so these run on any KVM, the host's KVM-PVM included.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use api_client::{ApiClient, Error};
use common::api::{socket_in, spawn_with_api};
use common::process::{resources, Resources};
use common::{tiny_elf_kernel, TempDir};

/// hlt; jmp back to the hlt.
const HALT: [u8; 3] = [0xf4, 0xeb, 0xfd];
/// mov al, 0xfe; out 0x64, al (the i8042 reset line); then halt as above.
const RESET: [u8; 7] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];

/// Guest memory of the test VMs, MiB.
const RAM_MIB: u64 = 64;

fn status_of(result: Result<Option<String>, Error>) -> u16 {
    match result {
        Ok(Some(_)) => 200,
        Ok(None) => 204,
        Err(Error::Server { status, .. }) => status,
        Err(e) => panic!("no answer from the API: {e}"),
    }
}

fn put(client: &mut ApiClient, endpoint: &str, body: Option<&str>) -> u16 {
    status_of(client.command("PUT", endpoint, body))
}

fn create(client: &mut ApiClient, kernel: &Path, serial: &str) {
    let config = serde_json::json!({
        "payload": {"kernel": kernel},
        "memory": {"size": RAM_MIB << 20},
        "serial": {"mode": serial},
    });
    assert_eq!(put(client, "vm.create", Some(&config.to_string())), 204);
}

/// Asserts that `after` holds no more than `before`, allowing memory one VM's worth of
/// noise (a leaked VM would add its guest memory every cycle).
fn assert_flat(before: Resources, after: Resources, what: &str) {
    eprintln!("{what}: {before:?} -> {after:?}");
    assert_eq!(
        before.fds, after.fds,
        "{what}: descriptors {before:?} -> {after:?}"
    );
    assert_eq!(
        before.threads, after.threads,
        "{what}: threads {before:?} -> {after:?}"
    );
    let slack_kb = RAM_MIB * 1024;
    assert!(
        after.vm_size_kb <= before.vm_size_kb + slack_kb,
        "{what}: mapped memory {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kb <= before.rss_kb + slack_kb,
        "{what}: resident memory {before:?} -> {after:?}"
    );
}

#[test]
fn a_thousand_boot_and_shutdown_cycles_leave_nothing_behind() {
    let dir = TempDir::new("resources-cycles");
    let kernel = dir.path("kernel");
    let moved = dir.path("kernel.away");
    std::fs::write(&kernel, tiny_elf_kernel(&HALT, 0x1000, true)).unwrap();
    let socket = socket_in(&dir.0);
    let mut vmm = spawn_with_api("resources-cycles", &dir, &[]);
    let pid = vmm.pid();
    vmm.explain_failure(|_| {
        let mut client = ApiClient::connect(&socket).expect("connecting");
        create(&mut client, &kernel, "Off");
        // Warm up: the first VM sets up what lives as long as the process.
        for _ in 0..3 {
            assert_eq!(put(&mut client, "vm.boot", None), 204);
            assert_eq!(put(&mut client, "vm.shutdown", None), 204);
        }
        let before = resources(pid);
        let started = Instant::now();
        for cycle in 0..1000 {
            assert_eq!(put(&mut client, "vm.boot", None), 204, "cycle {cycle}");
            if cycle % 100 == 50 {
                assert_eq!(put(&mut client, "vm.pause", None), 204);
                assert_eq!(put(&mut client, "vm.resume", None), 204);
                assert_eq!(put(&mut client, "vm.reboot", None), 204);
            }
            assert_eq!(put(&mut client, "vm.shutdown", None), 204, "cycle {cycle}");
            if cycle % 100 == 99 {
                // A boot that fails after the VM is built: the kernel has gone.
                std::fs::rename(&kernel, &moved).unwrap();
                let status = put(&mut client, "vm.boot", None);
                assert!(
                    (400..500).contains(&status),
                    "a boot without a kernel: {status}"
                );
                std::fs::rename(&moved, &kernel).unwrap();
            }
        }
        eprintln!("1000 cycles in {:?}", started.elapsed());
        assert_flat(before, resources(pid), "1000 boot/shutdown cycles");

        // The serial port on the terminal holds a descriptor of its own per VM.
        assert_eq!(put(&mut client, "vm.delete", None), 204);
        create(&mut client, &kernel, "Tty");
        assert_eq!(put(&mut client, "vm.boot", None), 204);
        assert_eq!(put(&mut client, "vm.shutdown", None), 204);
        let before = resources(pid);
        for _ in 0..100 {
            assert_eq!(put(&mut client, "vm.boot", None), 204);
            assert_eq!(put(&mut client, "vm.shutdown", None), 204);
        }
        assert_flat(
            before,
            resources(pid),
            "100 cycles with the serial port on stdout",
        );
    });
}

/// The number of `rebooted` events in the event monitor's file.
fn reboots(events: &Path) -> usize {
    std::fs::read_to_string(events)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"rebooted\""))
        .count()
}

/// The VMM's resources while the VM is paused between two guest reboots (a reboot being
/// handled at the moment of counting would show the old VM and the new one at once).
fn settled_resources(client: &mut ApiClient, pid: u32, events: &Path) -> Resources {
    loop {
        assert_eq!(put(client, "vm.pause", None), 204);
        let before = reboots(events);
        std::thread::sleep(Duration::from_millis(200));
        let counted = resources(pid);
        let info = client.command("GET", "vm.info", None).expect("vm.info");
        let paused = info.is_some_and(|body| body.contains("\"Paused\""));
        let settled = paused && reboots(events) == before;
        // A reboot that was already on its way replaces the paused VM with a running one.
        if paused {
            assert_eq!(put(client, "vm.resume", None), 204);
        }
        if settled {
            return counted;
        }
    }
}

fn wait_for_reboots(events: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while reboots(events) < count {
        assert!(
            Instant::now() < deadline,
            "only {} guest reboots in 10 minutes",
            reboots(events)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn guest_reboots_leave_nothing_behind() {
    let dir = TempDir::new("resources-reboots");
    let kernel = dir.path("kernel");
    std::fs::write(&kernel, tiny_elf_kernel(&RESET, 0x1000, true)).unwrap();
    let socket = socket_in(&dir.0);
    let events = dir.path("events");
    let mut vmm = spawn_with_api(
        "resources-reboots",
        &dir,
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            &format!("size={RAM_MIB}M"),
            "--serial",
            "off",
            "--event-monitor",
            &format!("path={}", events.display()),
        ],
    );
    let pid = vmm.pid();
    vmm.explain_failure(|_| {
        let mut client = ApiClient::connect(&socket).expect("connecting");
        wait_for_reboots(&events, 20);
        let before = settled_resources(&mut client, pid, &events);
        let from = reboots(&events);
        wait_for_reboots(&events, from + 300);
        let after = settled_resources(&mut client, pid, &events);
        assert_flat(
            before,
            after,
            &format!("{} guest reboots", reboots(&events) - from),
        );
    });
}
