//! Guest memory layout with virtio-mem regions: what the guest learns from the SRAT.
//! (Resizing comes with the virtio-mem device.)

mod common;

use common::{field, guest, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn hotplug_region_is_in_the_srat_and_not_in_ram() {
    // 512 MiB of boot RAM ends below 4 GiB: the 2 GiB region starts at 4 GiB.
    let mut vmm = Vmm::boot_guest(
        "srat-hotplug",
        &guest().vmlinux,
        "",
        &[
            "--memory",
            "size=512M,hotplug_method=virtio-mem,hotplug_size=2G",
        ],
    );
    let ready = vmm.wait_for(READY, BOOT_TIMEOUT);
    let kb = field(&ready, "memtotal_kb").expect("memtotal_kb in READY");
    assert!(
        kb < 512 * 1024,
        "the region must not be RAM at boot: MemTotal {kb} kB"
    );
    let done = vmm.run_command("dmesg | grep 'SRAT: Node'");
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
    assert!(
        vmm.serial_lines()
            .iter()
            .any(|l| l.contains("[mem 0x100000000-0x17fffffff] hotplug")),
        "the guest did not see the hotplug range in the SRAT"
    );
    vmm.send("poweroff -f");
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
}

use std::path::Path;
use std::time::Duration;

use common::api::{
    assert_matches_schema, http, memory_device, remote_err, remote_json, remote_ok, socket_in,
    wait_for_socket, SOCKET_TIMEOUT,
};
use common::process::thread_seccomp_modes;
use common::TempDir;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Plugging is quick; unplugging makes the guest migrate pages, which in the nested test
/// host takes about 1.5 s per 128 MiB.
const RESIZE_TIMEOUT: Duration = Duration::from_secs(240);

/// The test guest with an API socket and extra options; returns it with its MemTotal at
/// READY (boot RAM as the guest counts it).
fn boot_with(tag: &str, dir: &TempDir, args: &[&str]) -> (Vmm, u64) {
    boot_with_cmdline(tag, dir, "", args)
}

/// As [`boot_with`], with `extra` added to the guest's kernel command line.
fn boot_with_cmdline(tag: &str, dir: &TempDir, extra: &str, args: &[&str]) -> (Vmm, u64) {
    let socket = socket_in(&dir.0);
    let api = format!("path={}", socket.display());
    let events = format!("path={}", dir.path("events.jsonl").display());
    let mut all = vec![
        "--api-socket",
        api.as_str(),
        "--event-monitor",
        events.as_str(),
    ];
    all.extend_from_slice(args);
    let mut vmm = Vmm::boot_guest(tag, &guest().vmlinux, extra, &all);
    let ready = vmm.wait_for(READY, BOOT_TIMEOUT);
    wait_for_socket(&socket, SOCKET_TIMEOUT);
    let kb = field(&ready, "memtotal_kb").expect("memtotal_kb");
    (vmm, kb)
}

fn wait_memtotal(vmm: &mut Vmm, kb: u64) {
    vmm.wait_for(&format!("MEMTOTAL {kb} kB"), RESIZE_TIMEOUT);
}

/// No virtio_mem error or warning in the guest's kernel log.
fn assert_clean_guest_log(vmm: &mut Vmm) {
    let done = vmm.run_command("dmesg | grep -i virtio_mem | grep -i -E 'error|fail|warn|broken'");
    assert_eq!(
        field(&done, "rc"),
        Some(1),
        "virtio_mem complained:\n{:?}",
        vmm.serial_lines()
    );
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn grow_and_shrink_land_on_the_exact_memtotal() {
    let dir = TempDir::new("vmem-resize");
    let socket = socket_in(&dir.0);
    let (mut vmm, base) = boot_with(
        "vmem-resize",
        &dir,
        &[
            "--memory",
            "size=1G,hotplug_method=virtio-mem,hotplug_size=4G",
        ],
    );
    let dev = memory_device(&socket, "default");
    assert_eq!(dev["region_size"], 4 * GIB);
    assert_eq!(dev["block_size"], 2 * MIB);
    assert_eq!(dev["plugged_size"], 0);

    for (total, plugged) in [
        (2 * GIB, GIB),
        (4 * GIB, 3 * GIB),
        (GIB + 512 * MIB, 512 * MIB),
        (GIB, 0),
    ] {
        remote_ok(
            &socket,
            &["resize", "--memory", &format!("{}M", total / MIB)],
        );
        wait_memtotal(&mut vmm, base + plugged / 1024);
        let dev = memory_device(&socket, "default");
        assert_eq!(dev["requested_size"], plugged);
        assert_eq!(dev["plugged_size"], plugged, "{dev}");
        assert_eq!(
            remote_json(&socket, &["info"])["memory_actual_size"],
            GIB + plugged
        );
        // Slots follow plugging: the region's slots are 128 MiB, the guest's memory blocks
        // too, and Linux adds a memory block exactly while it holds plugged blocks.
        // Both settle just after the sizes do (the device unmaps after its answer, the guest
        // removes a block after its unplug), so wait for them to agree.
        assert_eq!(dev["slot_size"], 128 * MIB);
        let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
        let (slots, blocks) = loop {
            let blocks = guest_memory_blocks_from(&mut vmm, (4 * GIB) / (128 * MIB));
            let slots = memory_device(&socket, "default")["slots_mapped"].as_u64();
            if slots == Some(blocks) || std::time::Instant::now() >= deadline {
                break (slots, blocks);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(
            slots,
            Some(blocks),
            "slots in KVM against the guest's memory blocks"
        );
        assert!(
            blocks >= plugged.div_ceil(128 * MIB),
            "{blocks} blocks for {plugged}"
        );
    }
    // Real answers with a plugged virtio-mem device, against the API's contract.
    assert_matches_schema("VmInfo", &remote_json(&socket, &["info"]));
    let counters = remote_json(&socket, &["counters"]);
    assert_matches_schema("VmCounters", &counters);
    assert_device_counters(&counters["virtio-mem-default"]);
    // Every thread, the device's own included, runs under its seccomp filter.
    let threads = thread_seccomp_modes(vmm.pid());
    assert!(
        threads.iter().any(|(name, _)| name == "virtio-mem-defa"),
        "no device thread in {threads:?}"
    );
    assert!(threads.iter().all(|(_, mode)| *mode == 2), "{threads:?}");
    assert_plugged_size_events(&dir, "default", &[GIB, 3 * GIB, 512 * MIB, 0]);
    assert_clean_guest_log(&mut vmm);
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn with_msix_off_the_device_interrupts_through_intx() {
    // `pci=nomsi`: Linux keeps MSI-X off, and virtio-pci falls back to INTx and the ISR.
    let dir = TempDir::new("vmem-intx");
    let socket = socket_in(&dir.0);
    let (mut vmm, base) = boot_with_cmdline(
        "vmem-intx",
        &dir,
        "pci=nomsi",
        &[
            "--memory",
            "size=1G,hotplug_method=virtio-mem,hotplug_size=2G",
        ],
    );
    for (total, plugged) in [(2 * GIB, GIB), (GIB + 256 * MIB, 256 * MIB), (GIB, 0)] {
        remote_ok(
            &socket,
            &["resize", "--memory", &format!("{}M", total / MIB)],
        );
        wait_memtotal(&mut vmm, base + plugged / 1024);
        assert_eq!(memory_device(&socket, "default")["plugged_size"], plugged);
    }
    // The device's line: an IOAPIC pin of the link the DSDT routes INTA# to, edge
    // triggered, and it counted the resizes' interrupts. /proc/interrupts reads
    // `16:  COUNT...  IO-APIC  16-edge  virtio0`, one count per CPU.
    vmm.run_command("echo INTXLINE $(grep virtio /proc/interrupts)");
    let line = vmm
        .serial_lines()
        .iter()
        .rev()
        .find(|l| l.starts_with("INTXLINE "))
        .cloned()
        .unwrap_or_default();
    assert!(
        line.contains("IO-APIC") && line.contains("-edge"),
        "virtio-mem is not on an IOAPIC edge line: {line}"
    );
    assert!(
        !line.contains("MSI"),
        "MSI-X in use despite pci=nomsi: {line}"
    );
    let count: u64 = line
        .split_whitespace()
        .skip(2)
        .map_while(|w| w.parse::<u64>().ok())
        .sum();
    assert!(count >= 3, "{count} interrupts on the INTx line: {line}");
    let link = vmm.run_command("dmesg | grep -c 'Interrupt link LNK0 configured'");
    assert_eq!(field(&link, "rc"), Some(0), "no LNK0 in the guest's log");
    assert_clean_guest_log(&mut vmm);
}

/// How many memory blocks the guest has from block number `first` up (its hot-added ones,
/// when `first` is the region's first block).
fn guest_memory_blocks_from(vmm: &mut Vmm, first: u64) -> u64 {
    guest_number(
        vmm,
        "BLOCKS",
        &format!(
            "echo $(ls -d /sys/devices/system/memory/memory* | sed 's/.*memory//' | \
             awk '$1 >= {first}' | wc -l) kB"
        ),
        0,
    )
}

/// A virtio-mem device's `vm.counters` after grows and shrinks: every counter docs/memory.md
/// lists, and no more; every request answered once, and timed once; no failure.
fn assert_device_counters(c: &serde_json::Value) {
    let get = |key: &str| {
        c[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {key} in {c}"))
    };
    let mut keys: Vec<&str> = c
        .as_object()
        .expect("counters")
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    let mut documented = vec![
        "plug_requests",
        "unplug_requests",
        "unplug_all_requests",
        "state_requests",
        "malformed_requests",
        "ack_responses",
        "nack_responses",
        "busy_responses",
        "error_responses",
        "backend_errors",
        "discard_errors",
        "queue_notifications",
        "latency_count",
        "latency_total_ns",
        "latency_max_ns",
        "latency_median_ns",
        "discard_count",
        "discard_total_ns",
        "discard_max_ns",
        "discard_median_ns",
        "slots_mapped",
        "unplugged_reads",
        "unplugged_writes",
    ];
    documented.sort();
    assert_eq!(keys, documented);
    let requests = get("plug_requests")
        + get("unplug_requests")
        + get("unplug_all_requests")
        + get("state_requests");
    let answers = get("ack_responses")
        + get("nack_responses")
        + get("busy_responses")
        + get("error_responses");
    assert!(
        get("plug_requests") > 0 && get("unplug_requests") > 0,
        "{c}"
    );
    assert_eq!(answers, requests, "every request has one answer: {c}");
    assert_eq!(get("latency_count"), requests, "{c}");
    assert!(get("latency_max_ns") >= get("latency_median_ns"), "{c}");
    assert!(get("latency_total_ns") >= get("latency_max_ns"), "{c}");
    assert!(get("discard_count") > 0, "shrinking gave memory back: {c}");
    assert!(get("discard_total_ns") >= get("discard_max_ns"), "{c}");
    assert!(
        get("queue_notifications") > 0 && get("queue_notifications") <= requests,
        "{c}"
    );
    for zero in [
        "malformed_requests",
        "error_responses",
        "busy_responses",
        "backend_errors",
        "discard_errors",
    ] {
        assert_eq!(get(zero), 0, "{zero}: {c}");
    }
}

/// The `plugged-size-changed` events of device `id`: a chain from 0 (each event's
/// `previous_size` is the last one's `plugged_size`) that reaches each of `targets` in
/// order, with the `requested_size` of its time, and ends at the last target.
fn assert_plugged_size_events(dir: &TempDir, id: &str, targets: &[u64]) {
    let text = std::fs::read_to_string(dir.path("events.jsonl")).expect("events file");
    let prop = |e: &serde_json::Value, key: &str| -> u64 {
        e["properties"][key]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {key} in {e}"))
    };
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|e: &serde_json::Value| {
            e["source"] == "virtio-mem"
                && e["event"] == "plugged-size-changed"
                && e["properties"]["id"] == id
        })
        .collect();
    let mut last = 0;
    let mut next_target = targets.iter().peekable();
    for e in &events {
        assert_eq!(prop(e, "previous_size"), last, "a gap before {e}");
        last = prop(e, "plugged_size");
        if next_target.peek() == Some(&&last) {
            assert_eq!(prop(e, "requested_size"), last, "{e}");
            next_target.next();
        }
    }
    assert!(
        next_target.next().is_none(),
        "the events never reached each of {targets:?}:\n{text}"
    );
    assert_eq!(Some(&last), targets.last(), "{text}");
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn bad_resizes_are_refused_and_change_nothing() {
    let dir = TempDir::new("vmem-bad");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = boot_with(
        "vmem-bad",
        &dir,
        &["--memory", "size=1G,hotplug_size=2G,hotplugged_size=512M"],
    );
    let before = memory_device(&socket, "default");
    for (args, needle) in [
        (vec!["resize", "--memory", "1025M"], "block size"),
        (vec!["resize", "--memory", "4G"], "exceeds"),
        (vec!["resize", "--memory", "512M"], "below the boot RAM"),
        (
            vec!["resize-zone", "--id", "nope", "--size", "1G"],
            "no memory zone with id nope",
        ),
    ] {
        let err = remote_err(&socket, &args);
        assert!(
            err.contains("400") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let a = http(
        &socket,
        "PUT",
        "/api/v1/vm.resize",
        Some(br#"{"desired_ram": "2G"}"#),
    );
    assert_eq!(a.status, 400, "{a:?}");
    let a = http(
        &socket,
        "PUT",
        "/api/v1/vm.resize",
        Some(br#"{"desired_ram": 2147483648, "extra": 1}"#),
    );
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(
        before["requested_size"],
        memory_device(&socket, "default")["requested_size"]
    );
    assert_eq!(before["requested_size"], 512 * MIB);
    let done = vmm.run_command("echo alive");
    assert_eq!(field(&done, "rc"), Some(0));
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn a_vm_without_virtio_mem_refuses_resize() {
    let dir = TempDir::new("vmem-none");
    let socket = socket_in(&dir.0);
    let (_vmm, _) = boot_with("vmem-none", &dir, &["--memory", "size=512M"]);
    let err = remote_err(&socket, &["resize", "--memory", "1G"]);
    assert!(
        err.contains("400") && err.contains("no virtio-mem device"),
        "{err}"
    );
    assert_eq!(
        remote_json(&socket, &["info"])["memory"]["devices"],
        serde_json::json!([])
    );
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn hotplugged_size_is_plugged_at_boot_and_again_after_reboot() {
    let dir = TempDir::new("vmem-boot");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = boot_with(
        "vmem-boot",
        &dir,
        &["--memory", "size=1G,hotplug_size=2G,hotplugged_size=512M"],
    );
    // The driver plugs hotplugged_size as it probes, perhaps before READY: wait for the
    // device to report it and for the guest to have onlined it all, then read MemTotal.
    wait_plugged(&socket, "default", 512 * MIB);
    let at_boot = settled_memtotal(&mut vmm);
    remote_ok(&socket, &["resize", "--memory", "2G"]);
    wait_memtotal(&mut vmm, at_boot + 512 * 1024);
    let before_reboot = settled_memtotal(&mut vmm);
    assert_eq!(before_reboot, at_boot + 512 * 1024);
    assert_eq!(
        remote_json(&socket, &["info"])["config"]["memory"]["hotplugged_size"],
        GIB
    );
    // A reboot starts with nothing plugged, then the new guest is asked for the same size.
    vmm.send("reboot -f");
    vmm.wait_for(READY, BOOT_TIMEOUT);
    wait_plugged(&socket, "default", GIB);
    assert_eq!(settled_memtotal(&mut vmm), before_reboot);
    assert_clean_guest_log(&mut vmm);
}

/// Waits until device `id` reports `bytes` plugged.
fn wait_plugged(socket: &Path, id: &str, bytes: u64) {
    let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
    while memory_device(socket, id)["plugged_size"] != bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} did not reach {bytes} plugged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guest's MemTotal in kB once it stops changing (the device reports blocks plugged
/// before the guest has onlined all of them): two reads a second apart agree.
fn settled_memtotal(vmm: &mut Vmm) -> u64 {
    let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
    let mut last = memtotal_now(vmm);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = memtotal_now(vmm);
        if now == last {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "MemTotal never settled"
        );
        last = now;
    }
}

/// The guest's MemTotal in kB, read now.
fn memtotal_now(vmm: &mut Vmm) -> u64 {
    guest_number(vmm, "NOWTOTAL", "grep MemTotal /proc/meminfo", 1)
}

/// Runs `echo TAG $(COMMAND)` in the guest and returns the number in word `index` of
/// COMMAND's output. The kernel's own console messages can land in the middle of the line
/// (the console is shared): a line that does not parse is read again, up to 10 times.
fn guest_number(vmm: &mut Vmm, tag: &str, command: &str, index: usize) -> u64 {
    let mut last = String::new();
    for _ in 0..10 {
        vmm.run_command(&format!("echo {tag} $({command})"));
        last = vmm
            .serial_lines()
            .iter()
            .rev()
            .find(|l| l.starts_with(&format!("{tag} ")))
            .cloned()
            .unwrap_or_default();
        let words: Vec<&str> = last.split_whitespace().skip(1).collect();
        // The whole line must be COMMAND's output: a kernel message in it adds words.
        if let Some(n) = words.get(index).and_then(|v| v.parse().ok()) {
            if words.last() == Some(&"kB") {
                return n;
            }
        }
    }
    panic!("no number in the guest's answer to '{command}': '{last}'")
}

/// The guest's MemTotal of NUMA node `node` in kB, read now.
fn node_kb(vmm: &mut Vmm, node: u32) -> u64 {
    guest_number(
        vmm,
        &format!("NODE{node}"),
        &format!("grep MemTotal /sys/devices/system/node/node{node}/meminfo"),
        3,
    )
}

/// Waits until node `node`'s MemTotal is `kb` (the guest onlines and offlines blocks after
/// the device reports them).
fn wait_node_kb(vmm: &mut Vmm, node: u32, kb: u64) {
    let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
    let mut now = node_kb(vmm, node);
    while now != kb {
        assert!(
            std::time::Instant::now() < deadline,
            "node {node} stayed at {now} kB, not {kb} kB"
        );
        now = node_kb(vmm, node);
    }
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn two_zones_on_two_nodes_resize_independently() {
    let dir = TempDir::new("vmem-numa");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = boot_with(
        "vmem-numa",
        &dir,
        &[
            "--cpus",
            "boot=2",
            "--memory",
            "size=0",
            "--memory-zone",
            "id=mem0,size=512M,hotplug_size=1G",
            "--memory-zone",
            "id=mem1,size=512M,hotplug_size=1G",
            "--numa",
            "guest_numa_id=0,cpus=0,memory_zones=mem0",
            "--numa",
            "guest_numa_id=1,cpus=1,memory_zones=mem1",
        ],
    );
    let (n0, n1) = (node_kb(&mut vmm, 0), node_kb(&mut vmm, 1));
    assert!(n0 > 0 && n1 > 0, "both nodes have memory: {n0} {n1}");
    assert_eq!(memory_device(&socket, "mem1")["node"], 1);

    remote_ok(&socket, &["resize-zone", "--id", "mem1", "--size", "1G"]);
    wait_plugged(&socket, "mem1", 512 * MIB);
    // The guest onlines the plugged blocks after the device reports them: wait for it.
    wait_node_kb(&mut vmm, 1, n1 + 512 * 1024);
    assert_eq!(node_kb(&mut vmm, 0), n0, "node 0 is untouched");
    assert_eq!(memory_device(&socket, "mem0")["plugged_size"], 0);
    let err = remote_err(&socket, &["resize", "--memory", "2G"]);
    assert!(err.contains("vm.resize-zone"), "{err}");

    // A reboot asks the new guest for the zone's size again, on its node.
    vmm.send("reboot -f");
    vmm.wait_for(READY, BOOT_TIMEOUT);
    wait_plugged(&socket, "mem1", 512 * MIB);
    wait_node_kb(&mut vmm, 1, n1 + 512 * 1024);
    assert_eq!(node_kb(&mut vmm, 0), n0);

    // The zone shrinks back to its boot RAM; the other stays as it was.
    remote_ok(&socket, &["resize-zone", "--id", "mem1", "--size", "512M"]);
    wait_plugged(&socket, "mem1", 0);
    wait_node_kb(&mut vmm, 1, n1);
    assert_eq!(node_kb(&mut vmm, 0), n0);
    assert_eq!(memory_device(&socket, "mem0")["plugged_size"], 0);
    assert_clean_guest_log(&mut vmm);
}

/// A VM whose zones cover the other backings and a 4 MiB block size: `prefault=on`
/// populates a block when it is plugged (the device thread's `MADV_POPULATE_WRITE`, under
/// its seccomp filter), `shared=on` is a memfd whose unplugged blocks are punched out, and
/// sizes go by 4 MiB.
#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn prefault_shared_and_4m_blocks() {
    let dir = TempDir::new("vmem-backings");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = boot_with(
        "vmem-backings",
        &dir,
        &[
            "--memory",
            "size=0,block_size=4M",
            "--memory-zone",
            "id=pre,size=256M,hotplug_size=640M,prefault=on",
            "--memory-zone",
            "id=shm,size=256M,hotplug_size=768M,shared=on",
        ],
    );
    // Region sizes unlike any other mapping of the process, to find them in smaps.
    let (pre_kb, shm_kb) = (640 * 1024, 768 * 1024);
    for (id, backend) in [("pre", "anonymous"), ("shm", "memfd-shared")] {
        let dev = memory_device(&socket, id);
        assert_eq!(dev["block_size"], 4 * MIB, "{dev}");
        assert_eq!(dev["backend"], backend, "{dev}");
    }
    // Sizes go by the 4 MiB block.
    let err = remote_err(&socket, &["resize-zone", "--id", "pre", "--size", "258M"]);
    assert!(err.contains("400") && err.contains("block size"), "{err}");

    // Prefault: the plugged blocks are resident at once, before the guest uses them; the
    // shared zone without prefault is not.
    remote_ok(&socket, &["resize-zone", "--id", "pre", "--size", "384M"]);
    remote_ok(&socket, &["resize-zone", "--id", "shm", "--size", "384M"]);
    wait_plugged(&socket, "pre", 128 * MIB);
    wait_plugged(&socket, "shm", 128 * MIB);
    let pre_rss = mapping_kb(vmm.pid(), pre_kb, &["Rss:"]);
    let shm_rss = mapping_kb(vmm.pid(), shm_kb, &["Rss:"]);
    eprintln!("after plugging 128 MiB each: prefault zone {pre_rss} kB, shared zone {shm_rss} kB");
    assert!(
        pre_rss >= 128 * 1024,
        "prefault: only {pre_rss} kB resident"
    );
    assert!(
        shm_rss < 64 * 1024,
        "without prefault {shm_rss} kB resident"
    );

    // Shared: what the guest filled is punched out of the memfd when it is unplugged.
    remote_ok(&socket, &["resize-zone", "--id", "shm", "--size", "1G"]);
    wait_plugged(&socket, "shm", 768 * MIB);
    guest_fills_memory(&mut vmm, 900);
    let touched = mapping_kb(vmm.pid(), shm_kb, &["Rss:"]);
    assert!(touched > 256 * 1024, "the guest touched only {touched} kB");
    for (id, size, region_kb) in [("shm", "256M", shm_kb), ("pre", "256M", pre_kb)] {
        let before = mapping_kb(vmm.pid(), region_kb, &["Rss:"]);
        remote_ok(&socket, &["resize-zone", "--id", id, "--size", size]);
        wait_plugged(&socket, id, 0);
        let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
        let left = loop {
            let left = mapping_kb(vmm.pid(), region_kb, &["Rss:"]);
            if left * 10 <= before || std::time::Instant::now() >= deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!("{id}: {before} kB -> {left} kB resident after unplugging all");
        assert!(
            left * 10 <= before,
            "{id}: {left} of {before} kB stayed resident"
        );
    }
    let counters = remote_json(&socket, &["counters"]);
    for id in ["pre", "shm"] {
        assert_device_counters(&counters[format!("virtio-mem-{id}")]);
    }
    let threads = thread_seccomp_modes(vmm.pid());
    assert!(threads.iter().all(|(_, mode)| *mode == 2), "{threads:?}");
    assert_clean_guest_log(&mut vmm);
}

/// The sum of the smaps `fields` (in kB) over the virtio-mem region of `size_kb` kB: the
/// first mappings of a run of adjacent `MAP_NORESERVE` mappings of one name that add up to
/// that size (the region is one mapping that `mprotect` cuts into plugged and unplugged
/// parts). Tests give their regions sizes no other run has.
fn mapping_kb(pid: u32, size_kb: u64, fields: &[&str]) -> u64 {
    let vmas = common::process::vmas(pid);
    let size = size_kb * 1024;
    let continues = |i: usize| {
        i > 0
            && vmas[i - 1].noreserve
            && vmas[i - 1].end == vmas[i].start
            && vmas[i - 1].name == vmas[i].name
    };
    // Only from the start of a run: the tail of another region can add up to the size too.
    for first in (0..vmas.len()).filter(|&i| !continues(i)) {
        let mut total = 0;
        for (i, vma) in vmas[first..].iter().enumerate() {
            let adjacent = i == 0 || vmas[first + i - 1].end == vma.start;
            if !vma.noreserve || !adjacent || vma.name != vmas[first].name || total >= size {
                break;
            }
            total += vma.end - vma.start;
            if total == size {
                return vmas[first..=first + i]
                    .iter()
                    .flat_map(|v| v.fields.iter())
                    .filter(|(f, _)| fields.contains(&f.as_str()))
                    .map(|(_, v)| v)
                    .sum();
            }
        }
    }
    panic!("no mapping run of {size_kb} kB in the accordion process");
}

/// Resident kB of the region's mapping, and of the whole process.
fn rss_kb(pid: u32, size_kb: u64) -> (u64, u64) {
    let region = mapping_kb(pid, size_kb, &["Rss:"]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let total = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    (region, total)
}

/// The guest fills a tmpfs of its own with `mib` MiB and frees it again, so that plugged
/// blocks are touched. (Its own: the root's tmpfs was sized at boot, before any plug.)
fn guest_fills_memory(vmm: &mut Vmm, mib: u64) {
    let done = vmm.run_command(&format!(
        "mkdir -p /fillfs && mount -t tmpfs -o size={}m fill /fillfs && \
         dd if=/dev/zero of=/fillfs/x bs=1M count={mib} 2>/dev/null; rm -f /fillfs/x; umount /fillfs",
        mib + mib / 4
    ));
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn unplugged_memory_goes_back_to_the_host() {
    let dir = TempDir::new("vmem-rss");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = boot_with("vmem-rss", &dir, &["--memory", "size=1G,hotplug_size=2G"]);
    let region_kb = 2 * GIB / 1024;
    remote_ok(&socket, &["resize", "--memory", "3G"]);
    wait_plugged(&socket, "default", 2 * GIB);
    // The guest fills nearly all its memory, then frees it.
    guest_fills_memory(&mut vmm, 2400);
    let (touched, total_before) = rss_kb(vmm.pid(), region_kb);
    assert!(
        touched > region_kb / 2,
        "the guest touched only {touched} kB of the region"
    );
    remote_ok(&socket, &["resize", "--memory", "1G"]);
    wait_plugged(&socket, "default", 0);
    // The device gives the memory back after it has answered the unplugs: wait until the
    // region's RSS has fallen (or the time is up), then judge.
    let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
    let (left, total_after) = loop {
        let (left, total) = rss_kb(vmm.pid(), region_kb);
        if left * 10 <= touched || std::time::Instant::now() >= deadline {
            break (left, total);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "region RSS {touched} kB -> {left} kB; process RSS {total_before} kB -> {total_after} kB"
    );
    assert!(
        total_before.saturating_sub(total_after) * 10 >= touched * 9,
        "process RSS fell by {} kB, less than 90 % of the {touched} kB unplugged",
        total_before.saturating_sub(total_after)
    );
    assert!(
        left * 10 <= touched,
        "{left} kB of the region stayed resident"
    );
}

/// The host's huge page pool: `(total, free)` 2 MiB pages.
fn huge_pages() -> (u64, u64) {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let get = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("HugePages_Total:"), get("HugePages_Free:"))
}

/// Sets the host's 2 MiB pool to `pages` (root only; the test host runs tests as root).
fn set_huge_pages(pages: u64) {
    // Not fatal here: the caller checks the pool it got, with a message that says why.
    let _ = std::fs::write("/proc/sys/vm/nr_hugepages", pages.to_string());
}

/// Puts the host's pool back to its size when dropped, whether the test passed or not.
struct HugePagePool(u64);

impl Drop for HugePagePool {
    fn drop(&mut self) {
        set_huge_pages(self.0);
    }
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn hugepage_memory_is_plugged_and_punched_back() {
    // 512 MiB of boot RAM and a 1 GiB region, both on 2 MiB huge pages, and some slack.
    let needed = (512 + 1024) / 2 + 16;
    let (total, free) = huge_pages();
    let _restore = HugePagePool(total);
    if free < needed {
        set_huge_pages(total + needed - free);
    }
    let (_, free) = huge_pages();
    assert!(
        free >= needed,
        "this test needs {needed} free 2 MiB huge pages and the host has {free}: \
         echo {} > /proc/sys/vm/nr_hugepages as root",
        total + needed
    );
    let dir = TempDir::new("vmem-huge");
    let socket = socket_in(&dir.0);
    let (mut vmm, base) = boot_with(
        "vmem-huge",
        &dir,
        &[
            "--memory",
            "size=512M,hotplug_method=virtio-mem,hotplug_size=1G,hugepages=on",
        ],
    );
    assert_eq!(
        memory_device(&socket, "default")["backend"],
        "hugetlb-private"
    );
    let region_kb = GIB / 1024;
    let huge_kb = |vmm: &Vmm| {
        mapping_kb(
            vmm.pid(),
            region_kb,
            &["Shared_Hugetlb:", "Private_Hugetlb:"],
        )
    };
    remote_ok(&socket, &["resize", "--memory", "1G"]);
    wait_memtotal(&mut vmm, base + 512 * 1024);
    guest_fills_memory(&mut vmm, 600);
    let touched = huge_kb(&vmm);
    assert!(
        touched >= 128 * 1024,
        "the guest touched only {touched} kB of the huge page region"
    );
    remote_ok(&socket, &["resize", "--memory", "512M"]);
    wait_plugged(&socket, "default", 0);
    wait_memtotal(&mut vmm, base);
    // The holes are punched after the answers: give the device thread a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while huge_kb(&vmm) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = huge_kb(&vmm);
    eprintln!("huge page region: {touched} kB touched, {left} kB left after unplugging");
    assert_eq!(left, 0, "huge pages stayed in the region after unplug");
    let counters = remote_json(&socket, &["counters"]);
    let c = &counters["virtio-mem-default"];
    assert_eq!(c["discard_errors"], 0, "{counters}");
    assert_eq!(c["backend_errors"], 0, "{counters}");
    assert_clean_guest_log(&mut vmm);
    vmm.send("poweroff -f");
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn a_drained_huge_page_pool_answers_busy_and_the_guest_keeps_running() {
    // Boot RAM's 256 pages are reserved when it is mapped; 32 more (64 MiB) are all the
    // region can get, less than one 128 MiB memory block of the guest.
    let (boot, spare) = (256, 32);
    let (total, free) = huge_pages();
    let _restore = HugePagePool(total);
    set_huge_pages(total - free + boot + spare);
    let (_, free) = huge_pages();
    assert_eq!(
        free,
        boot + spare,
        "this test sets the host's huge page pool (as root): it could not"
    );
    let dir = TempDir::new("vmem-huge-drained");
    let socket = socket_in(&dir.0);
    let (mut vmm, _) = boot_with(
        "vmem-huge-drained",
        &dir,
        &[
            "--memory",
            "size=512M,hotplug_method=virtio-mem,hotplug_size=1G,hugepages=on",
        ],
    );
    remote_ok(&socket, &["resize", "--memory", "1G"]);
    // The plug cannot be populated: BUSY, counted as a backend error, and nothing plugged
    // beyond what the pool had.
    let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
    let c = loop {
        let counters = remote_json(&socket, &["counters"]);
        let c = counters["virtio-mem-default"].clone();
        if c["busy_responses"].as_u64() > Some(0) || std::time::Instant::now() >= deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(c["busy_responses"].as_u64() > Some(0), "no BUSY: {c}");
    assert!(c["backend_errors"].as_u64() > Some(0), "{c}");
    assert_eq!(c["error_responses"], 0, "{c}");
    let dev = memory_device(&socket, "default");
    let plugged = dev["plugged_size"].as_u64().unwrap_or(u64::MAX);
    assert!(
        plugged <= spare * 2 * MIB,
        "plugged {plugged} from a pool of {spare} pages"
    );
    // The guest is fine: its boot RAM was reserved, and no plugged block lacks a page.
    let out = vmm.run_command("echo still-here");
    assert!(out.contains("rc=0"), "{out}");
    assert!(vmm.is_running());
    assert!(!vmm.stderr().contains("guest stopped"), "{}", vmm.stderr());
    vmm.send("poweroff -f");
    vmm.wait_exit(EXIT_TIMEOUT);
}

/// Waits until `check` holds, reading it again every 200 ms; panics with `what` after
/// `RESIZE_TIMEOUT`.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + RESIZE_TIMEOUT;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn a_resize_storm_with_a_reboot_always_settles_exactly() {
    const RESIZES: usize = 100;
    const SLOT: u64 = 128 * MIB;
    let dir = TempDir::new("vmem-storm");
    let socket = socket_in(&dir.0);
    let (mut vmm, base) = boot_with(
        "vmem-storm",
        &dir,
        &[
            "--memory",
            "size=512M,hotplug_method=virtio-mem,hotplug_size=2G",
        ],
    );
    // A fixed sequence (an LCG), so that a failure can be replayed.
    let mut seed: u64 = 0x5eed_0013;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        seed >> 33
    };
    let region_kb = 2 * GIB / 1024;
    let mut targets = Vec::new();
    for i in 0..RESIZES {
        if i == RESIZES / 2 {
            // A reboot in the middle: the new guest is asked for the last size again.
            remote_ok(&socket, &["reboot"]);
            vmm.wait_for(READY, BOOT_TIMEOUT);
        }
        let target = (next() % 17) * SLOT;
        targets.push(target);
        remote_ok(
            &socket,
            &[
                "resize",
                "--memory",
                &format!("{}M", (512 * MIB + target) / MIB),
            ],
        );
        wait_plugged(&socket, "default", target);
        let want_kb = base + target / 1024;
        wait_until(&format!("resize {i} to {target}: MemTotal"), || {
            memtotal_now(&mut vmm) == want_kb
        });
        let dev = memory_device(&socket, "default");
        assert_eq!(dev["requested_size"], target, "resize {i}: {dev}");
        assert_eq!(dev["resize_state"], "settled", "resize {i}: {dev}");
        let slots = dev["slots_mapped"].as_u64().unwrap_or(u64::MAX);
        assert!(
            slots >= target.div_ceil(SLOT) && slots <= 16,
            "resize {i}: {slots} slots for {target}: {dev}"
        );
        // The host holds no more than what is plugged, and at most one slot more while the
        // last unplug's memory is being given back.
        wait_until(&format!("resize {i} to {target}: region RSS"), || {
            mapping_kb(vmm.pid(), region_kb, &["Rss:"]) <= (target + SLOT) / 1024
        });
        if i % 10 == 9 && target > 0 {
            // The guest uses its memory between resizes.
            guest_fills_memory(&mut vmm, target / MIB / 2);
        }
    }
    eprintln!("storm: {RESIZES} resizes through {targets:?}");
    let counters = remote_json(&socket, &["counters"]);
    let c = &counters["virtio-mem-default"];
    assert_eq!(c["error_responses"], 0, "{c}");
    assert_eq!(c["malformed_requests"], 0, "{c}");
    assert_eq!(c["discard_errors"], 0, "{c}");
    assert_clean_guest_log(&mut vmm);
    vmm.send("poweroff -f");
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn resizes_faster_than_the_guest_follows_end_at_the_last_size() {
    // Prefault keeps the device thread busy populating while the sizes change under it:
    // the driver may read any of them, and the usable region it read must never shrink.
    let dir = TempDir::new("vmem-race");
    let socket = socket_in(&dir.0);
    let (mut vmm, base) = boot_with(
        "vmem-race",
        &dir,
        &[
            "--memory",
            "size=512M,hotplug_method=virtio-mem,hotplug_size=2G,prefault=on",
        ],
    );
    for _ in 0..10 {
        remote_ok(&socket, &["resize", "--memory", "2560M"]);
        remote_ok(&socket, &["resize", "--memory", "768M"]);
    }
    remote_ok(&socket, &["resize", "--memory", "1280M"]);
    let last = 768 * MIB;
    wait_plugged(&socket, "default", last);
    wait_until("MemTotal at the last size", || {
        memtotal_now(&mut vmm) == base + last / 1024
    });
    let dev = memory_device(&socket, "default");
    assert_eq!(dev["requested_size"], last, "{dev}");
    assert_eq!(dev["resize_state"], "settled", "{dev}");
    assert_eq!(dev["needs_reset"], false, "{dev}");
    let counters = remote_json(&socket, &["counters"]);
    let c = &counters["virtio-mem-default"];
    assert_eq!(c["error_responses"], 0, "an ERROR breaks the device: {c}");
    assert_eq!(c["malformed_requests"], 0, "{c}");
    assert_clean_guest_log(&mut vmm);
    vmm.send("poweroff -f");
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
}
