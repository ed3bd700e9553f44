//! Live migration with real guests (docs/migration.md): a running guest moves to another
//! `accordion` over a unix socket and over TCP, and only boot RAM and plugged memory cross.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::api::{memory_device, remote, remote_err, remote_json, remote_ok, socket_in};
use common::api::{spawn_with_api, wait_for_socket, SOCKET_TIMEOUT};
use common::migration_tap::{self, Act, Tap};
use common::process::{resources, thread_seccomp_modes};
use common::vmem::RESIZE_TIMEOUT;
use common::vmem::{boot, guest_facts, guest_line, plug_write_unplug, resize, wait_plugged};
use common::vmem::{BOOT_RAM, GIB, MIB};
use common::{field, guest, TempDir, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

/// A migration of an idle guest with 1.25 GiB of memory, in the nested test host.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);

/// A VMM with only an API socket (and an event log), to receive a migration.
fn destination(tag: &str, dir: &TempDir) -> Vmm {
    let events = format!("path={}", dir.path("events.jsonl").display());
    spawn_with_api(tag, dir, &["--event-monitor", &events])
}

/// How many `event` lines the VMM behind `socket` (whose event log is next to it) wrote.
fn events_of(socket: &Path, event: &str) -> usize {
    events(socket.parent().expect("a socket in a directory"), event).len()
}

/// The `vm` events named `event` in the event log in `dir`.
fn events(dir: &Path, event: &str) -> Vec<serde_json::Value> {
    common::vmem::events(dir, "events.jsonl", event)
}

/// `accordion-remote receive-migration` on `socket`, in the background: it returns when
/// the migration has ended.
fn receive(socket: &Path, url: &str) -> JoinHandle<std::process::Output> {
    let socket = socket.to_path_buf();
    let arg = format!("receiver_url={url}");
    std::thread::spawn(move || remote(&socket, &["receive-migration", &arg]))
}

/// Waits until the VMM behind `socket` listens for its `n`th migration (its socket file
/// appears at bind(2), a moment before listen(2); the event comes after both).
fn wait_receiving(socket: &Path, n: usize) {
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    while events_of(socket, "migration-receive-ready") < n {
        assert!(
            Instant::now() < deadline,
            "{} does not listen",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the VM behind `from` to `url` while `to` receives it on `receiver_url`; returns
/// once the destination has it and the source has exited.
fn migrate(source: &mut Vmm, from: &Path, to: &Path, send_url: &str, receive_url: &str) {
    let received = receive(to, receive_url);
    // The destination listens before the call is answered: wait until it does.
    wait_receiving(to, 1);
    source.explain_failure(|source| {
        remote_ok(
            from,
            &["send-migration", &format!("destination_url={send_url}")],
        );
        let answer = join_within(received, MIGRATION_TIMEOUT, || {
            let failed = events(from.parent().expect("a directory"), "migration-failed");
            let state = format!(
                "source: {:?}\nsource events: {:?}\ndestination events: {:?}",
                remote(from, &["info"]),
                std::fs::read_to_string(from.with_file_name("events.jsonl")),
                std::fs::read_to_string(to.with_file_name("events.jsonl")),
            );
            (!failed.is_empty()).then(|| format!("the source failed: {failed:?}\n{state}"))
        });
        assert!(
            answer.status.success(),
            "receive-migration: {}",
            String::from_utf8_lossy(&answer.stderr)
        );
        // The source VMM ends its VM and exits, as Cloud Hypervisor's does.
        assert!(source.wait_exit(MIGRATION_TIMEOUT).success());
    });
}

/// The thread's result; a panic when `failed()` says why it will not end, or when it takes
/// longer than `timeout`.
fn join_within<T>(
    thread: JoinHandle<T>,
    timeout: Duration,
    failed: impl Fn() -> Option<String>,
) -> T {
    let deadline = Instant::now() + timeout;
    while !thread.is_finished() {
        if let Some(why) = failed() {
            panic!("{why}");
        }
        assert!(Instant::now() < deadline, "not done within {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    thread.join().expect("the thread panicked")
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
    let facts = source.explain_failure(|vmm| plug_write_unplug(vmm, &socket));

    // Over a unix socket, through the test's counting proxy.
    let first = TempDir::new("migration-first");
    let first_socket = socket_in(&first.0);
    let mut first_vmm = destination("migration-first", &first);
    let listen = first.path("migration.sock");
    let proxy_path = dir.path("proxy.sock");
    let received = receive(&first_socket, &format!("unix:{}", listen.display()));
    wait_receiving(&first_socket, 1);
    let proxy = Tap::start(&proxy_path, listen.clone(), Box::new(|_, _| Act::Forward));
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
        let waiting = remote_err(&first_socket, &["info"]);
        assert!(
            waiting.contains("a migration is being received"),
            "{waiting}"
        );
        proxy.open();
        assert!(vmm.wait_exit(MIGRATION_TIMEOUT).success());
    });
    let answer = join_within(received, MIGRATION_TIMEOUT, || {
        let failed = events(&dir.0, "migration-failed");
        (!failed.is_empty()).then(|| format!("the source failed: {failed:?}"))
    });
    assert!(
        answer.status.success(),
        "receive-migration: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let seen = proxy.seen();
    let sent = proxy.finish();
    // Every range of every pass lies in boot RAM or in the first 1.25 GiB of the region,
    // where the blocks plugged before the unplug were; the first pass sends at most the
    // plugged GiB of the region (its all-zero pages stay behind), and at least the part of
    // the pattern that did not fit in boot RAM.
    let region = 4 * GIB;
    for request in seen.iter().filter(|r| r.command == migration_tap::MEMORY) {
        for &(gpa, len) in &request.ranges {
            assert!(
                gpa + len <= BOOT_RAM || (gpa >= region && gpa + len <= region + GIB + 256 * MIB),
                "range {gpa:#x}+{len:#x} in pass {}",
                request.pass
            );
        }
    }
    let first_pass_in_region: u64 = seen
        .iter()
        .filter(|r| r.pass == 0)
        .flat_map(|r| r.ranges.iter())
        .filter(|r| r.0 >= region)
        .map(|r| r.1)
        .sum();
    assert!(
        (320 * MIB - BOOT_RAM..=GIB).contains(&first_pass_in_region),
        "{first_pass_in_region} bytes of the region in the first pass"
    );
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

/// The source after a failed migration: running, its memory as it was, BUSY over (a resize
/// completes), nothing of the migration left in `vm.info`.
fn check_source_goes_on(vmm: &mut Vmm, socket: &Path, checksum: &str, plugged: u64) {
    let info = remote_json(socket, &["info"]);
    assert_eq!(info["state"], "Running", "{info}");
    assert!(info.get("migration").is_none(), "{info}");
    assert_eq!(guest_line(vmm, "PATTERN", "md5sum /p/pattern"), checksum);
    resize(socket, plugged + 128 * MIB);
    resize(socket, plugged);
}

/// The reason of the source's last `migration-failed` event, once there are `count` of
/// them (waits up to the migration timeout).
fn failure_reason(dir: &Path, count: usize) -> String {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let failed = events(dir, "migration-failed");
        if failed.len() >= count {
            return failed[count - 1]["properties"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no migration-failed event number {count}: {:?}",
            std::fs::read_to_string(dir.join("events.jsonl"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One migration attempt from the VMM behind `socket` to a fresh destination, through a
/// tap acting by `policy` (with the destination's pid). Returns the destination, the
/// receive call's outcome, and the tap's record of the requests.
fn attempt(
    tag: &str,
    socket: &Path,
    options: &str,
    policy: impl FnMut(&migration_tap::Seen, &[migration_tap::Seen], u32) -> Act + Send + 'static,
) -> (Vmm, TempDir, std::process::Output, Vec<migration_tap::Seen>) {
    let dir = TempDir::new(tag);
    let dest = destination(tag, &dir);
    let pid = dest.pid();
    let listen = dir.path("migration.sock");
    let received = receive(&socket_in(&dir.0), &format!("unix:{}", listen.display()));
    wait_receiving(&socket_in(&dir.0), 1);
    let tap_path = dir.path("tap.sock");
    let mut policy = policy;
    let tap = Tap::start(
        &tap_path,
        listen,
        Box::new(move |seen, before| policy(seen, before, pid)),
    );
    remote_ok(
        socket,
        &[
            "send-migration",
            &format!("destination_url=unix:{}{options}", tap_path.display()),
        ],
    );
    tap.open();
    let answer = join_within(received, MIGRATION_TIMEOUT, || None);
    let seen = tap.seen();
    tap.finish();
    (dest, dir, answer, seen)
}

fn kill(pid: u32) {
    // SAFETY: kill(2) on a child process of this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// Sends `requests` to a receiver at `listen` as a sender would, and returns the reason of
/// the Error it answers with (the stream up to then answered OK).
fn hostile(listen: &Path, requests: &[Vec<u8>], then: &[u8]) -> String {
    let mut s = UnixStream::connect(listen).expect("connecting to the receiver");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let read_answer = |s: &mut UnixStream| -> Result<(), String> {
        let mut header = [0u8; 16];
        s.read_exact(&mut header)
            .map_err(|e| format!("no answer: {e}"))?;
        let len = u64::from_le_bytes(header[8..].try_into().unwrap());
        let mut reason = vec![0u8; len as usize];
        s.read_exact(&mut reason)
            .map_err(|e| format!("no reason: {e}"))?;
        match header[0] {
            1 => Ok(()),
            _ => Err(String::from_utf8_lossy(&reason).into_owned()),
        }
    };
    for request in requests {
        s.write_all(request).unwrap();
        if let Err(reason) = read_answer(&mut s) {
            return reason;
        }
    }
    s.write_all(then).unwrap();
    match read_answer(&mut s) {
        Err(reason) => reason,
        Ok(()) => panic!("the receiver took it"),
    }
}

/// What a hostile sender does: its name, the requests it sends first (answered OK), the
/// last one, and what the refusal must say.
type HostileCase = (&'static str, Vec<Vec<u8>>, Vec<u8>, &'static str);

fn request(command: u16, headers: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut out = command.to_le_bytes().to_vec();
    out.extend_from_slice(&headers);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn memory_request(ranges: &[(u64, u64)]) -> Vec<u8> {
    let table: Vec<u8> = ranges
        .iter()
        .flat_map(|&(gpa, len)| [gpa.to_le_bytes(), len.to_le_bytes()].concat())
        .collect();
    request(migration_tap::MEMORY, [0; 6], &table)
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn failed_migrations_leave_the_source_running_and_hostile_senders_are_refused() {
    const PLUGGED: u64 = 256 * MIB;
    let dir = TempDir::new("migration-failures");
    let socket = socket_in(&dir.0);
    let mut source = boot("migration-failures", &dir);
    let checksum = source.explain_failure(|vmm| {
        resize(&socket, PLUGGED);
        let done = vmm.run_command(
            "mkdir -p /p && mount -t tmpfs -o size=1G p /p && \
             dd if=/dev/urandom of=/p/pattern bs=1M count=64",
        );
        assert_eq!(field(&done, "rc"), Some(0), "{done}");
        guest_line(vmm, "PATTERN", "md5sum /p/pattern")
    });
    let mut failures = 0;
    let mut config = Vec::new();

    // The destination killed during the first pass.
    let (mut dest, _d1, answer, seen) =
        attempt("migration-kill-first", &socket, "", |r, _, pid| {
            if r.command == migration_tap::MEMORY && r.pass == 0 {
                kill(pid);
                return Act::Cut;
            }
            Act::Forward
        });
    failures += 1;
    let reason = failure_reason(&dir.0, failures);
    assert!(!answer.status.success());
    eprintln!("killed in the first pass: {reason}");
    assert!(!dest.wait_exit(EXIT_TIMEOUT).success());
    config.extend(
        seen.iter()
            .filter(|r| r.command == migration_tap::CONFIG)
            .map(|r| r.payload.clone()),
    );
    source.explain_failure(|vmm| check_source_goes_on(vmm, &socket, &checksum, PLUGGED));
    let after_one = resources(source.pid());

    // The destination refuses the configuration (here: not the format it reads).
    let (_dest, d2, answer, _) = attempt("migration-refused", &socket, "", |r, _, _| {
        if r.command == migration_tap::CONFIG {
            let text = String::from_utf8_lossy(&r.payload)
                .replace("accordion-migration", "accordion-migratioN");
            return Act::Replace(text.into_bytes());
        }
        Act::Forward
    });
    failures += 1;
    let reason = failure_reason(&dir.0, failures);
    assert!(reason.contains("configuration is refused"), "{reason}");
    let refused = String::from_utf8_lossy(&answer.stderr).to_string();
    assert!(refused.contains("configuration is refused"), "{refused}");
    // Nothing was left on the destination, which can receive again.
    let info = remote_err(&socket_in(&d2.0), &["info"]);
    assert!(info.contains("no VM"), "{info}");
    source.explain_failure(|vmm| check_source_goes_on(vmm, &socket, &checksum, PLUGGED));

    // A guest that keeps writing memory: a later pass is cut, then a timeout cancels.
    let done = source.run_command(
        "(while :; do dd if=/dev/urandom of=/p/churn bs=1M count=8 conv=notrunc 2>/dev/null; \
         done) & echo $! > /p/churn.pid",
    );
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
    let (mut dest, _d3, _, seen) = attempt(
        "migration-kill-later",
        &socket,
        ",downtime_ms=1",
        |r, _, pid| {
            if r.command == migration_tap::MEMORY && r.pass >= 2 {
                kill(pid);
                return Act::Cut;
            }
            Act::Forward
        },
    );
    failures += 1;
    let reason = failure_reason(&dir.0, failures);
    eprintln!("killed in a later pass: {reason}");
    assert!(seen.iter().any(|r| r.pass >= 2), "no later pass");
    assert!(!dest.wait_exit(EXIT_TIMEOUT).success());
    let (_dest, _d4, answer, _) = attempt(
        "migration-timeout",
        &socket,
        ",downtime_ms=1,timeout_s=1,timeout_strategy=cancel",
        |_, _, _| Act::Forward,
    );
    failures += 1;
    let reason = failure_reason(&dir.0, failures);
    assert!(reason.contains("timeout_s"), "{reason}");
    assert!(!answer.status.success());
    let done = source.run_command("kill $(cat /p/churn.pid)");
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
    source.explain_failure(|vmm| check_source_goes_on(vmm, &socket, &checksum, PLUGGED));

    // The destination killed once it has the state.
    let (mut dest, _d5, _, _) = attempt("migration-kill-state", &socket, "", |r, _, pid| {
        if r.command == migration_tap::STATE {
            kill(pid);
            return Act::Cut;
        }
        Act::Forward
    });
    failures += 1;
    failure_reason(&dir.0, failures);
    assert!(!dest.wait_exit(EXIT_TIMEOUT).success());
    source.explain_failure(|vmm| check_source_goes_on(vmm, &socket, &checksum, PLUGGED));
    // Four more failed migrations left nothing behind: no descriptor, no thread.
    let after_five = resources(source.pid());
    assert_eq!(
        (after_one.fds, after_one.threads),
        (after_five.fds, after_five.threads),
        "{after_one:?} then {after_five:?}"
    );

    // The answer to Complete is lost: the source cannot know the outcome, so it stays
    // paused and says so, while the destination runs the VM.
    let (mut dest, d6, answer, _) = attempt("migration-lost-answer", &socket, "", |r, _, _| {
        if r.command == migration_tap::COMPLETE {
            return Act::LoseAnswer;
        }
        Act::Forward
    });
    assert!(answer.status.success());
    failures += 1;
    let reason = failure_reason(&dir.0, failures);
    assert!(reason.contains("Complete was lost"), "{reason}");
    let info = remote_json(&socket, &["info"]);
    assert_eq!(info["state"], "Paused", "{info}");
    assert!(info["migration_outcome_unknown"].is_string(), "{info}");
    // The operator keeps the destination's copy.
    remote_ok(&socket, &["shutdown-vmm"]);
    assert!(source.wait_exit(EXIT_TIMEOUT).success());
    let d6_socket = socket_in(&d6.0);
    dest.explain_failure(|vmm| {
        assert_eq!(remote_json(&d6_socket, &["info"])["state"], "Running");
        assert_eq!(guest_line(vmm, "PATTERN", "md5sum /p/pattern"), checksum);
        // A paused VM migrates and stays paused.
        remote_ok(&d6_socket, &["pause"]);
    });
    let (mut last, d7, answer, _) =
        attempt("migration-paused", &d6_socket, "", |_, _, _| Act::Forward);
    assert!(answer.status.success());
    assert!(dest.wait_exit(MIGRATION_TIMEOUT).success());
    let d7_socket = socket_in(&d7.0);
    last.explain_failure(|vmm| {
        assert_eq!(remote_json(&d7_socket, &["info"])["state"], "Paused");
        remote_ok(&d7_socket, &["resume"]);
        assert_eq!(guest_line(vmm, "PATTERN", "md5sum /p/pattern"), checksum);
        resize(&d7_socket, PLUGGED + 128 * MIB);
        remote_ok(&d7_socket, &["shutdown-vmm"]);
    });
    assert!(last.wait_exit(EXIT_TIMEOUT).success());

    // Hostile senders, against one receiver: each is refused with its reason, and the
    // receiver is left without a VM, ready for the next.
    let config = config.first().expect("a Config was seen").clone();
    let hdir = TempDir::new("migration-hostile");
    let hsocket = socket_in(&hdir.0);
    let mut receiver = destination("migration-hostile", &hdir);
    let listen = hdir.path("migration.sock");
    let start = request(migration_tap::START, [0, 0, b'A', b'C', b'C', 1], &[]);
    let config_request = request(migration_tap::CONFIG, [0; 6], &config);
    let region_end = 4 * GIB + 64 * GIB;
    let mut cases: Vec<HostileCase> = vec![
        (
            "a Start without Accordion's tag",
            vec![],
            request(migration_tap::START, [0; 6], &[]),
            "not an Accordion",
        ),
        (
            "a range in an unplugged block",
            vec![start.clone(), config_request.clone()],
            memory_request(&[(region_end - 2 * MIB, 2 * MIB)]),
            "neither boot RAM nor a plugged",
        ),
        (
            "an oversized range",
            vec![start.clone(), config_request.clone()],
            memory_request(&[(0, 1 << 40)]),
            "neither boot RAM nor a plugged",
        ),
    ];
    // A stream cut short in the middle of a range's bytes.
    let mut truncated = memory_request(&[(0, MIB)]);
    truncated.extend_from_slice(&[0u8; 4096]);
    cases.push((
        "a truncated stream",
        vec![start.clone(), config_request.clone()],
        truncated,
        "reading memory from the sender",
    ));
    receiver.explain_failure(|_| {
        for (n, (what, before, last, says)) in cases.into_iter().enumerate() {
            let received = receive(&hsocket, &format!("unix:{}", listen.display()));
            wait_receiving(&hsocket, n + 1);
            if what == "a truncated stream" {
                // Nobody is left to answer: the receiver's reason is in its call's answer.
                let mut s = UnixStream::connect(&listen).unwrap();
                for r in &before {
                    s.write_all(r).unwrap();
                    let mut answer = [0u8; 16];
                    s.read_exact(&mut answer).unwrap();
                }
                s.write_all(&last).unwrap();
            } else {
                let reason = hostile(&listen, &before, &last);
                assert!(reason.contains(says), "{what}: {reason}");
            }
            let answer = join_within(received, MIGRATION_TIMEOUT, || None);
            let error = String::from_utf8_lossy(&answer.stderr).to_string();
            assert!(!answer.status.success(), "{what}");
            assert!(error.contains(says), "{what}: {error}");
            let info = remote_err(&hsocket, &["info"]);
            assert!(info.contains("no VM"), "{what}: {info}");
            assert!(!listen.exists(), "{what}: the socket file stayed");
        }
        remote_ok(&hsocket, &["shutdown-vmm"]);
    });
    assert!(receiver.wait_exit(EXIT_TIMEOUT).success());
    drop(d2);
}

/// Waits until zone `id`'s device has `plugged` bytes.
fn wait_zone_plugged(socket: &Path, id: &str, plugged: u64) {
    let deadline = Instant::now() + RESIZE_TIMEOUT;
    while memory_device(socket, id)["plugged_size"] != plugged {
        assert!(
            Instant::now() < deadline,
            "zone {id} did not reach {plugged}: {}",
            memory_device(socket, id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn two_zones_on_two_nodes_migrate_locally_by_passing_their_memory() {
    // Private memory cannot be passed: refused by name, the VM runs on.
    let dir = TempDir::new("migration-private");
    let socket = socket_in(&dir.0);
    let mut private = boot("migration-private", &dir);
    private.explain_failure(|vmm| {
        let e = remote_err(
            &socket,
            &[
                "send-migration",
                "destination_url=unix:/nonexistent,local=on",
            ],
        );
        assert!(e.contains("local") && e.contains("shared=on"), "{e}");
        let done = vmm.run_command("true");
        assert_eq!(field(&done, "rc"), Some(0), "{done}");
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(private.wait_exit(EXIT_TIMEOUT).success());

    let dir = TempDir::new("migration-local");
    let socket = socket_in(&dir.0);
    let api = format!("path={}", socket.display());
    let monitor = format!("path={}", dir.path("events.jsonl").display());
    let mut source = Vmm::boot_guest(
        "migration-local",
        &guest().vmlinux,
        "",
        &[
            "--api-socket",
            &api,
            "--event-monitor",
            &monitor,
            "--cpus",
            "boot=2",
            "--memory",
            "size=0",
            "--memory-zone",
            "id=mem0,size=256M,shared=on,hotplug_size=4G",
            "--memory-zone",
            "id=mem1,size=256M,shared=on,hotplug_size=4G",
            "--numa",
            "guest_numa_id=0,cpus=0,memory_zones=mem0",
            "--numa",
            "guest_numa_id=1,cpus=1,memory_zones=mem1",
        ],
    );
    source.wait_for(READY, BOOT_TIMEOUT);
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    let checksum = source.explain_failure(|vmm| {
        remote_ok(&socket, &["resize-zone", "--id", "mem1", "--size", "768M"]);
        wait_zone_plugged(&socket, "mem1", 512 * MIB);
        let done = vmm.run_command(
            "mkdir -p /p && mount -t tmpfs -o size=1G p /p && \
             dd if=/dev/urandom of=/p/pattern bs=1M count=200",
        );
        assert_eq!(field(&done, "rc"), Some(0), "{done}");
        guest_line(vmm, "PATTERN", "md5sum /p/pattern")
    });
    // Directly, not through the tap: the memory files travel as SCM_RIGHTS, which the tap
    // does not pass on.
    let d = TempDir::new("migration-local-dest");
    let d_socket = socket_in(&d.0);
    let mut dest = destination("migration-local-dest", &d);
    let listen = d.path("migration.sock");
    let received = receive(&d_socket, &format!("unix:{}", listen.display()));
    wait_receiving(&d_socket, 1);
    remote_ok(
        &socket,
        &[
            "send-migration",
            &format!("destination_url=unix:{},local=on", listen.display()),
        ],
    );
    let answer = join_within(received, MIGRATION_TIMEOUT, || {
        let failed = events(&dir.0, "migration-failed");
        (!failed.is_empty()).then(|| format!("the source failed: {failed:?}"))
    });
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert!(source.wait_exit(MIGRATION_TIMEOUT).success());
    // The memory went as file descriptors: no pass, no byte of memory.
    let counters = remote_json(&d_socket, &["counters"]);
    assert_eq!(counters["migration"]["bytes"], 0, "{counters}");
    assert_eq!(counters["migration"]["passes"], 0, "{counters}");
    dest.explain_failure(|vmm| {
        assert_eq!(remote_json(&d_socket, &["info"])["state"], "Running");
        assert_eq!(memory_device(&d_socket, "mem1")["plugged_size"], 512 * MIB);
        assert_eq!(memory_device(&d_socket, "mem1")["node"], 1);
        assert_eq!(memory_device(&d_socket, "mem0")["plugged_size"], 0);
        assert_eq!(guest_line(vmm, "PATTERN", "md5sum /p/pattern"), checksum);
        // Each zone resizes on its own, on its node.
        remote_ok(
            &d_socket,
            &["resize-zone", "--id", "mem0", "--size", "512M"],
        );
        wait_zone_plugged(&d_socket, "mem0", 256 * MIB);
        remote_ok(
            &d_socket,
            &["resize-zone", "--id", "mem1", "--size", "512M"],
        );
        wait_zone_plugged(&d_socket, "mem1", 256 * MIB);
        assert_eq!(guest_line(vmm, "PATTERN", "md5sum /p/pattern"), checksum);
        remote_ok(&d_socket, &["shutdown-vmm"]);
    });
    assert!(dest.wait_exit(EXIT_TIMEOUT).success());
}
