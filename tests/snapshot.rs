//! Snapshot and restore with real guests: a paused VM saved to a directory and brought back
//! in a new `accordion` process, the guest going on where it stopped (docs/snapshot.md).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::api::{memory_device, remote, remote_err, remote_json, remote_ok, socket_in};
use common::api::{spawn_with_api, wait_for_socket, SOCKET_TIMEOUT};
use common::process::thread_seccomp_modes;
use common::vmem::RESIZE_TIMEOUT;
use common::vmem::{boot, events, guest_facts, guest_line, plug_write_unplug, resize};
use common::vmem::{BOOT_RAM, GIB, MIB};
use common::{field, guest, TempDir, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

/// What a restored guest must still have.
struct Facts {
    /// The pattern's checksum and the MemTotal line.
    guest: (String, String),
    /// The device's memslots in KVM at the snapshot.
    slots_mapped: serde_json::Value,
}

/// A restored guest: it answers on its console, has what it had (in the memslots too:
/// exactly the ones holding plugged blocks), and resizes both ways.
fn check_restored(vmm: &mut Vmm, socket: &Path, facts: &Facts, plugged: u64) {
    let dev = memory_device(socket, "default");
    assert_eq!(dev["slots_mapped"], facts.slots_mapped, "{dev}");
    assert_eq!(
        &guest_facts(vmm),
        &facts.guest,
        "the pattern or MemTotal changed"
    );
    let dev = memory_device(socket, "default");
    assert_eq!(dev["plugged_size"], plugged, "{dev}");
    assert_eq!(dev["requested_size"], plugged, "{dev}");
    assert_eq!(
        remote_json(socket, &["info"])["memory_actual_size"],
        BOOT_RAM + plugged
    );
    resize(socket, plugged + 512 * MIB);
    resize(socket, plugged - 256 * MIB);
    // The pattern survived the guest moving pages out of the unplugged blocks.
    assert_eq!(
        guest_line(vmm, "PATTERN", "md5sum /p/pattern"),
        facts.guest.0
    );
    let threads = thread_seccomp_modes(vmm.pid());
    assert!(threads.iter().all(|(_, mode)| *mode == 2), "{threads:?}");
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn a_snapshot_comes_back_in_a_new_process_and_holds_only_plugged_memory() {
    let dir = TempDir::new("snapshot");
    let socket = socket_in(&dir.0);
    let snap = dir.path("snap");
    let url = format!("file://{}", snap.display());
    let mut source = boot("snapshot-source", &dir);
    let facts = source.explain_failure(|vmm| {
        let guest = plug_write_unplug(vmm, &socket);

        // Not while it runs.
        let refused = remote_err(&socket, &["snapshot", &url]);
        assert!(refused.contains("paused"), "{refused}");
        assert!(!snap.exists());

        remote_ok(&socket, &["pause"]);
        let slots_mapped = memory_device(&socket, "default")["slots_mapped"].clone();
        assert!(slots_mapped.as_u64() > Some(0), "{slots_mapped}");
        remote_ok(&socket, &["snapshot", &url]);
        // Not over an existing one; the first is untouched.
        let refused = remote_err(&socket, &["snapshot", &url]);
        assert!(refused.contains("exists"), "{refused}");
        assert_eq!(remote_json(&socket, &["info"])["state"], "Paused");
        Facts {
            guest,
            slots_mapped,
        }
    });

    // Boot RAM and the plugged GiB, nothing of the other 63 GiB of the region; zero pages
    // are holes.
    let memory = std::fs::metadata(snap.join("memory-ranges")).expect("memory-ranges");
    assert_eq!(memory.len(), BOOT_RAM + GIB, "the memory file's length");
    let allocated = memory.blocks() * 512;
    assert!(
        allocated <= (BOOT_RAM + GIB) * 101 / 100,
        "{allocated} bytes allocated for {} of boot RAM and plugged memory",
        BOOT_RAM + GIB
    );
    assert!(snap.join("state.json").exists());
    let snapshotted = events(&dir.0, "events.jsonl", "snapshotted");
    assert_eq!(snapshotted.len(), 1, "{snapshotted:?}");
    let written: u64 = snapshotted[0]["properties"]["memory_bytes"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("memory_bytes");
    assert!(written >= 320 * MIB && written <= allocated, "{written}");

    // The source goes on as it was.
    remote_ok(&socket, &["resume"]);
    assert_eq!(guest_facts(&mut source), facts.guest);
    remote_ok(&socket, &["shutdown-vmm"]);
    assert!(source.wait_exit(EXIT_TIMEOUT).success());

    // A new process, from the command line, running at once.
    let restore = format!("source_url={url},resume=on");
    let api = format!("path={}", socket.display());
    let mut restored = Vmm::spawn(
        "snapshot-restored",
        &["--api-socket", &api, "--restore", &restore],
    );
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    restored.explain_failure(|vmm| {
        assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
        check_restored(vmm, &socket, &facts, GIB);
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(restored.wait_exit(EXIT_TIMEOUT).success());

    // Again, with memory faulted in from the file as the guest touches it.
    let restore = format!("source_url={url},resume=on,memory_restore_mode=ondemand");
    let monitor = format!("path={}", dir.path("restore-events.jsonl").display());
    let mut lazy = Vmm::spawn(
        "snapshot-on-demand",
        &[
            "--api-socket",
            &api,
            "--event-monitor",
            &monitor,
            "--restore",
            &restore,
        ],
    );
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    lazy.explain_failure(|vmm| {
        // The API answers once the restore is done.
        assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
        let threads = thread_seccomp_modes(vmm.pid());
        assert!(
            threads.iter().any(|(name, _)| name == "memory-loader"),
            "no loader thread in {threads:?}"
        );
        check_restored(vmm, &socket, &facts, GIB);
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(lazy.wait_exit(EXIT_TIMEOUT).success());
    // Nothing was read before the guest ran.
    let restored = events(&dir.0, "restore-events.jsonl", "restored");
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0]["properties"]["memory_bytes"], "0");

    // Again from the same snapshot, through the API, paused until vm.resume.
    let mut again = spawn_with_api("snapshot-again", &dir, &[]);
    again.explain_failure(|vmm| {
        remote_ok(&socket, &["restore", &format!("source_url={url}")]);
        assert_eq!(remote_json(&socket, &["info"])["state"], "Paused");
        // A second restore on a VMM that has a VM is refused.
        let refused = remote_err(&socket, &["restore", &format!("source_url={url}")]);
        assert!(refused.contains("without a VM"), "{refused}");
        remote_ok(&socket, &["resume"]);
        check_restored(vmm, &socket, &facts, GIB);
        // And it reboots: a fresh guest from the saved configuration.
        remote_ok(&socket, &["reboot"]);
        vmm.wait_for(READY, BOOT_TIMEOUT);
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(again.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn bad_snapshots_and_bad_restores_are_refused_and_change_nothing() {
    let dir = TempDir::new("snapshot-bad");
    let socket = socket_in(&dir.0);
    let mut source = boot("snapshot-bad-source", &dir);
    let good = dir.path("good");
    source.explain_failure(|vmm| {
        resize(&socket, 256 * MIB);
        remote_ok(&socket, &["pause"]);
        // Destinations that are not directories to create.
        for (url, says) in [
            ("/no/scheme", "file://"),
            ("file://relative", "absolute"),
            ("file:///proc/accordion-snapshot", "cannot create"),
            ("file:///nonexistent/parent/snap", "cannot create"),
        ] {
            let e = remote_err(&socket, &["snapshot", url]);
            assert!(e.contains(says), "{url}: {e}");
        }
        remote_ok(
            &socket,
            &["snapshot", &format!("file://{}", good.display())],
        );
        assert_eq!(remote_json(&socket, &["info"])["state"], "Paused");
        remote_ok(&socket, &["resume"]);
        let done = vmm.run_command("true");
        assert_eq!(field(&done, "rc"), Some(0));
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(source.wait_exit(EXIT_TIMEOUT).success());

    // Broken copies of the good snapshot: each refused with its reason, nothing started.
    let copy = |name: &str| {
        let to = dir.path(name);
        std::fs::create_dir(&to).unwrap();
        for file in ["state.json", "memory-ranges"] {
            std::fs::copy(good.join(file), to.join(file)).unwrap();
        }
        to
    };
    let state_of = |snap: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(snap.join("state.json")).unwrap()).unwrap()
    };
    let write_state = |snap: &Path, state: &serde_json::Value| {
        std::fs::write(snap.join("state.json"), state.to_string()).unwrap();
    };
    let mut cases: Vec<(std::path::PathBuf, &str)> = vec![(dir.path("missing"), "cannot read")];
    let truncated = copy("truncated");
    let len = std::fs::metadata(truncated.join("memory-ranges"))
        .unwrap()
        .len();
    std::fs::File::options()
        .write(true)
        .open(truncated.join("memory-ranges"))
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    cases.push((truncated, "does not fit"));
    let corrupted = copy("corrupted");
    std::fs::write(
        corrupted.join("state.json"),
        b"{\"format\": \"accordion-snap",
    )
    .unwrap();
    cases.push((corrupted, "not an Accordion snapshot"));
    let version = copy("version");
    let mut state = state_of(&version);
    state["version"] = 99.into();
    write_state(&version, &state);
    cases.push((version, "version 99"));
    let outside = copy("outside");
    let mut state = state_of(&outside);
    // A range moved into the unplugged part of the region.
    state["memory"][1]["gpa"] = (state["memory"][1]["gpa"].as_u64().unwrap() + 32 * GIB).into();
    write_state(&outside, &state);
    cases.push((outside, "neither boot RAM nor plugged"));
    let run = copy("run");
    let mut state = state_of(&run);
    state["devices"]["memory_devices"][0]["mem"]["plugged"][0][1] = (1u64 << 40).into();
    write_state(&run, &state);
    cases.push((run, "plugged run"));

    let mut vmm = spawn_with_api("snapshot-bad-restore", &dir, &[]);
    vmm.explain_failure(|_| {
        for (snap, says) in &cases {
            let url = format!("file://{}", snap.display());
            let e = remote_err(&socket, &["restore", &format!("source_url={url}")]);
            assert!(e.contains(says), "{}: {e}", snap.display());
            // Nothing was created.
            let info = remote(&socket, &["info"]);
            assert!(!info.status.success(), "a VM exists after a failed restore");
        }
        // The good one still restores on this VMM after all that.
        remote_ok(
            &socket,
            &[
                "restore",
                &format!("source_url=file://{},resume=on", good.display()),
            ],
        );
        assert_eq!(remote_json(&socket, &["info"])["state"], "Running");
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());

    // On the command line: a non-zero exit that names the option.
    let (status, stderr) = common::run_to_exit(&[
        "--restore",
        &format!("source_url=file://{}", dir.path("missing").display()),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("--restore"), "{stderr}");
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn two_zones_on_two_nodes_come_back_on_their_nodes() {
    let dir = TempDir::new("snapshot-numa");
    let socket = socket_in(&dir.0);
    let api = format!("path={}", socket.display());
    let snap = dir.path("snap");
    let url = format!("file://{}", snap.display());
    let mut source = Vmm::boot_guest(
        "snapshot-numa",
        &guest().vmlinux,
        "",
        &[
            "--api-socket",
            &api,
            "--cpus",
            "boot=2",
            "--memory",
            "size=0",
            "--memory-zone",
            "id=mem0,size=256M,hotplug_size=1G",
            "--memory-zone",
            "id=mem1,size=256M,hotplug_size=1G",
            "--numa",
            "guest_numa_id=0,cpus=0,memory_zones=mem0",
            "--numa",
            "guest_numa_id=1,cpus=1,memory_zones=mem1",
        ],
    );
    source.wait_for(READY, BOOT_TIMEOUT);
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    let node_kb = |vmm: &mut Vmm, node: u32| -> String {
        guest_line(
            vmm,
            &format!("NODE{node}"),
            &format!("grep MemTotal /sys/devices/system/node/node{node}/meminfo"),
        )
    };
    let plugged = |id: &str| memory_device(&socket, id)["plugged_size"].clone();
    let before = source.explain_failure(|vmm| {
        remote_ok(&socket, &["resize-zone", "--id", "mem1", "--size", "512M"]);
        let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
        while plugged("mem1") != 256 * MIB {
            assert!(std::time::Instant::now() < deadline, "mem1 did not plug");
            std::thread::sleep(Duration::from_millis(200));
        }
        let before = (node_kb(vmm, 0), node_kb(vmm, 1));
        remote_ok(&socket, &["pause"]);
        remote_ok(&socket, &["snapshot", &url]);
        remote_ok(&socket, &["shutdown-vmm"]);
        before
    });
    assert!(source.wait_exit(EXIT_TIMEOUT).success());

    let restore = format!("source_url={url},resume=on");
    let mut restored = Vmm::spawn(
        "snapshot-numa-restored",
        &["--api-socket", &api, "--restore", &restore],
    );
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    restored.explain_failure(|vmm| {
        assert_eq!((node_kb(vmm, 0), node_kb(vmm, 1)), before);
        assert_eq!(plugged("mem0"), 0);
        assert_eq!(plugged("mem1"), 256 * MIB);
        assert_eq!(memory_device(&socket, "mem1")["node"], 1);
        // Both vCPUs run: a command on each.
        for cpu in 0..2 {
            let done = vmm.run_command(&format!("taskset -c {cpu} true"));
            assert_eq!(field(&done, "rc"), Some(0), "cpu {cpu}: {done}");
        }
        remote_ok(&socket, &["resize-zone", "--id", "mem0", "--size", "512M"]);
        let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
        while plugged("mem0") != 256 * MIB {
            assert!(std::time::Instant::now() < deadline, "mem0 did not plug");
            std::thread::sleep(Duration::from_millis(200));
        }
        remote_ok(&socket, &["shutdown-vmm"]);
    });
    assert!(restored.wait_exit(EXIT_TIMEOUT).success());
}
