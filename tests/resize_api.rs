//! `vm.resize` and `vm.resize-zone` end to end without a Linux guest, on any KVM: the real
//! binary boots a tiny kernel that halts its vCPU, and every step goes through the API
//! socket into the virtio-mem device and back out in `vm.info`. Without a driver in the
//! guest nothing is plugged: what is checked is the VMM's part, that a resize reaches the
//! device (its requested and usable sizes), the configuration (`hotplugged_size`, which a
//! reboot asks for again) and nothing else, in every state a VM can be in, and that a
//! refused resize changes nothing.

mod common;

use std::path::Path;

use common::api::{
    http, memory_device, remote, remote_err, remote_json, remote_ok, socket_in, spawn_with_api,
};
use common::process::wait_vcpus_parked;
use common::{halting_kernel, TempDir, Vmm, EXIT_TIMEOUT};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const BOOT_RAM: u64 = 64 * MIB;

/// `accordion-remote resize --memory BYTES`.
fn resize(socket: &Path, bytes: u64) -> std::process::Output {
    remote(socket, &["resize", "--memory", &bytes.to_string()])
}

/// What a refusal must leave as it was: the whole `vm.info` but the answers that move on
/// their own (without a guest driver, only `since_progress_ms`).
fn info(socket: &Path) -> serde_json::Value {
    let mut info = remote_json(socket, &["info"]);
    // The time since the last progress moves on its own.
    if let Some(devices) = info["memory"]["devices"].as_array_mut() {
        for device in devices {
            if let Some(d) = device.as_object_mut() {
                d.remove("since_progress_ms");
            }
        }
    }
    info
}

fn halting_vm(tag: &str, dir: &TempDir, memory: &[&str]) -> Vmm {
    let kernel = halting_kernel(dir);
    let mut args = vec!["--kernel", kernel.as_str(), "--serial", "off"];
    args.extend_from_slice(memory);
    spawn_with_api(tag, dir, &args)
}

fn shut_down(socket: &Path, mut vmm: Vmm) {
    remote_ok(socket, &["shutdown-vmm"]);
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", vmm.stderr());
}

#[test]
fn resize_reaches_the_device_and_the_configuration() {
    let dir = TempDir::new("resize-api");
    let socket = socket_in(&dir.0);
    let vmm = halting_vm(
        "resize-api",
        &dir,
        &[
            "--memory",
            "size=64M,hotplug_method=virtio-mem,hotplug_size=1G",
        ],
    );
    // vm.info, field by field.
    let vm = info(&socket);
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&vm),
        ["config", "memory", "memory_actual_size", "state"]
    );
    assert_eq!(vm["state"], "Running");
    assert_eq!(vm["memory_actual_size"], BOOT_RAM);
    assert_eq!(vm["memory"]["boot_ram"], BOOT_RAM);
    assert_eq!(vm["config"]["memory"]["size"], BOOT_RAM);
    assert_eq!(vm["config"]["memory"]["hotplug_size"], GIB);
    let dev = memory_device(&socket, "default");
    assert_eq!(
        keys(&dev),
        [
            "active",
            "addr",
            "backend",
            "block_size",
            "id",
            "needs_reset",
            "node",
            "plugged_size",
            "region_size",
            "requested_size",
            "resize_state",
            "since_progress_ms",
            "slot_size",
            "slots",
            "slots_mapped",
            "type",
            "unplugged_inaccessible",
            "usable_region_size"
        ]
    );
    assert_eq!(dev["type"], "virtio-mem");
    assert_eq!(dev["backend"], "anonymous");
    // The region starts above boot RAM and the 32-bit hole, block aligned.
    assert_eq!(dev["addr"], 1u64 << 32, "{dev}");
    assert_eq!(dev["region_size"], GIB);
    assert_eq!(dev["block_size"], 2 * MIB);
    assert_eq!(dev["requested_size"], 0);
    assert_eq!(dev["plugged_size"], 0);
    assert_eq!(dev["usable_region_size"], 0, "{dev}");
    assert_eq!(dev["active"], false, "no driver has started the device");
    assert_eq!(dev["needs_reset"], false);
    // 1 GiB in 128 MiB slots, none in KVM while nothing is plugged.
    assert_eq!(dev["slot_size"], 128 * MIB);
    assert_eq!(dev["slots"], 8);
    assert_eq!(dev["slots_mapped"], 0);
    assert_eq!(dev["unplugged_inaccessible"], true);

    // Grow, then shrink: the device asks for the virtio-mem part of the total.
    for total in [
        BOOT_RAM + 512 * MIB,
        BOOT_RAM + GIB,
        BOOT_RAM + 2 * MIB,
        BOOT_RAM,
    ] {
        let out = resize(&socket, total);
        assert!(out.status.success(), "{total}: {out:?}");
        let dev = memory_device(&socket, "default");
        let requested = total - BOOT_RAM;
        assert_eq!(dev["requested_size"], requested, "{dev}");
        let usable = dev["usable_region_size"].as_u64().unwrap();
        assert!(
            usable >= requested && usable <= GIB,
            "usable {usable} for requested {requested}: {dev}"
        );
        assert_eq!(dev["plugged_size"], 0, "nothing plugs without a driver");
        let info = info(&socket);
        assert_eq!(info["config"]["memory"]["hotplugged_size"], requested);
        assert_eq!(
            info["memory_actual_size"], BOOT_RAM,
            "only plugged memory counts"
        );
    }

    // Refusals: a 400 that names the problem, and nothing changes.
    assert_eq!(resize(&socket, BOOT_RAM + 256 * MIB).status.code(), Some(0));
    let before = info(&socket);
    for (body, needle) in [
        (BOOT_RAM + 256 * MIB + 4096, "block size"),
        (BOOT_RAM + GIB + 2 * MIB, "exceeds"),
        (BOOT_RAM - 2 * MIB, "boot"),
        (u64::MAX, "block size"),
        (u64::MAX / (2 * MIB) * (2 * MIB), "exceeds"),
    ] {
        let a = http(
            &socket,
            "PUT",
            "/api/v1/vm.resize",
            Some(format!(r#"{{"desired_ram": {body}}}"#).as_bytes()),
        );
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert!(a.error().contains(needle), "{body}: {a:?}");
        assert_eq!(
            info(&socket),
            before,
            "a refused resize to {body} changed the VM"
        );
    }
    let err = remote_err(&socket, &["resize-zone", "--id", "nope", "--size", "1G"]);
    assert!(err.contains("400") && err.contains("nope"), "{err}");
    assert_eq!(info(&socket), before);

    // accordion-remote's sizes: K, M, G suffixes and plain bytes reach the API as bytes;
    // a size it cannot read fails with status 1, names the option, and sends nothing.
    for (arg, requested) in [
        ("576M", 512 * MIB),
        ("1G", GIB - BOOT_RAM),
        ("67584K", 2 * MIB),
        (&*(BOOT_RAM + 4 * MIB).to_string(), 4 * MIB),
    ] {
        remote_ok(&socket, &["resize", "--memory", arg]);
        assert_eq!(
            memory_device(&socket, "default")["requested_size"],
            requested,
            "{arg}"
        );
    }
    let before = info(&socket);
    for bad in ["12Q", "", "1.5G", "1G5", "99999999999999G"] {
        let out = remote(&socket, &["resize", "--memory", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {stderr}");
        assert!(stderr.contains("--memory"), "{bad:?}: {stderr}");
        assert_eq!(info(&socket), before, "{bad:?}");
    }

    // Paused: the resize is taken (the device has it for when the guest runs again).
    remote_ok(&socket, &["pause"]);
    assert!(wait_vcpus_parked(vmm.pid()));
    assert!(resize(&socket, BOOT_RAM + 768 * MIB).status.success());
    assert_eq!(
        memory_device(&socket, "default")["requested_size"],
        768 * MIB
    );
    assert_eq!(info(&socket)["state"], "Paused");
    remote_ok(&socket, &["resume"]);

    // A reboot builds a new device that asks for the size last requested.
    remote_ok(&socket, &["reboot"]);
    let dev = memory_device(&socket, "default");
    assert_eq!(dev["requested_size"], 768 * MIB, "{dev}");
    assert_eq!(dev["plugged_size"], 0);
    assert_eq!(info(&socket)["state"], "Running");

    // Shut down (Created): no device to resize, 409, and the configuration stays.
    remote_ok(&socket, &["shutdown"]);
    let before = info(&socket);
    let a = http(
        &socket,
        "PUT",
        "/api/v1/vm.resize",
        Some(format!(r#"{{"desired_ram": {}}}"#, BOOT_RAM + GIB).as_bytes()),
    );
    assert_eq!(a.status, 409, "{a:?}");
    assert_eq!(info(&socket), before);
    // Booted again, the device starts from the configuration.
    remote_ok(&socket, &["boot"]);
    assert_eq!(
        memory_device(&socket, "default")["requested_size"],
        768 * MIB
    );
    shut_down(&socket, vmm);
}

#[test]
fn resize_before_create_and_before_boot_is_refused() {
    let dir = TempDir::new("resize-api-created");
    let socket = socket_in(&dir.0);
    let kernel = halting_kernel(&dir);
    let vmm = spawn_with_api("resize-api-created", &dir, &[]);
    let body = format!(r#"{{"desired_ram": {}}}"#, BOOT_RAM + GIB);
    let put = |path: &str, body: &str| {
        http(
            &socket,
            "PUT",
            &format!("/api/v1/{path}"),
            Some(body.as_bytes()),
        )
    };
    assert_eq!(put("vm.resize", &body).status, 404);
    let zone = r#"{"id": "mem0", "desired_ram": 1073741824}"#;
    assert_eq!(put("vm.resize-zone", zone).status, 404);

    let config = serde_json::json!({
        "payload": {"kernel": kernel},
        "memory": {"size": BOOT_RAM, "hotplug_method": "VirtioMem", "hotplug_size": GIB},
        "serial": {"mode": "Off"},
    });
    assert_eq!(put("vm.create", &config.to_string()).status, 204);
    let before = info(&socket);
    let a = put("vm.resize", &body);
    assert_eq!(a.status, 409, "{a:?}");
    assert!(a.error().contains("not running"), "{a:?}");
    assert_eq!(info(&socket), before);
    shut_down(&socket, vmm);
}

#[test]
fn resize_zone_changes_only_its_zone_and_survives_a_reboot() {
    let dir = TempDir::new("resize-api-zones");
    let socket = socket_in(&dir.0);
    let vmm = halting_vm(
        "resize-api-zones",
        &dir,
        &[
            "--memory",
            "size=0",
            "--memory-zone",
            "id=mem0,size=32M,hotplug_size=1G",
            "--memory-zone",
            "id=mem1,size=32M,hotplug_size=512M,hotplugged_size=128M",
        ],
    );
    assert_eq!(memory_device(&socket, "mem1")["requested_size"], 128 * MIB);
    // The whole-VM resize does not apply to zones.
    let err = remote_err(&socket, &["resize", "--memory", "1G"]);
    assert!(
        err.contains("400") && err.contains("vm.resize-zone"),
        "{err}"
    );

    remote_ok(&socket, &["resize-zone", "--id", "mem0", "--size", "288M"]);
    assert_eq!(memory_device(&socket, "mem0")["requested_size"], 256 * MIB);
    assert_eq!(memory_device(&socket, "mem1")["requested_size"], 128 * MIB);
    let zones = &info(&socket)["config"]["memory"]["zones"];
    assert_eq!(zones[0]["hotplugged_size"], 256 * MIB, "{zones}");
    assert_eq!(zones[1]["hotplugged_size"], 128 * MIB, "{zones}");

    // Too big for mem1's region: refused, nothing changes.
    let before = info(&socket);
    let err = remote_err(&socket, &["resize-zone", "--id", "mem1", "--size", "1G"]);
    assert!(err.contains("400") && err.contains("exceeds"), "{err}");
    assert_eq!(info(&socket), before);

    remote_ok(&socket, &["reboot"]);
    assert_eq!(memory_device(&socket, "mem0")["requested_size"], 256 * MIB);
    assert_eq!(memory_device(&socket, "mem1")["requested_size"], 128 * MIB);
    shut_down(&socket, vmm);
}

#[test]
fn a_resize_the_guest_does_not_follow_is_reported_stalled_once() {
    let dir = TempDir::new("resize-stall");
    let socket = socket_in(&dir.0);
    let events = dir.path("events");
    let monitor = format!("path={}", events.display());
    let vmm = halting_vm(
        "resize-stall",
        &dir,
        &[
            "--memory",
            "size=64M,hotplug_size=1G,stall_timeout_s=1",
            "--event-monitor",
            &monitor,
        ],
    );
    let state = |socket: &Path| memory_device(socket, "default")["resize_state"].clone();
    let stalls = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"resize-stalled\""))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(state(&socket), "settled", "nothing asked, nothing plugged");
    assert!(resize(&socket, BOOT_RAM + 128 * MIB).status.success());
    assert_eq!(state(&socket), "converging");
    // No driver: nothing moves. After the timeout it is stalled, and said so once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while state(&socket) != "stalled" {
        assert!(std::time::Instant::now() < deadline, "never stalled");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let dev = memory_device(&socket, "default");
    assert!(dev["since_progress_ms"].as_u64() >= Some(1000), "{dev}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let seen = stalls();
    assert_eq!(seen.len(), 1, "one event per stall: {seen:?}");
    assert!(
        seen[0].contains("\"requested_size\":\"134217728\""),
        "{}",
        seen[0]
    );
    // A new size is progress: converging again, and a second stall is a second event.
    assert!(resize(&socket, BOOT_RAM + 256 * MIB).status.success());
    assert_eq!(state(&socket), "converging");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stalls().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second stall event"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Back to what is plugged: settled.
    assert!(resize(&socket, BOOT_RAM).status.success());
    assert_eq!(state(&socket), "settled");
    shut_down(&socket, vmm);
}
