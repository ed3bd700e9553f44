//! Live migration with real guests (docs/migration.md): a running guest moves to another
//! `accordion` over a unix socket and over TCP, and only boot RAM and plugged memory cross.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::api::{memory_device, remote, remote_err, remote_json, remote_ok, socket_in};
use common::api::{spawn_with_api, wait_for_socket, SOCKET_TIMEOUT};
use common::process::thread_seccomp_modes;
use common::{field, guest, TempDir, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const BOOT_RAM: u64 = 256 * MIB;
/// Plugging is quick; unplugging makes the guest migrate pages (about 1.5 s per 128 MiB in
/// the nested test host).
const RESIZE_TIMEOUT: Duration = Duration::from_secs(240);
/// A migration of an idle guest with 1.25 GiB of memory, in the nested test host.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// The test guest with a 64 GiB virtio-mem region, an API socket and an event log in `dir`.
fn boot(tag: &str, dir: &TempDir) -> Vmm {
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

/// A VMM with only an API socket (and an event log), to receive a migration.
fn destination(tag: &str, dir: &TempDir) -> Vmm {
    let events = format!("path={}", dir.path("events.jsonl").display());
    spawn_with_api(tag, dir, &["--event-monitor", &events])
}

/// Waits until the device of zone `default` has `plugged` bytes.
fn wait_plugged(socket: &Path, plugged: u64, timeout: Duration) -> Duration {
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
fn resize(socket: &Path, plugged: u64) {
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

/// The output line of a guest command that prints `TAG value...`, as `value...`.
fn guest_line(vmm: &mut Vmm, tag: &str, command: &str) -> String {
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

/// The checksum of the pattern file and the guest's MemTotal line.
fn guest_facts(vmm: &mut Vmm) -> (String, String) {
    (
        guest_line(vmm, "PATTERN", "md5sum /p/pattern"),
        guest_line(vmm, "MEMINFO", "grep MemTotal /proc/meminfo"),
    )
}

/// The events of `event` in the event log in `dir`.
fn events(dir: &Path, event: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["source"] == "vm" && e["event"] == event)
        .collect()
}

/// How many `event` lines the VMM behind `socket` (whose event log is next to it) wrote.
fn events_of(socket: &Path, event: &str) -> usize {
    events(socket.parent().expect("a socket in a directory"), event).len()
}

/// `accordion-remote receive-migration` on `socket`, in the background: it returns when
/// the migration has ended.
fn receive(socket: &Path, url: &str) -> JoinHandle<std::process::Output> {
    let socket = socket.to_path_buf();
    let arg = format!("receiver_url={url}");
    std::thread::spawn(move || remote(&socket, &["receive-migration", &arg]))
}

/// Waits for a file (a unix socket being bound).
fn wait_exists(path: &Path) {
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A unix socket at `listen` that forwards one connection to `to`, counting the bytes the
/// sender writes: the test's own count of what crossed the wire. It holds the sender (its
/// first request unanswered) until [`open`](Self::open), so the test can look at a source
/// in the middle of a migration.
struct CountingProxy {
    sent: Arc<AtomicU64>,
    gate: std::sync::mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl CountingProxy {
    fn start(listen: &Path, to: PathBuf) -> Self {
        let listener = UnixListener::bind(listen).expect("proxy socket");
        let sent = Arc::new(AtomicU64::new(0));
        let count = sent.clone();
        let (gate, opened) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (mut from, _) = listener.accept().expect("proxy accept");
            let _ = opened.recv();
            let mut dest = UnixStream::connect(&to).expect("proxy connect");
            let (mut back_from, mut back_to) =
                (dest.try_clone().unwrap(), from.try_clone().unwrap());
            let answers = std::thread::spawn(move || {
                let _ = std::io::copy(&mut back_from, &mut back_to);
            });
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        if dest.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = dest.shutdown(std::net::Shutdown::Write);
            let _ = answers.join();
        });
        CountingProxy { sent, gate, thread }
    }

    /// Lets the sender through.
    fn open(&self) {
        let _ = self.gate.send(());
    }

    fn finish(self) -> u64 {
        let _ = self.thread.join();
        self.sent.load(Ordering::Relaxed)
    }
}

/// Sends the VM behind `from` to `url` while `to` receives it on `receiver_url`; returns
/// once the destination has it and the source has exited.
fn migrate(source: &mut Vmm, from: &Path, to: &Path, send_url: &str, receive_url: &str) {
    let received = receive(to, receive_url);
    // The destination listens before the call is answered: wait until it does.
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    while remote_json(to, &["info"]).get("config").is_none()
        && events_of(to, "migration-receive-ready") == 0
    {
        assert!(Instant::now() < deadline, "the destination does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    remote_ok(
        from,
        &["send-migration", &format!("destination_url={send_url}")],
    );
    let answer = received.join().expect("receive-migration");
    assert!(
        answer.status.success(),
        "receive-migration: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    // The source VMM ends its VM and exits, as Cloud Hypervisor's does.
    assert!(source.wait_exit(MIGRATION_TIMEOUT).success());
}

/// A migrated guest: it answers on its console, has what it had, and resizes both ways.
fn check_arrived(vmm: &mut Vmm, socket: &Path, facts: &(String, String), plugged: u64) {
    let info = remote_json(socket, &["info"]);
    assert_eq!(info["state"], "Running", "{info}");
    assert_eq!(info["memory_actual_size"], BOOT_RAM + plugged, "{info}");
    assert_eq!(&guest_facts(vmm), facts, "the pattern or MemTotal changed");
    let dev = memory_device(socket, "default");
    assert_eq!(dev["plugged_size"], plugged, "{dev}");
    resize(socket, plugged + 512 * MIB);
    resize(socket, plugged - 256 * MIB);
    assert_eq!(guest_line(vmm, "PATTERN", "md5sum /p/pattern"), facts.0);
    let threads = thread_seccomp_modes(vmm.pid());
    assert!(threads.iter().all(|(_, mode)| *mode == 2), "{threads:?}");
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn a_guest_migrates_over_unix_and_tcp_and_only_plugged_memory_crosses() {
    let dir = TempDir::new("migration-source");
    let socket = socket_in(&dir.0);
    let mut source = boot("migration-source", &dir);
    let facts = source.explain_failure(|vmm| {
        // Plugged, written (a pattern larger than boot RAM, so that part of it lives in
        // plugged memory), then partly unplugged: the guest moved those pages out.
        resize(&socket, GIB + 256 * MIB);
        let done = vmm.run_command(
            "mkdir -p /p && mount -t tmpfs -o size=2G p /p && \
             dd if=/dev/urandom of=/p/pattern bs=1M count=320",
        );
        assert_eq!(field(&done, "rc"), Some(0), "{done}");
        resize(&socket, GIB);
        guest_facts(vmm)
    });

    // Over a unix socket, through the test's counting proxy.
    let first = TempDir::new("migration-first");
    let first_socket = socket_in(&first.0);
    let mut first_vmm = destination("migration-first", &first);
    let listen = first.path("migration.sock");
    let proxy_path = dir.path("proxy.sock");
    let received = receive(&first_socket, &format!("unix:{}", listen.display()));
    wait_exists(&listen);
    let proxy = CountingProxy::start(&proxy_path, listen.clone());
    source.explain_failure(|vmm| {
        remote_ok(
            &socket,
            &[
                "send-migration",
                &format!("destination_url=unix:{}", proxy_path.display()),
            ],
        );
        // Held at its first request by the proxy: the source answers, shows the migration,
        // and refuses what cannot run during one; so does the destination.
        assert_eq!(remote_json(&socket, &["ping"])["pid"], u64::from(vmm.pid()));
        let info = remote_json(&socket, &["info"]);
        assert_eq!(info["migration"]["role"], "source", "{info}");
        for refused in [
            remote_err(&socket, &["resize", "--memory", "2G"]),
            remote_err(&socket, &["pause"]),
            remote_err(
                &socket,
                &["send-migration", "destination_url=unix:/nonexistent"],
            ),
        ] {
            assert!(refused.contains("migration is under way"), "{refused}");
        }
        remote_ok(&first_socket, &["ping"]);
        proxy.open();
        assert!(vmm.wait_exit(MIGRATION_TIMEOUT).success());
    });
    let answer = received.join().expect("receive-migration");
    assert!(
        answer.status.success(),
        "receive-migration: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let sent = proxy.finish();
    assert!(
        sent <= (BOOT_RAM + GIB) * 101 / 100,
        "{sent} bytes crossed for {} of boot RAM and plugged memory",
        BOOT_RAM + GIB
    );
    assert!(sent >= 320 * MIB, "only {sent} bytes crossed");
    let finished = events(&dir.0, "migration-finished");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert!(!listen.exists(), "the destination left its socket file");
    first_vmm.explain_failure(|vmm| {
        let counters = remote_json(&first_socket, &["counters"]);
        assert!(
            counters["migration"]["passes"].as_u64() >= Some(2),
            "{counters}"
        );
        check_arrived(vmm, &first_socket, &facts, GIB);
        // Back where it was before the resizes.
        resize(&first_socket, GIB);
    });

    // On over TCP loopback, with a resize asked for just before: the guest's requests are
    // answered BUSY on the way, and it gets there once the migration is over.
    let second = TempDir::new("migration-second");
    let second_socket = socket_in(&second.0);
    let mut second_vmm = destination("migration-second", &second);
    let port = 46000 + (std::process::id() % 10000) as u16;
    remote_ok(
        &first_socket,
        &[
            "resize",
            "--memory",
            &format!("{}M", (BOOT_RAM + GIB + 512 * MIB) / MIB),
        ],
    );
    migrate(
        &mut first_vmm,
        &first_socket,
        &second_socket,
        &format!("tcp:127.0.0.1:{port}"),
        &format!("tcp:127.0.0.1:{port}"),
    );
    second_vmm.explain_failure(|vmm| {
        let took = wait_plugged(&second_socket, GIB + 512 * MIB, Duration::from_secs(30));
        eprintln!("the guest reached the size asked for before the migration {took:?} after it");
        assert!(took < Duration::from_secs(5), "{took:?}");
        resize(&second_socket, GIB);
        check_arrived(vmm, &second_socket, &facts, GIB);
        remote_ok(&second_socket, &["shutdown-vmm"]);
    });
    assert!(second_vmm.wait_exit(EXIT_TIMEOUT).success());
}
