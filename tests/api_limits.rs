//! The API at its heaviest legitimate load and down every error path, on an API-only VMM
//! with a tiny kernel that halts (no Linux guest: these run on any KVM, the host's KVM-PVM
//! included): the largest bodies and headers the server takes, the most connections at
//! once with clients racing each other, a large `vm.info` answer read slowly or abandoned,
//! and each refusal the server and the VMM thread give.
//!
//! Under `--seccomp log` the kernel's audit log must show no system call outside any
//! thread's filter (a missing call is found here for every thread at once, not one crash at
//! a time); under the default `--seccomp true` the VMM must come through the same load
//! alive.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::api::{
    assert_matches_schema, http, read_answer, socket_in, spawn_with_api, timed_ping,
};
use common::process::KernelLog;
use common::{tiny_elf_kernel, TempDir, Vmm};

/// The server's limits (micro_http's defaults, documented in docs/api.md).
const MAX_BODY: usize = 256 * 1024;
const MAX_HEAD: usize = 16 * 1024;
const MAX_CONNECTIONS: usize = 256;

fn api_only_vmm(tag: &str, dir: &TempDir, seccomp: &str) -> Vmm {
    let events = format!("path={}", dir.path("events").display());
    spawn_with_api(
        tag,
        dir,
        &["--event-monitor", &events, "--seccomp", seccomp],
    )
}

/// A `vm.create` body of exactly `size` bytes: the tiny kernel, and a command line that
/// fills the rest.
fn create_body(kernel: &Path, size: usize) -> Vec<u8> {
    let frame = serde_json::json!({
        "payload": {"kernel": kernel, "cmdline": ""},
        "memory": {"size": 64u64 << 20},
    })
    .to_string();
    let fill = size
        .checked_sub(frame.len())
        .expect("the body is larger than its frame");
    let body = frame.replace(
        "\"cmdline\":\"\"",
        &format!("\"cmdline\":\"{}\"", "a".repeat(fill)),
    );
    assert_eq!(body.len(), size);
    body.into_bytes()
}

/// One request on a new connection, headers padded with `X-Pad` to `head_size` bytes.
fn ping_with_head_of(socket: &Path, head_size: usize) -> u16 {
    let start = "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = head_size - start.len() - end.len();
    let request = format!("{start}{}{end}", "p".repeat(pad));
    assert_eq!(request.len(), head_size);
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    read_answer(&mut stream).status
}

/// Drives every thread of the VMM through its heaviest legitimate work and every refusal.
fn drive_to_the_limits(socket: &Path, kernel: &Path) {
    let put = |path: &str, body: Option<&[u8]>| {
        http(socket, "PUT", &format!("/api/v1/{path}"), body).status
    };

    // Bodies up to the limit, and one over. The largest comes first, on a fresh process:
    // glibc's malloc maps blocks of 128 KiB and up on their own and grows them with mremap,
    // until the first such block is freed and raises that threshold.
    for size in [MAX_BODY, 200 * 1024, 131_000, 64 * 1024, 4096] {
        let body = create_body(kernel, size);
        assert_eq!(
            put("vm.create", Some(&body)),
            204,
            "a {size}-byte vm.create"
        );
        // The largest answer vm.info gives: the configuration with that command line.
        let info = http(socket, "GET", "/api/v1/vm.info", None);
        assert_eq!(info.status, 200);
        assert!(info.body.len() > size - 200, "{}", info.body.len());
        assert_matches_schema("VmInfo", &info.json());
        // The VMM thread's error path: the command line is too long to boot.
        assert_eq!(
            put("vm.boot", None),
            400,
            "booting a {size}-byte command line"
        );
        assert_eq!(put("vm.delete", None), 204);
    }
    assert_eq!(
        put("vm.create", Some(&create_body(kernel, MAX_BODY + 1))),
        413
    );

    // Headers up to the limit, and over it.
    assert_eq!(ping_with_head_of(socket, MAX_HEAD), 200);
    assert_eq!(ping_with_head_of(socket, MAX_HEAD + 1), 431);

    // A large answer read slowly, and one abandoned half way.
    assert_eq!(put("vm.create", Some(&create_body(kernel, MAX_BODY))), 204);
    let request = b"GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut slow = UnixStream::connect(socket).unwrap();
    slow.write_all(request).unwrap();
    let mut abandoned = UnixStream::connect(socket).unwrap();
    abandoned.write_all(request).unwrap();
    let mut first = [0u8; 1024];
    abandoned.read_exact(&mut first).unwrap();
    drop(abandoned);
    let mut received = 0;
    let mut chunk = [0u8; 16 * 1024];
    while received < MAX_BODY {
        std::thread::sleep(Duration::from_millis(5));
        let n = slow.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        received += n;
    }
    drop(slow);

    // The most connections at once, each with a request, and clients racing each other
    // on the VMM thread (its reply channels contend).
    let mut open: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut stream = UnixStream::connect(socket).unwrap();
            stream
                .write_all(b"GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    for stream in &mut open {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(read_answer(stream).status, 200);
    }
    // One more than the limit: an idle one makes room.
    assert!(timed_ping(socket) < Duration::from_secs(30));
    drop(open);
    let racers: Vec<_> = (0..32)
        .map(|_| {
            let socket = socket.to_path_buf();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    assert_eq!(
                        http(&socket, "GET", "/api/v1/vm.counters", None).status,
                        409
                    );
                    timed_ping(&socket);
                }
            })
        })
        .collect();
    for racer in racers {
        racer.join().expect("a client failed");
    }
    assert_eq!(put("vm.delete", None), 204);

    // Every refusal: unknown path and method, bad bodies, wrong state, framing the server
    // does not take, a malformed request, and a request that never finishes.
    assert_eq!(http(socket, "GET", "/api/v1/vm.nothing", None).status, 404);
    assert_eq!(http(socket, "POST", "/api/v1/vm.boot", None).status, 405);
    assert_eq!(put("vm.create", Some(b"{not json")), 400);
    assert_eq!(put("vm.create", Some(b"")), 400);
    assert_eq!(put("vm.resize", Some(br#"{"desired_ram": "1G"}"#)), 400);
    assert_eq!(put("vm.boot", None), 404);
    assert_eq!(
        put("vm.resize", Some(br#"{"desired_ram": 1073741824}"#)),
        404
    );
    let missing = serde_json::json!({"payload": {"kernel": "/nonexistent/vmlinux"}});
    assert_eq!(put("vm.create", Some(missing.to_string().as_bytes())), 400);
    for raw in [
        &b"PUT /api/v1/vm.boot HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"BREW /api/v1/vmm.ping HTCPCP/1.0\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
        b"GET /api/v1/vmm.ping HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    ] {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.write_all(raw).unwrap();
        let status = read_answer(&mut stream).status;
        assert!((400..=501).contains(&status), "{raw:?}: {status}");
    }
    let mut unfinished = UnixStream::connect(socket).unwrap();
    unfinished
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    unfinished
        .write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
        .unwrap();
    assert_eq!(read_answer(&mut unfinished).status, 408);
    // A connection that never sends a byte is closed after the request timeout.
    let mut silent = UnixStream::connect(socket).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(silent.read(&mut byte).unwrap(), 0);
}

#[test]
fn no_thread_makes_a_call_outside_its_filter_under_the_heaviest_load() {
    let dir = TempDir::new("api-limits-log");
    let kernel = dir.path("kernel");
    std::fs::write(&kernel, tiny_elf_kernel(&[0xf4, 0xeb, 0xfd], 0x1000, true)).unwrap();
    let Some(mut kernel_log) = KernelLog::from_now() else {
        return;
    };
    let mut vmm = api_only_vmm("api-limits-log", &dir, "log");
    vmm.explain_failure(|_| drive_to_the_limits(&socket_in(&dir.0), &kernel));
    let records = kernel_log.seccomp_records(vmm.pid());
    assert!(
        records.is_empty(),
        "system calls outside the filters:\n{}",
        records.join("\n")
    );
}

#[test]
fn the_vmm_survives_the_heaviest_load_with_seccomp_on() {
    let dir = TempDir::new("api-limits-trap");
    let kernel = dir.path("kernel");
    std::fs::write(&kernel, tiny_elf_kernel(&[0xf4, 0xeb, 0xfd], 0x1000, true)).unwrap();
    let mut vmm = api_only_vmm("api-limits-trap", &dir, "true");
    vmm.explain_failure(|_| drive_to_the_limits(&socket_in(&dir.0), &kernel));
    assert!(vmm.is_running(), "{}", vmm.stderr());
    assert!(timed_ping(&socket_in(&dir.0)) < Duration::from_secs(30));
    assert!(
        !vmm.stderr().contains("forbidden system call"),
        "{}",
        vmm.stderr()
    );
}
