//! `--seccomp` on the real binary, on any KVM (a tiny kernel that halts, so the host's
//! KVM-PVM will do): with each mode, every thread but virtio-mem's (the vmm, api,
//! event-monitor, vcpu and signal_handler threads) does its job under its filter through
//! API use, pause and resume, and a SIGTERM ends the VMM cleanly. The filters' refusals are
//! tested in vmm/tests/seccomp.rs; the virtio-mem thread runs in the guest tests.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::api::{remote_json, remote_ok, socket_in, spawn_with_api};
use common::process::{thread_seccomp_modes, vcpus_parked, wait_vcpus_parked};
use common::{halting_kernel, TempDir, Vmm, EXIT_TIMEOUT};

fn halting_vmm_with(tag: &str, dir: &TempDir, seccomp: &str) -> Vmm {
    let kernel = halting_kernel(dir);
    spawn_with_api(
        tag,
        dir,
        &[
            "--kernel",
            &kernel,
            "--memory",
            "size=64M",
            "--serial",
            "off",
            "--event-monitor",
            &format!("path={}", dir.path("events").display()),
            "--seccomp",
            seccomp,
        ],
    )
}

/// The threads of a booted VMM with one vCPU and an event monitor.
const THREADS: [&str; 5] = [
    "accordion",
    "api",
    "event-monitor",
    "signal_handler",
    "vcpu0",
];

fn threads_work_and_sigterm_shuts_down(seccomp: &str) {
    let tag = format!("seccomp-{seccomp}");
    let dir = TempDir::new(&tag);
    let socket = socket_in(&dir.0);
    let mut vmm = halting_vmm_with(&tag, &dir, seccomp);

    assert!(remote_json(&socket, &["ping"])["pid"].is_u64());
    assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
    // Every thread runs under a filter (mode 2) unless seccomp is off. (A new thread names
    // itself once it runs: wait until all five have their names.)
    let mode = if seccomp == "false" { 0 } else { 2 };
    let expected: Vec<(String, u32)> = THREADS.iter().map(|t| (t.to_string(), mode)).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut threads = thread_seccomp_modes(vmm.pid());
    while threads.iter().map(|(n, _)| n.as_str()).ne(THREADS) {
        assert!(std::time::Instant::now() < deadline, "threads: {threads:?}");
        std::thread::sleep(std::time::Duration::from_millis(1));
        threads = thread_seccomp_modes(vmm.pid());
    }
    assert_eq!(threads, expected);
    remote_ok(&socket, &["pause"]);
    assert!(wait_vcpus_parked(vmm.pid()), "the vCPU was not parked");
    assert_eq!(remote_json(&socket, &["info"])["state"], "Paused");
    remote_ok(&socket, &["resume"]);
    // Back in KVM_RUN (halted there, in the ioctl).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while vcpus_parked(vmm.pid()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the vCPU stayed parked"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(remote_json(&socket, &["counters"])["serial"].is_object());

    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(vmm.pid() as i32, libc::SIGTERM) }, 0);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    let stderr = vmm.stderr();
    assert_eq!(
        (status.code(), status.signal()),
        (Some(128 + libc::SIGTERM), None),
        "{stderr}"
    );
    assert!(!stderr.contains("seccomp"), "{stderr}");
    assert!(!socket.exists(), "the API socket was not removed");
    let events = std::fs::read_to_string(dir.path("events")).unwrap();
    assert!(
        events
            .lines()
            .last()
            .is_some_and(|l| l.contains(r#""event":"shutdown""#)),
        "{events}"
    );
}

#[test]
fn threads_work_and_sigterm_shuts_down_with_seccomp_true() {
    threads_work_and_sigterm_shuts_down("true");
}

#[test]
fn threads_work_and_sigterm_shuts_down_with_seccomp_log() {
    threads_work_and_sigterm_shuts_down("log");
}

#[test]
fn threads_work_and_sigterm_shuts_down_with_seccomp_false() {
    threads_work_and_sigterm_shuts_down("false");
}
