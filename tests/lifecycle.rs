//! The VMM's lifecycle on any KVM (a tiny kernel that halts its vCPU): every lifecycle event
//! in order with its shape, `vm.delete` of a running VM, SIGINT, and an API socket handed
//! over as a descriptor.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::api::{http, remote_json, remote_ok, socket_in, spawn_with_api, wait_for_socket};
use common::process::wait_vcpus_parked;
use common::{halting_kernel, TempDir, EXIT_TIMEOUT};

fn create_body(kernel: &str) -> String {
    serde_json::json!({
        "payload": {"kernel": kernel},
        "memory": {"size": 64u64 << 20},
        "serial": {"mode": "Off"},
    })
    .to_string()
}

fn put(socket: &Path, path: &str, body: Option<&str>) -> u16 {
    let a = http(
        socket,
        "PUT",
        &format!("/api/v1/{path}"),
        body.map(str::as_bytes),
    );
    assert!(a.status < 300, "{path}: {a:?}");
    a.status
}

/// The threads of process `pid` named `vcpu*`.
fn vcpu_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|n| n.starts_with("vcpu"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Waits (at most 10 s) until process `pid` has `n` threads named `vcpu*`: a new thread
/// names itself once it runs, a moment after it was started.
fn wait_vcpu_threads(pid: u32, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while vcpu_threads(pid) != n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} vCPU threads, not {n}",
            vcpu_threads(pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The events file, parsed: `(source, event)` in order, after checking each line's shape
/// (timestamps from the VMM's start that never go back, properties null but for `failed`).
fn events(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("events file");
    let mut last = Duration::ZERO;
    text.lines()
        .map(|line| {
            let e: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
            let at = Duration::new(
                e["timestamp"]["secs"].as_u64().expect(line),
                e["timestamp"]["nanos"].as_u64().expect(line) as u32,
            );
            assert!(at >= last, "time went back at {line}");
            last = at;
            let (source, event) = (
                e["source"].as_str().expect(line).to_string(),
                e["event"].as_str().expect(line).to_string(),
            );
            if event != "failed" {
                assert!(e["properties"].is_null(), "{line}");
            }
            (source, event)
        })
        .collect()
}

#[test]
fn every_lifecycle_event_in_order_and_delete_stops_a_running_vm() {
    let dir = TempDir::new("lifecycle");
    let socket = socket_in(&dir.0);
    let kernel = halting_kernel(&dir);
    let events_file = dir.path("events");
    let monitor = format!("path={}", events_file.display());
    let mut vmm = spawn_with_api("lifecycle", &dir, &["--event-monitor", &monitor]);
    let pid = vmm.pid();

    put(&socket, "vm.create", Some(&create_body(&kernel)));
    put(&socket, "vm.boot", None);
    wait_vcpu_threads(pid, 1);
    put(&socket, "vm.pause", None);
    assert!(wait_vcpus_parked(pid));
    put(&socket, "vm.resume", None);
    put(&socket, "vm.reboot", None);
    assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
    put(&socket, "vm.shutdown", None);
    // Shut down, the vCPU threads end.
    wait_vcpu_threads(pid, 0);
    put(&socket, "vm.boot", None);
    // Deleting a running VM stops it first: its vCPU threads end, and it is gone.
    put(&socket, "vm.delete", None);
    wait_vcpu_threads(pid, 0);
    assert_eq!(http(&socket, "GET", "/api/v1/vm.info", None).status, 404);
    // A new VM can be created and booted after it.
    put(&socket, "vm.create", Some(&create_body(&kernel)));
    put(&socket, "vm.boot", None);
    remote_ok(&socket, &["shutdown-vmm"]);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", vmm.stderr());

    let got = events(&events_file);
    let expected: Vec<(String, String)> = [
        ("vmm", "starting"),
        ("vm", "creating"),
        ("vm", "created"),
        ("vm", "booting"),
        ("vm", "booted"),
        ("vm", "pausing"),
        ("vm", "paused"),
        ("vm", "resuming"),
        ("vm", "resumed"),
        ("vm", "rebooting"),
        ("vm", "rebooted"),
        ("vm", "shutdown"),
        ("vm", "booting"),
        ("vm", "booted"),
        ("vm", "shutdown"),
        ("vm", "deleted"),
        ("vm", "creating"),
        ("vm", "created"),
        ("vm", "booting"),
        ("vm", "booted"),
        ("vm", "shutdown"),
        ("vmm", "shutdown"),
    ]
    .iter()
    .map(|(s, e)| (s.to_string(), e.to_string()))
    .collect();
    assert_eq!(got, expected);
}

#[test]
fn sigint_shuts_down_like_vmm_shutdown_with_status_130() {
    let dir = TempDir::new("sigint");
    let socket = socket_in(&dir.0);
    let kernel = halting_kernel(&dir);
    let events_file = dir.path("events");
    let monitor = format!("path={}", events_file.display());
    let mut vmm = spawn_with_api(
        "sigint",
        &dir,
        &["--event-monitor", &monitor, "--kernel", &kernel],
    );
    assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(vmm.pid() as i32, libc::SIGINT) }, 0);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert_eq!(
        (status.code(), status.signal()),
        (Some(130), None),
        "{}",
        vmm.stderr()
    );
    assert!(!socket.exists(), "the API socket was not removed");
    let got = events(&events_file);
    assert_eq!(
        got[got.len() - 2..],
        [
            ("vm".to_string(), "shutdown".to_string()),
            ("vmm".to_string(), "shutdown".to_string())
        ],
        "{got:?}"
    );
}

#[test]
fn api_socket_handed_over_as_a_listening_descriptor() {
    let dir = TempDir::new("api-fd");
    let socket = socket_in(&dir.0);
    let kernel = halting_kernel(&dir);
    let listener = UnixListener::bind(&socket).unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new(env!("CARGO_BIN_EXE_accordion"));
    command
        .args([
            "--api-socket",
            "fd=3",
            "--kernel",
            &kernel,
            "--serial",
            "off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only dup2 and fcntl, which are async-signal-safe; fd 3
    // is then the listener without close-on-exec (dup2 onto itself would keep the flag).
    unsafe {
        command.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(listener);
    wait_for_socket(&socket, Duration::from_secs(30));
    let ping = remote_json(&socket, &["ping"]);
    assert_eq!(ping["pid"], child.id(), "{ping}");
    assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
    remote_ok(&socket, &["shutdown-vmm"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_guest_reset_is_a_rebooting_rebooted_pair() {
    // mov al, 0xfe; out 0x64, al (the i8042 reset line); then halt. Each boot resets again.
    const RESET: [u8; 7] = [0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];
    let dir = TempDir::new("lifecycle-reset");
    let socket = socket_in(&dir.0);
    let kernel = dir.path("kernel");
    std::fs::write(&kernel, common::tiny_elf_kernel(&RESET, 0x1000, true)).unwrap();
    let events_file = dir.path("events");
    let monitor = format!("path={}", events_file.display());
    let mut vmm = spawn_with_api(
        "lifecycle-reset",
        &dir,
        &[
            "--event-monitor",
            &monitor,
            "--kernel",
            kernel.to_str().unwrap(),
            "--serial",
            "off",
        ],
    );
    // Wait for three guest-initiated reboots.
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    // (Counted in the raw text: the monitor may be in the middle of writing a line.)
    let rebooted = || {
        std::fs::read_to_string(&events_file)
            .unwrap_or_default()
            .matches(r#""event":"rebooted""#)
            .count()
    };
    while rebooted() < 3 {
        assert!(std::time::Instant::now() < deadline, "no three reboots");
        std::thread::sleep(Duration::from_millis(10));
    }
    remote_ok(&socket, &["shutdown-vmm"]);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", vmm.stderr());
    let got: Vec<String> = events(&events_file)
        .into_iter()
        .map(|(s, e)| format!("{s}:{e}"))
        .collect();
    // The boot, then rebooting/rebooted pairs (never split: the VMM thread rebuilds the VM
    // before it takes the next API request), then the end.
    assert_eq!(
        got[..5],
        [
            "vmm:starting",
            "vm:creating",
            "vm:created",
            "vm:booting",
            "vm:booted"
        ],
        "{got:?}"
    );
    let middle = &got[5..got.len() - 2];
    assert!(middle.len() >= 6, "{got:?}");
    for pair in middle.chunks(2) {
        assert_eq!(pair, ["vm:rebooting", "vm:rebooted"], "{got:?}");
    }
    assert_eq!(
        got[got.len() - 2..],
        ["vm:shutdown", "vmm:shutdown"],
        "{got:?}"
    );
}
