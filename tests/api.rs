//! The REST API and `accordion-remote`: every endpoint, the VM lifecycle, and bad input.
//! Tests marked `#[ignore]` boot the real Linux test guest (run them through
//! scripts/run-tests.sh); the others need no guest and run anywhere.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::api::{
    assert_matches_schema, booted_with_api, http, read_answer, remote, remote_err, remote_json,
    remote_ok, socket_in, spawn_with_api, timed_ping,
};
use common::process::{vcpus_parked, wait_vcpus_parked};
use common::{field, guest, TempDir, Vmm, BOOT_TIMEOUT, CMD_DONE, EXIT_TIMEOUT, READY};

/// An `accordion` with only an API socket (and an event monitor), waiting for `vm.create`.
fn api_only(tag: &str, dir: &TempDir) -> Vmm {
    let events = format!("path={}", dir.path("events.jsonl").display());
    spawn_with_api(tag, dir, &["--event-monitor", &events])
}

/// The test guest's configuration as `vm.create` takes it, serial on the VMM's stdout.
fn guest_config_json(ram_mib: u64) -> String {
    let g = guest();
    serde_json::json!({
        "cpus": {"boot_vcpus": 1},
        "memory": {"size": ram_mib << 20},
        "payload": {
            "kernel": g.vmlinux,
            "initramfs": g.initramfs,
            "cmdline": g.cmdline,
        },
        "serial": {"mode": "Tty"},
    })
    .to_string()
}

/// The lifecycle events (`source` "vm") written so far.
fn vm_events(dir: &TempDir) -> Vec<String> {
    let text = std::fs::read_to_string(dir.path("events.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["source"] == "vm")
        .map(|v| v["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn state(socket: &Path) -> String {
    remote_json(socket, &["info"])["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn api_only_vmm_serves_and_refuses_without_a_vm() {
    let dir = TempDir::new("api-only");
    let socket = socket_in(&dir.0);
    let mut vmm = api_only("api-only", &dir);

    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the API socket must be owner-only");

    let ping = remote_json(&socket, &["ping"]);
    assert!(ping["pid"].as_u64().is_some(), "{ping}");
    assert!(ping["version"].is_string(), "{ping}");

    // Nothing to act on yet: each says so and the VMM keeps serving.
    for cmd in [
        "info",
        "boot",
        "pause",
        "resume",
        "reboot",
        "shutdown",
        "counters",
        "power-button",
    ] {
        let err = remote_err(&socket, &[cmd]);
        assert!(
            err.contains("answered 404") && err.contains("no VM has been created"),
            "{cmd}: {err}"
        );
    }
    // Deleting nothing is not an error (as in Cloud Hypervisor).
    remote_ok(&socket, &["delete"]);

    // A second VMM on the same socket is refused, and the first keeps it.
    let (status, stderr) =
        common::run_to_exit(&["--api-socket", &format!("path={}", socket.display())]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--api-socket") && stderr.contains("in use"),
        "{stderr}"
    );
    timed_ping(&socket);

    remote_ok(&socket, &["shutdown-vmm"]);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert!(status.success(), "shutdown-vmm must exit 0, got {status}");
    assert!(!socket.exists(), "the socket must be removed on exit");
    let events = std::fs::read_to_string(dir.path("events.jsonl")).unwrap();
    assert!(
        events.contains("\"starting\"") && events.contains("\"shutdown\""),
        "{events}"
    );
}

#[test]
fn bad_requests_get_a_4xx_with_a_json_message() {
    let dir = TempDir::new("api-bad");
    let socket = socket_in(&dir.0);
    let _vmm = api_only("api-bad", &dir);
    let create = |body: &[u8]| http(&socket, "PUT", "/api/v1/vm.create", Some(body));

    let a = http(&socket, "GET", "/api/v1/vm.nonsense", None);
    assert_eq!(a.status, 404, "{a:?}");
    assert!(a.error().contains("vm.nonsense"), "{a:?}");
    let a = http(&socket, "GET", "/", None);
    assert_eq!(a.status, 404, "{a:?}");
    let a = http(&socket, "PUT", "/api/v1/vmm.ping", None);
    assert_eq!(a.status, 405, "{a:?}");
    assert_eq!(a.header("allow"), Some("GET"));
    let a = http(&socket, "GET", "/api/v1/vm.boot", None);
    assert_eq!(a.status, 405, "{a:?}");

    let a = create(b"{\"payload\": ");
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("invalid VM configuration"), "{a:?}");
    let a = create(br#"{"payload":{"kernel":"/proc/self/exe"},"cpus":{"boot_vcpus":"two"}}"#);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("invalid type"), "{a:?}");
    let a = create(br#"{"payload":{"kernel":"/proc/self/exe"},"bogus":[]}"#);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("unknown field `bogus`"), "{a:?}");
    // A CH field Accordion lacks: accepted empty, refused by name otherwise.
    let a = create(br#"{"payload":{"kernel":"/proc/self/exe"},"disks":[{"path":"/d"}]}"#);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("disks: not supported"), "{a:?}");
    let a = create(br#"{"payload":{"kernel":"/nonexistent/vmlinux"}}"#);
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.error().contains("/nonexistent/vmlinux"), "{a:?}");
    let a = create(b"");
    assert_eq!(a.status, 400, "{a:?}");

    // 1 MiB of body: refused before it is read.
    let a = create(&vec![b' '; 1 << 20]);
    assert_eq!(a.status, 413, "{a:?}");
    assert!(!a.error().is_empty());

    // None of it created a VM.
    let a = http(&socket, "GET", "/api/v1/vm.info", None);
    assert_eq!(a.status, 404, "{a:?}");
    timed_ping(&socket);
}

#[test]
fn a_stalled_client_delays_nobody_and_is_timed_out() {
    let dir = TempDir::new("api-stall");
    let socket = socket_in(&dir.0);
    let _vmm = api_only("api-stall", &dir);

    // Half a request line, then nothing.
    let mut half_line = UnixStream::connect(&socket).unwrap();
    half_line.write_all(b"PUT /api/v1/vm.cre").unwrap();
    // Full headers, then part of the promised body.
    let mut half_body = UnixStream::connect(&socket).unwrap();
    half_body
        .write_all(b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"pay")
        .unwrap();

    // Others are served while the two wait for the rest of their requests: the pings are
    // answered while neither stalled client has had its answer yet (the 408 comes when
    // their 5 s request timeout runs out).
    for _ in 0..5 {
        timed_ping(&socket);
    }
    for stream in [&half_line, &half_body] {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let early = std::io::Read::read(&mut &*stream, &mut byte);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled client was answered before the pings: {early:?}"
        );
        stream.set_nonblocking(false).unwrap();
    }

    for (name, stream) in [("half line", &mut half_line), ("half body", &mut half_body)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let a = read_answer(stream);
        assert_eq!(a.status, 408, "{name}: {a:?}");
        assert!(!a.error().is_empty(), "{name}");
    }
    // The timed-out requests did nothing.
    assert_eq!(http(&socket, "GET", "/api/v1/vm.info", None).status, 404);
}

#[test]
fn bad_options_name_the_option() {
    let dir = TempDir::new("api-badopt");
    let socket = socket_in(&dir.0);
    let socket = socket.to_str().unwrap();
    for (args, needle) in [
        (vec!["--api-socket", "fd=1"], "--api-socket"),
        (vec!["--api-socket", "path="], "--api-socket"),
        (vec!["--api-socket", "sock=/x"], "--api-socket"),
        (vec!["--api-socket", "fd=9999"], "--api-socket"),
        (
            vec!["--event-monitor", "fd=9999", "--api-socket", socket],
            "--event-monitor",
        ),
        (
            vec![
                "--event-monitor",
                "path=/nonexistent/dir/events",
                "--api-socket",
                socket,
            ],
            "--event-monitor",
        ),
    ] {
        let (status, stderr) = common::run_to_exit(&args);
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        // One line, naming the option (not a usage message that lists every option).
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!Path::new(socket).exists(), "{args:?}: the socket was left");
    }
    let dir = TempDir::new("api-badsock");
    let file = dir.path("not-a-socket");
    std::fs::write(&file, b"x").unwrap();
    let (status, stderr) =
        common::run_to_exit(&["--api-socket", &format!("path={}", file.display())]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert!(
        file.exists(),
        "a file that is not a socket must be left alone"
    );

    let out = remote(Path::new("/nonexistent/api.sock"), &["ping"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/api.sock"));
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn lifecycle_through_accordion_remote() {
    let dir = TempDir::new("api-cycle");
    let socket = socket_in(&dir.0);
    let mut vmm = api_only("api-cycle", &dir);
    let config = dir.path("vm.json");
    std::fs::write(&config, guest_config_json(512)).unwrap();
    let mut slowest = Duration::ZERO;
    let mut ping = |socket: &Path| slowest = slowest.max(timed_ping(socket));

    remote_ok(&socket, &["create", config.to_str().unwrap()]);
    assert_eq!(state(&socket), "Created");
    let err = remote_err(&socket, &["create", config.to_str().unwrap()]);
    assert!(err.contains("already exists"), "{err}");
    ping(&socket);

    remote_ok(&socket, &["boot"]);
    let ready = vmm.wait_for(READY, BOOT_TIMEOUT);
    assert_eq!(field(&ready, "cpus"), Some(1));
    let info = remote_json(&socket, &["info"]);
    assert_eq!(info["state"], "Running");
    assert_eq!(info["config"]["memory"]["size"], 512u64 << 20);
    assert_eq!(info["memory_actual_size"], 512u64 << 20);
    assert!(remote_err(&socket, &["boot"]).contains("already booted"));
    let counters = remote_json(&socket, &["counters"]);
    assert!(
        counters["serial"]["tx_bytes"].as_u64().unwrap_or(0) > 0,
        "{counters}"
    );
    ping(&socket);

    // Paused, the guest runs nothing: every vCPU thread is parked (in futex, not KVM_RUN)
    // from the moment the pause is answered, and a command typed now completes only after
    // resume.
    remote_ok(&socket, &["pause"]);
    assert!(wait_vcpus_parked(vmm.pid()), "a vCPU runs after pause");
    assert_eq!(state(&socket), "Paused");
    assert!(remote_err(&socket, &["pause"]).contains("already paused"));
    ping(&socket);
    exits_add_up(&remote_json(&socket, &["counters"]));
    vmm.send("echo resumed-ok");
    vmm.drain(Duration::ZERO);
    assert!(vcpus_parked(vmm.pid()), "a vCPU runs while paused");
    assert!(
        !vmm.serial_lines().iter().any(|l| l.contains("resumed-ok")),
        "a paused guest ran a command"
    );
    remote_ok(&socket, &["resume"]);
    assert_eq!(state(&socket), "Running");
    assert!(remote_err(&socket, &["resume"]).contains("not paused"));
    vmm.wait_for("resumed-ok", BOOT_TIMEOUT);
    vmm.wait_for(CMD_DONE, BOOT_TIMEOUT);
    // The serial port's counters: what the guest wrote and what it was sent (the typed
    // command at least), and nothing else.
    let serial = remote_json(&socket, &["counters"])["serial"].clone();
    let mut keys: Vec<&String> = serial
        .as_object()
        .expect("serial counters")
        .keys()
        .collect();
    keys.sort();
    assert_eq!(keys, ["rx_bytes", "tx_bytes"], "{serial}");
    assert!(
        serial["rx_bytes"].as_u64() >= Some("echo resumed-ok\n".len() as u64),
        "{serial}"
    );
    assert!(serial["tx_bytes"].as_u64() > Some(0), "{serial}");

    remote_ok(&socket, &["reboot"]);
    vmm.wait_for(READY, BOOT_TIMEOUT);
    assert_eq!(state(&socket), "Running");
    ping(&socket);

    remote_ok(&socket, &["shutdown"]);
    assert_eq!(state(&socket), "Created");
    // The configuration stays: it boots again.
    remote_ok(&socket, &["boot"]);
    vmm.wait_for(READY, BOOT_TIMEOUT);
    remote_ok(&socket, &["shutdown"]);
    remote_ok(&socket, &["delete"]);
    assert!(remote_err(&socket, &["info"]).contains("no VM has been created"));
    ping(&socket);

    remote_ok(&socket, &["shutdown-vmm"]);
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
    assert!(!socket.exists());
    let events = vm_events(&dir);
    let expected = [
        "created", "booted", "paused", "resumed", "rebooted", "shutdown", "booted", "shutdown",
        "deleted",
    ];
    let mut it = events.iter();
    for want in expected {
        assert!(
            it.any(|e| e == want),
            "event '{want}' missing or out of order in {events:?}"
        );
    }
    // Latency is the benchmarks' business; here every ping was answered.
    eprintln!("slowest ping during the cycle: {slowest:?}");
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn every_endpoint_over_the_raw_socket() {
    let dir = TempDir::new("api-raw");
    let socket = socket_in(&dir.0);
    let mut vmm = booted_with_api("api-raw", &dir);
    let put = |path: &str| http(&socket, "PUT", &format!("/api/v1/{path}"), None);
    let get = |path: &str| http(&socket, "GET", &format!("/api/v1/{path}"), None);

    let a = get("vmm.ping");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(a.json()["pid"].is_u64());
    assert_matches_schema("VmmPingResponse", &a.json());
    let a = get("vm.info");
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["state"], "Running");
    assert_eq!(a.json()["memory"]["devices"], serde_json::json!([]));
    assert_matches_schema("VmInfo", &a.json());
    let a = get("vm.counters");
    assert_eq!(a.status, 200);
    assert!(a.json()["serial"]["tx_bytes"].as_u64().unwrap_or(0) > 0);
    assert_matches_schema("VmCounters", &a.json());
    let a = http(
        &socket,
        "PUT",
        "/api/v1/vm.create",
        Some(guest_config_json(512).as_bytes()),
    );
    assert_eq!(a.status, 409, "{a:?}");
    assert_eq!(put("vm.boot").status, 409);
    for path in ["vm.pause", "vm.resume"] {
        let a = put(path);
        assert_eq!(a.status, 204, "{path}: {a:?}");
        assert_eq!(a.body, "");
    }
    assert_eq!(put("vm.reboot").status, 204);
    vmm.wait_for(READY, BOOT_TIMEOUT);

    // The power button: the guest's init acts on it as a distribution's would.
    assert_eq!(put("vm.power-button").status, 204);
    vmm.wait_for("ACCORDION_POWER_BUTTON", BOOT_TIMEOUT);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "power-off after the button must exit 0: {status}"
    );
    assert!(!socket.exists());
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn shutdown_delete_and_vmm_shutdown_over_the_raw_socket() {
    let dir = TempDir::new("api-raw-stop");
    let socket = socket_in(&dir.0);
    let mut vmm = booted_with_api("api-raw-stop", &dir);
    let put = |path: &str| http(&socket, "PUT", &format!("/api/v1/{path}"), None);
    assert_eq!(put("vm.shutdown").status, 204);
    assert_eq!(put("vm.shutdown").status, 409);
    assert_eq!(put("vm.delete").status, 204);
    assert_eq!(http(&socket, "GET", "/api/v1/vm.info", None).status, 404);
    assert_eq!(put("vmm.shutdown").status, 204);
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
    assert!(!socket.exists());
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn bad_requests_leave_a_running_guest_untouched() {
    let dir = TempDir::new("api-bad-running");
    let socket = socket_in(&dir.0);
    let mut vmm = booted_with_api("api-bad-running", &dir);
    let before = http(&socket, "GET", "/api/v1/vm.info", None).json();

    let create = |body: &[u8]| http(&socket, "PUT", "/api/v1/vm.create", Some(body));
    assert_eq!(create(b"not json").status, 400);
    assert_eq!(create(br#"{"payload":{"kernel":7}}"#).status, 400);
    assert_eq!(
        create(br#"{"payload":{"kernel":"/x"},"bogus":true}"#).status,
        400
    );
    assert_eq!(create(&vec![b'{'; 1 << 20]).status, 413);
    assert_eq!(http(&socket, "PUT", "/api/v1/vm.resume", None).status, 409);
    assert_eq!(http(&socket, "PUT", "/api/v1/vm.boot", None).status, 409);
    assert_eq!(http(&socket, "POST", "/api/v1/vm.pause", None).status, 405);
    assert_eq!(
        http(&socket, "GET", "/api/v1/vm.snapshot", None).status,
        405
    );
    assert_eq!(http(&socket, "GET", "/api/v1/vm.migrate", None).status, 404);
    let mut stalled = UnixStream::connect(&socket).unwrap();
    stalled.write_all(b"PUT /api/v1/vm.shutdown HTT").unwrap();
    timed_ping(&socket);

    let after = http(&socket, "GET", "/api/v1/vm.info", None).json();
    assert_eq!(before, after, "a refused request changed the VM");
    let done = vmm.run_command("echo still-alive");
    assert_eq!(field(&done, "rc"), Some(0));
    assert!(vmm.serial_lines().iter().any(|l| l == "still-alive"));
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(read_answer(&mut stalled).status, 408);
    assert_eq!(
        http(&socket, "GET", "/api/v1/vm.info", None).json()["state"],
        "Running"
    );
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn power_button_through_accordion_remote() {
    let dir = TempDir::new("api-button");
    let socket = socket_in(&dir.0);
    let mut vmm = booted_with_api("api-button", &dir);
    assert_eq!(remote_ok(&socket, &["power-button"]), "");
    vmm.wait_for("ACCORDION_POWER_BUTTON", BOOT_TIMEOUT);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "power-off after the button must exit 0: {status}"
    );
    assert!(!socket.exists());
}

#[test]
fn a_failed_boot_leaves_the_serial_log_alone() {
    let dir = TempDir::new("api-serial-log");
    let socket = socket_in(&dir.0);
    let _vmm = api_only("api-serial-log", &dir);
    let kernel = dir.path("kernel");
    let away = dir.path("kernel.away");
    // mov dx, 0x3f8; mov al, 'A'; out dx, al; then hlt forever.
    let code = [0x66, 0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xf4, 0xeb, 0xfd];
    std::fs::write(&kernel, common::tiny_elf_kernel(&code, 0x1000, true)).unwrap();
    let log = dir.path("serial.log");
    std::fs::write(&log, "the last run's log\n").unwrap();
    let config = serde_json::json!({
        "payload": {"kernel": kernel},
        "memory": {"size": 64u64 << 20},
        "serial": {"mode": "File", "file": log},
    });
    let put = |path: &str, body: Option<&[u8]>| {
        http(&socket, "PUT", &format!("/api/v1/{path}"), body).status
    };
    // A log file that does not exist yet is not created by a boot that fails.
    let new_log = dir.path("new.log");
    let mut new_config = config.clone();
    new_config["serial"]["file"] = serde_json::json!(new_log);
    assert_eq!(
        put("vm.create", Some(new_config.to_string().as_bytes())),
        204
    );
    std::fs::rename(&kernel, &away).unwrap();
    assert_eq!(put("vm.boot", None), 400);
    assert!(!new_log.exists(), "a failed boot created the serial log");
    assert_eq!(put("vm.delete", None), 204);

    std::fs::rename(&away, &kernel).unwrap();
    assert_eq!(put("vm.create", Some(config.to_string().as_bytes())), 204);
    std::fs::rename(&kernel, &away).unwrap();
    assert_eq!(put("vm.boot", None), 400);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "the last run's log\n"
    );
    // A boot that works starts the log afresh with what the guest writes.
    std::fs::rename(&away, &kernel).unwrap();
    assert_eq!(put("vm.boot", None), 204);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&log).unwrap() != "A" {
        assert!(
            Instant::now() < deadline,
            "serial log: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `vm.counters` of a paused VM (nothing moves): every port or MMIO exit is one access of
/// a bus range or of the bus's gaps, the serial port took at least one write per byte the
/// guest sent, and the guest's PCI probing reached the configuration ports.
fn exits_add_up(counters: &serde_json::Value) {
    let group = |name: &str| {
        counters[name]
            .as_object()
            .unwrap_or_else(|| panic!("no {name} in {counters}"))
            .clone()
    };
    let accesses = |name: &str| -> u64 {
        group(name)
            .iter()
            .filter(|(k, _)| !k.ends_with("_ns"))
            .map(|(_, v)| v.as_u64().expect("a count"))
            .sum()
    };
    let exits = group("vcpu-exits");
    let exit = |kind: &str| {
        exits[kind]
            .as_u64()
            .unwrap_or_else(|| panic!("{kind}: {counters}"))
    };
    assert_eq!(
        exit("io_in") + exit("io_out"),
        accesses("pio-accesses"),
        "{counters}"
    );
    assert_eq!(
        exit("mmio_read") + exit("mmio_write"),
        accesses("mmio-accesses"),
        "{counters}"
    );
    // An exit's time runs from KVM_RUN's return to the answer, so it holds its access's.
    let time = |name: &str| -> u64 {
        group(name)
            .iter()
            .filter(|(k, _)| k.ends_with("_ns"))
            .map(|(_, v)| v.as_u64().expect("a time"))
            .sum()
    };
    assert!(
        exit("io_in_ns") + exit("io_out_ns") >= time("pio-accesses"),
        "{counters}"
    );
    assert!(
        exit("mmio_read_ns") + exit("mmio_write_ns") >= time("mmio-accesses"),
        "{counters}"
    );
    let (pio, mmio) = (group("pio-accesses"), group("mmio-accesses"));
    let tx = counters["serial"]["tx_bytes"].as_u64().unwrap_or(0);
    assert!(pio["serial"].as_u64() >= Some(tx), "{counters}");
    assert!(pio["serial_ns"].as_u64() > Some(0), "{counters}");
    let config =
        pio["pci-config-io"].as_u64().unwrap_or(0) + mmio["pci-ecam"].as_u64().unwrap_or(0);
    assert!(config > 0, "no PCI configuration access: {counters}");
}
