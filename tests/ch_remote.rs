//! Cloud Hypervisor's own `ch-remote`, unmodified, drives Accordion through every command
//! the two share, against a booted Linux guest: ping, create, info, boot, counters, pause,
//! resume, resize (up and down) and resize-zone, reboot, power-button, shutdown, delete,
//! shutdown-vmm, snapshot and restore, send-migration and receive-migration, with the exit
//! status and the messages a Cloud Hypervisor user sees.
//!
//! `ch-remote` comes from `ACCORDION_CH_REMOTE` (scripts/run-tests.sh and .ci/run set it
//! where a prebuilt one is available); without it these tests say they were skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::api::{socket_in, spawn_with_api};
use common::{field, guest, TempDir, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

const MIB: u64 = 1 << 20;
/// Plugging is quick; unplugging makes the guest migrate pages (about 1.5 s per 128 MiB
/// in the nested test host).
const RESIZE_TIMEOUT: Duration = Duration::from_secs(240);

/// The `ch-remote` binary, or `None` (after saying so) when there is none.
fn ch_remote() -> Option<PathBuf> {
    match std::env::var_os("ACCORDION_CH_REMOTE").map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        Some(path) => panic!("ACCORDION_CH_REMOTE={} is not a file", path.display()),
        None => {
            eprintln!(
                "SKIPPED: ACCORDION_CH_REMOTE is not set (Cloud Hypervisor's ch-remote is \
                 not available here)"
            );
            None
        }
    }
}

struct ChRemote {
    binary: PathBuf,
    socket: PathBuf,
}

impl ChRemote {
    /// Runs `ch-remote ARGS` and shows what a user would see (the test log keeps a
    /// transcript of every command).
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.binary)
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("cannot run ch-remote");
        eprintln!(
            "$ ch-remote {}\n{}{}(exit status {})",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status
                .code()
                .map_or("none".to_string(), |c| c.to_string())
        );
        out
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ch-remote {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command whose answer is JSON.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    fn state(&self) -> String {
        self.json(&["info"])["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs a command that must fail as Cloud Hypervisor's refusals do: exit status 1 and
    /// the server's error chain printed line by line. Returns standard error.
    fn refused(&self, args: &[&str], status_name: &str, message: &str) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "ch-remote {args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("Server responded with {status_name}")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("Can't get remote's error messages"),
            "the error body did not parse: {stderr}"
        );
        stderr
    }
}

/// An API-only `accordion` (serial output and the guest's console protocol on its stdout
/// once a VM with `serial: Tty` boots) and a `ch-remote` pointed at it.
fn api_only(tag: &str, dir: &TempDir, binary: PathBuf) -> (Vmm, ChRemote) {
    let vmm = spawn_with_api(tag, dir, &[]);
    let socket = socket_in(&dir.0);
    (vmm, ChRemote { binary, socket })
}

/// Writes the test guest's `vm.create` body, as a Cloud Hypervisor user writes it, with
/// `memory` as given.
fn vm_json(dir: &TempDir, memory: serde_json::Value) -> PathBuf {
    let g = guest();
    let config = serde_json::json!({
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": memory,
        "payload": {"kernel": g.vmlinux, "initramfs": g.initramfs, "cmdline": g.cmdline},
        "serial": {"mode": "Tty"},
        "console": {"mode": "Off"},
        "iommu": false,
        "watchdog": false,
        "pvpanic": false,
    });
    let path = dir.path("vm.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn memtotal_at_ready(vmm: &mut Vmm) -> u64 {
    let ready = vmm.wait_for(READY, BOOT_TIMEOUT);
    field(&ready, "memtotal_kb").expect("memtotal_kb")
}

fn wait_memtotal(vmm: &mut Vmm, kb: u64) {
    vmm.wait_for(&format!("MEMTOTAL {kb} kB"), RESIZE_TIMEOUT);
}

fn plugged(ch: &ChRemote) -> u64 {
    ch.json(&["info"])["memory"]["devices"][0]["plugged_size"]
        .as_u64()
        .expect("plugged_size")
}

fn size_arg(bytes: u64) -> String {
    format!("{}M", bytes / MIB)
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn ch_remote_drives_a_guest_through_its_life() {
    let Some(binary) = ch_remote() else { return };
    let dir = TempDir::new("ch-remote-life");
    let (mut vmm, ch) = api_only("ch-remote-life", &dir, binary);
    vmm.explain_failure(|vmm| {
        let ping = ch.json(&["ping"]);
        assert_eq!(ping["pid"].as_u64(), Some(u64::from(vmm.pid())), "{ping}");
        ch.refused(&["info"], "NotFound", "no VM has been created");

        let boot_ram = 512 * MIB;
        let config = vm_json(
            &dir,
            serde_json::json!({
                "size": boot_ram,
                "hotplug_method": "VirtioMem",
                "hotplug_size": 1024 * MIB,
                "mergeable": false,
                "shared": false,
            }),
        );
        ch.ok(&["create", config.to_str().unwrap()]);
        assert_eq!(ch.state(), "Created");
        ch.ok(&["boot"]);
        let base_kb = memtotal_at_ready(vmm);
        let info = ch.json(&["info"]);
        assert_eq!(info["state"], "Running");
        assert_eq!(info["config"]["cpus"]["max_vcpus"], 1);
        assert!(ch.json(&["counters"])["serial"]["tx_bytes"].as_u64() > Some(0));
        ch.refused(&["boot"], "Unknown", "already booted");

        ch.ok(&["pause"]);
        assert_eq!(ch.state(), "Paused");
        ch.ok(&["resume"]);
        assert_eq!(ch.state(), "Running");

        // +256 MiB through virtio-mem, then back.
        ch.ok(&["resize", "--memory", &size_arg(boot_ram + 256 * MIB)]);
        wait_memtotal(vmm, base_kb + 256 * 1024);
        assert_eq!(plugged(&ch), 256 * MIB);
        ch.ok(&["resize", "--memory", &size_arg(boot_ram)]);
        wait_memtotal(vmm, base_kb);
        assert_eq!(plugged(&ch), 0);
        ch.refused(
            &["resize", "--memory", &size_arg(boot_ram + 4096 * MIB)],
            "BadRequest",
            "",
        );

        ch.ok(&["reboot"]);
        assert_eq!(memtotal_at_ready(vmm), base_kb);
        assert_eq!(ch.state(), "Running");

        // The guest powers itself off: Accordion exits 0, as Cloud Hypervisor does.
        ch.ok(&["power-button"]);
        let status = vmm.wait_exit(EXIT_TIMEOUT);
        assert!(status.success(), "after the power button: {status}");
    });
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn ch_remote_resizes_a_zone_and_takes_the_vm_down() {
    let Some(binary) = ch_remote() else { return };
    let dir = TempDir::new("ch-remote-zone");
    let (mut vmm, ch) = api_only("ch-remote-zone", &dir, binary);
    vmm.explain_failure(|vmm| {
        let config = vm_json(
            &dir,
            serde_json::json!({
                "size": 0,
                "hotplug_method": "VirtioMem",
                "zones": [{"id": "mem0", "size": 512 * MIB, "hotplug_size": 512 * MIB}],
            }),
        );
        ch.ok(&["create", config.to_str().unwrap()]);
        ch.ok(&["boot"]);
        let base_kb = memtotal_at_ready(vmm);
        ch.ok(&["resize-zone", "--id", "mem0", "--size", "768M"]);
        wait_memtotal(vmm, base_kb + 256 * 1024);
        ch.refused(
            &["resize-zone", "--id", "nope", "--size", "768M"],
            "BadRequest",
            "no memory zone with id nope",
        );

        ch.ok(&["shutdown"]);
        assert_eq!(ch.state(), "Created");
        ch.refused(&["shutdown"], "Unknown", "not running");
        ch.ok(&["delete"]);
        ch.refused(&["info"], "NotFound", "no VM has been created");
        ch.ok(&["shutdown-vmm"]);
        let status = vmm.wait_exit(EXIT_TIMEOUT);
        assert!(status.success(), "after shutdown-vmm: {status}");
        assert!(!Path::new(&ch.socket).exists());
    });
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn ch_remote_snapshots_and_restores() {
    let Some(binary) = ch_remote() else { return };
    let dir = TempDir::new("ch-remote-snapshot");
    let snap = dir.path("snap");
    let url = format!("file://{}", snap.display());
    let (mut vmm, ch) = api_only("ch-remote-snapshot", &dir, binary.clone());
    let base_kb = vmm.explain_failure(|vmm| {
        let config = vm_json(
            &dir,
            serde_json::json!({
                "size": 512 * MIB,
                "hotplug_method": "VirtioMem",
                "hotplug_size": 1024 * MIB,
            }),
        );
        ch.ok(&["create", config.to_str().unwrap()]);
        ch.ok(&["boot"]);
        let base_kb = memtotal_at_ready(vmm);
        ch.ok(&["resize", "--memory", &size_arg(768 * MIB)]);
        wait_memtotal(vmm, base_kb + 256 * 1024);
        ch.refused(&["snapshot", &url], "Unknown", "paused");
        ch.ok(&["pause"]);
        ch.ok(&["snapshot", &url]);
        ch.ok(&["shutdown-vmm"]);
        assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
        base_kb
    });
    assert!(snap.join("state.json").exists());

    let (mut restored, ch) = api_only("ch-remote-restored", &dir, binary);
    restored.explain_failure(|vmm| {
        ch.refused(
            &["restore", "source_url=file:///nonexistent/snap"],
            "BadRequest",
            "cannot read",
        );
        ch.ok(&["restore", &format!("source_url={url}")]);
        assert_eq!(ch.state(), "Paused");
        ch.ok(&["resume"]);
        assert_eq!(ch.state(), "Running");
        assert_eq!(plugged(&ch), 256 * MIB);
        let done = vmm.run_command("grep MemTotal /proc/meminfo");
        assert_eq!(field(&done, "rc"), Some(0), "{done}");
        ch.ok(&["resize", "--memory", &size_arg(512 * MIB)]);
        wait_memtotal(vmm, base_kb);
        ch.ok(&["shutdown-vmm"]);
        assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
    });
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn ch_remote_migrates_a_guest() {
    let Some(binary) = ch_remote() else { return };
    let dir = TempDir::new("ch-remote-migration-source");
    let to = TempDir::new("ch-remote-migration-destination");
    let listen = to.path("migration.sock");
    let (mut source, ch) = api_only("ch-remote-migration-source", &dir, binary.clone());
    let (mut destination, ch_to) = api_only("ch-remote-migration-destination", &to, binary);
    let base_kb = source.explain_failure(|vmm| {
        let config = vm_json(
            &dir,
            serde_json::json!({
                "size": 256 * MIB,
                "hotplug_method": "VirtioMem",
                "hotplug_size": 1024 * MIB,
            }),
        );
        ch.ok(&["create", config.to_str().unwrap()]);
        ch.ok(&["boot"]);
        let base_kb = memtotal_at_ready(vmm);
        ch.ok(&["resize", "--memory", &size_arg(512 * MIB)]);
        wait_memtotal(vmm, base_kb + 256 * 1024);
        base_kb
    });
    // ch-remote receive-migration returns when the migration has ended.
    let receiver = {
        let binary = ch_to.binary.clone();
        let socket = ch_to.socket.clone();
        let arg = format!("receiver_url=unix:{}", listen.display());
        std::thread::spawn(move || {
            Command::new(binary)
                .arg("--api-socket")
                .arg(socket)
                .args(["receive-migration", &arg])
                .output()
                .expect("cannot run ch-remote")
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !listen.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the destination does not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Unsupported options are refused by name, and nothing starts.
    ch.refused(
        &[
            "send-migration",
            "destination_url=tcp:127.0.0.1:9,connections=2",
        ],
        "BadRequest",
        "connections",
    );
    ch.ok(&[
        "send-migration",
        &format!("destination_url=unix:{}", listen.display()),
    ]);
    assert!(source.wait_exit(Duration::from_secs(300)).success());
    let received = receiver.join().expect("the receiving ch-remote");
    assert!(
        received.status.success(),
        "ch-remote receive-migration: {}",
        String::from_utf8_lossy(&received.stderr)
    );
    destination.explain_failure(|vmm| {
        assert_eq!(ch_to.state(), "Running");
        assert_eq!(plugged(&ch_to), 256 * MIB);
        let done = vmm.run_command("grep MemTotal /proc/meminfo");
        assert_eq!(field(&done, "rc"), Some(0), "{done}");
        ch_to.ok(&["resize", "--memory", &size_arg(256 * MIB)]);
        wait_memtotal(vmm, base_kb);
        ch_to.ok(&["shutdown-vmm"]);
        assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
    });
}
