//! `VirtioPciDevice<VirtioMem>` driven through its BAR and configuration space the way the
//! Linux driver drives it: negotiation, MSI-X, queue setup in guest memory, DRIVER_OK,
//! requests in the queue, kicks through the ioeventfd, answers in the used ring.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pci::PciDevice;
use vm_memory::GuestMemoryMmap;

use super::*;
use crate::mem::*;
use crate::testing::driver::{common, TestBed};
use crate::testing::mem_driver::{
    MemDriver as Driver, CONFIG_VECTOR, QUEUE_ADDR as Q, QUEUE_VECTOR, WAIT,
};
use crate::transport::pci::capabilities::VIRTIO_PCI_CAP_PCI_CFG;
use crate::transport::pci::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK};
use crate::transport::pci::VIRTIO_MSI_NO_VECTOR;

const BS: u64 = 2 << 20;
const BASE: u64 = 1 << 32;
const BLOCKS: u64 = 64;
const REQUESTED: u64 = 32 * BS;
const FEATURES: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE);
/// Offsets in `struct virtio_mem_config`.
const CFG_USABLE: u64 = 32;
const CFG_PLUGGED: u64 = 40;
const CFG_REQUESTED: u64 = 48;

fn state() -> VirtioMemState {
    let geometry = MemGeometry::new(BASE, BLOCKS * BS, BS).unwrap();
    VirtioMemState::new(geometry, None, REQUESTED).unwrap()
}

/// A device id no other test uses, so that thread names are unique.
fn unique_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn bed_with(backend: impl BlockBackend + Send + 'static) -> (TestBed<VirtioMem>, VirtioMemHandle) {
    let device = VirtioMem::new(unique_id(), state(), backend).unwrap();
    let handle = device.handle();
    (TestBed::new(device), handle)
}

fn bed() -> (TestBed<VirtioMem>, VirtioMemHandle) {
    bed_with(NoopBackend)
}

/// A driver over a fresh queue, and the device started with it, as the guest driver does
/// at probe (and again after a reset).
fn start<'a>(bed: &mut TestBed<VirtioMem>, mem: &'a GuestMemoryMmap) -> Driver<'a> {
    let driver = Driver::new(mem);
    bed.init(FEATURES, QUEUE_SIZE, driver.rings());
    driver
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// The name of the device thread of the device in `bed`.
fn thread_name(bed: &TestBed<VirtioMem>) -> String {
    format!("virtio-mem-{}", bed.pci().device().id())
}

/// Waits until a thread named `name` exists (`present`) or not.
fn thread_is(name: &str, present: bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if thread_names().iter().any(|n| n == name) == present {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Kicks the queue and waits until the device thread has finished with the kick (its
/// `notifications` counter moves), whatever it made of it.
fn kick_and_wait_handled(bed: &TestBed<VirtioMem>, handle: &VirtioMemHandle) {
    let before = handle.status().counters.notifications;
    bed.kick(0);
    let deadline = Instant::now() + WAIT;
    while handle.status().counters.notifications == before {
        assert!(
            Instant::now() < deadline,
            "the device thread never handled the kick"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

const PLUG4: Request = Request::Plug {
    addr: BASE,
    nb_blocks: 4,
};

#[test]
fn identity_and_capabilities() {
    let (mut bed, _) = bed();
    assert_eq!(bed.cfg_read(0, 4), 0x1058_1af4);
    // Revision 1, class 05 (memory), subclass 80 (other).
    assert_eq!(bed.cfg_read(8, 4), 0x0580_0001);
    assert_eq!(bed.cfg_read(0x2c, 4), 0x1058_1af4);
    // BAR 0: 64-bit memory BAR.
    assert_eq!(bed.cfg_read(0x10, 4) & 0x7, 0x4);
    assert_eq!(bed.common, 0);
    assert_eq!(
        (bed.isr, bed.device_cfg, bed.notify),
        (0x1000, 0x2000, 0x3000)
    );
    assert_eq!(bed.notify_multiplier, 4);
    let device = bed.virtio_cap(4).unwrap();
    assert_eq!(device.length, CONFIG_SPACE_SIZE as u32);
    let msix = bed.msix_cap();
    // Two vectors: table size field is N - 1.
    assert_eq!(bed.cfg_read(msix + 2, 2) & 0x7ff, 1);
    assert_eq!(bed.common_read(common::NUMQ, 2), 1);
    bed.common_write(common::Q_SELECT, 0, 2);
    assert_eq!(bed.common_read(common::Q_SIZE, 2), u64::from(QUEUE_SIZE));
    assert_eq!(bed.common_read(common::Q_NOFF, 2), 0);
    assert_eq!(bed.device_features(), FEATURES);
    // One ioeventfd, at the queue's notification address, no data match.
    assert_eq!(bed.vm.ioevent_addresses(), vec![bed.bar_addr + 0x3000]);
}

#[test]
fn plug_through_the_queue_is_acked_in_the_used_ring() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = Driver::new(&mem);
    let generation = bed.common_read(common::CFGGEN, 1);
    bed.init(FEATURES, QUEUE_SIZE, driver.rings());
    assert_eq!(bed.status(), ACKNOWLEDGE | DRIVER | 8 | DRIVER_OK);
    assert!(bed.pci().is_active());
    assert!(thread_is(&thread_name(&bed), true));

    let response = driver.send(&bed, PLUG4);
    assert_eq!(response, Response::Ack(None).to_bytes());
    assert_eq!(driver.used_idx(), 1);
    assert_eq!(driver.used(0), (0, RESPONSE_SIZE as u32));
    assert_eq!(bed.config_u64(CFG_PLUGGED), 4 * BS);
    assert_ne!(bed.common_read(common::CFGGEN, 1), generation);

    let status = handle.status();
    assert_eq!(status.plugged_size, 4 * BS);
    assert_eq!(status.requested_size, REQUESTED);
    assert_eq!((status.counters.plug, status.counters.ack), (1, 1));
    assert_eq!(status.latency.count, 1);
    assert!(status.latency.max_ns > 0);
    assert!(status.active && !status.needs_reset);

    // A STATE request over the plugged range and beyond.
    let state = Request::State {
        addr: BASE,
        nb_blocks: 8,
    };
    let response = driver.send(&bed, state);
    assert_eq!(response, Response::Ack(Some(BlockState::Mixed)).to_bytes());
    assert_eq!(driver.used(1), (2, RESPONSE_SIZE as u32));
    // No configuration interrupt for a plugged-size change (docs/virtio-mem.md §1.3).
    assert_eq!(bed.msi.count(CONFIG_VECTOR), 0);
}

#[test]
fn device_reset_stops_the_thread_and_keeps_plugged_blocks() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.send(&bed, PLUG4);

    let thread = thread_name(&bed);
    assert!(thread_is(&thread, true));
    bed.set_status(0);
    assert_eq!(bed.status(), 0);
    assert!(!bed.pci().is_active());
    assert!(!bed.pci().device().is_running());
    assert!(thread_is(&thread, false));
    assert!(!handle.status().active);
    // Vector assignments and queues are back to their reset values.
    assert_eq!(
        bed.common_read(common::MSIX, 2),
        u64::from(VIRTIO_MSI_NO_VECTOR)
    );
    bed.common_write(common::Q_SELECT, 0, 2);
    assert_eq!(bed.common_read(common::Q_ENABLE, 2), 0);
    assert_eq!(
        bed.common_read(common::Q_MSIX, 2),
        u64::from(VIRTIO_MSI_NO_VECTOR)
    );
    assert_eq!(bed.common_read(common::Q_DESC, 4), 0);
    // The plugged blocks are still plugged (docs/virtio-mem.md §1.7).
    assert_eq!(bed.config_u64(CFG_PLUGGED), 4 * BS);
    assert_eq!(handle.status().plugged_size, 4 * BS);

    // The driver comes back (fresh rings) and finds them with STATE.
    let mut driver = start(&mut bed, &mem);
    assert!(bed.pci().device().is_running());
    let state = Request::State {
        addr: BASE,
        nb_blocks: 4,
    };
    let response = driver.send(&bed, state);
    assert_eq!(
        response,
        Response::Ack(Some(BlockState::Plugged)).to_bytes()
    );
}

#[test]
fn malformed_chain_sets_needs_reset_and_interrupts() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);

    // A 20-byte request: a protocol violation.
    driver.post_raw(&PLUG4.to_bytes()[..20], RESPONSE_SIZE as u32);
    bed.kick(0);
    assert!(bed.msi.wait_for(CONFIG_VECTOR, 1, WAIT));
    assert_eq!(bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert_eq!(bed.read(bed.isr, 1), 2, "ISR: configuration change");
    assert_eq!(bed.read(bed.isr, 1), 0, "reading ISR clears it");
    assert_eq!(driver.used_idx(), 0, "nothing answered");
    let status = handle.status();
    assert!(status.needs_reset);
    assert_eq!(status.counters.malformed, 1);

    // Further requests are left alone until a reset; the driver cannot clear the bit.
    driver.post(PLUG4);
    kick_and_wait_handled(&bed, &handle);
    assert_eq!(driver.used_idx(), 0);
    assert_eq!(handle.status().plugged_size, 0);
    let status = bed.status();
    bed.set_status(status & !DEVICE_NEEDS_RESET);
    assert_eq!(bed.status(), status);

    // Reset and start over: the device works again.
    let mut driver = start(&mut bed, &mem);
    assert_eq!(bed.status() & DEVICE_NEEDS_RESET, 0);
    assert!(!handle.status().needs_reset);
    let response = driver.send(&bed, PLUG4);
    assert_eq!(response, Response::Ack(None).to_bytes());
}

#[test]
fn a_broken_queue_at_driver_ok_needs_reset() {
    let (mut bed, _) = bed();
    // The used ring past the end of guest memory.
    let rings = [Q, Q + 0x800, 0x100_0000 - 0x10];
    bed.init(FEATURES, QUEUE_SIZE, rings);
    assert_eq!(bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert!(!bed.pci().is_active());
    assert_eq!(bed.msi.count(CONFIG_VECTOR), 1);
}

/// A backend whose `plug` (or, with `on_unplug`, `unplug`) blocks until the test opens the
/// gate; its `unplug` fails with `fail_unplug`. It keeps the order of its calls in `calls`.
#[derive(Clone, Default)]
struct GateBackend {
    entered: Arc<(Mutex<bool>, Condvar)>,
    open: Arc<(Mutex<bool>, Condvar)>,
    on_unplug: bool,
    fail_unplug: bool,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl GateBackend {
    fn pass(&self) {
        {
            let (lock, cond) = &*self.entered;
            *lock.lock().unwrap() = true;
            cond.notify_all();
        }
        let (lock, cond) = &*self.open;
        let guard = lock.lock().unwrap();
        drop(cond.wait_while(guard, |open| !*open).unwrap());
    }

    fn wait_entered(&self) {
        let (lock, cond) = &*self.entered;
        let guard = lock.lock().unwrap();
        let (guard, timeout) = cond.wait_timeout_while(guard, WAIT, |e| !*e).unwrap();
        assert!(
            *guard && !timeout.timed_out(),
            "the device never reached plug"
        );
    }

    fn open(&self) {
        let (lock, cond) = &*self.open;
        *lock.lock().unwrap() = true;
        cond.notify_all();
    }
}

impl BlockBackend for GateBackend {
    fn plug(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        self.calls.lock().unwrap().push("plug");
        if !self.on_unplug {
            self.pass();
        }
        Ok(())
    }

    fn unplug(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        self.calls.lock().unwrap().push("unplug");
        if self.on_unplug {
            self.pass();
        }
        self.calls.lock().unwrap().push("unplug done");
        if self.fail_unplug {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(())
    }
}

#[test]
fn an_unplug_is_answered_before_its_memory_is_discarded() {
    let gate = GateBackend {
        on_unplug: true,
        ..GateBackend::default()
    };
    let (mut bed, handle) = bed_with(gate.clone());
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    assert_eq!(driver.send(&bed, PLUG4), Response::Ack(None).to_bytes());

    // The answer arrives while the discard is still stuck in the backend.
    let unplug = Request::Unplug {
        addr: BASE,
        nb_blocks: 4,
    };
    assert_eq!(driver.send(&bed, unplug), Response::Ack(None).to_bytes());
    gate.wait_entered();
    let status = handle.status();
    assert_eq!(status.plugged_size, 0);
    assert_eq!(status.discard.count, 0, "the discard has not finished");
    assert_eq!(status.latency.count, 2);

    // A PLUG of the same blocks waits for it: they are never discarded after a re-plug.
    // The backend's record of its calls says whether the PLUG reached it (populating the
    // blocks, before its answer) while the discard was still stuck in it.
    driver.post(PLUG4);
    bed.kick(0);
    assert_eq!(
        driver.used_idx(),
        2,
        "the re-plug was answered during the discard"
    );
    gate.open();
    assert!(bed.msi.wait_for(QUEUE_VECTOR, 3, WAIT));
    assert_eq!(driver.response(2), Response::Ack(None).to_bytes());
    assert_eq!(
        *gate.calls.lock().unwrap(),
        ["plug", "unplug", "unplug done", "plug"],
        "the re-plug overtook the held discard"
    );
    let status = handle.status();
    assert_eq!(status.discard.count, 1);
    assert_eq!(status.plugged_size, 4 * BS);
}

#[test]
fn a_failed_discard_after_the_answer_is_counted_and_the_device_goes_on() {
    let backend = GateBackend {
        on_unplug: true,
        fail_unplug: true,
        ..GateBackend::default()
    };
    backend.open();
    let (mut bed, handle) = bed_with(backend);
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    assert_eq!(driver.send(&bed, PLUG4), Response::Ack(None).to_bytes());
    let unplug = Request::Unplug {
        addr: BASE,
        nb_blocks: 2,
    };
    assert_eq!(driver.send(&bed, unplug), Response::Ack(None).to_bytes());
    let deadline = Instant::now() + WAIT;
    while handle.status().counters.discard_errors == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = handle.status();
    assert_eq!(status.counters.discard_errors, 1);
    assert_eq!(status.counters.backend_errors, 0);
    assert_eq!(status.plugged_size, 2 * BS);
    assert!(!status.needs_reset);
    let state = Request::State {
        addr: BASE,
        nb_blocks: 4,
    };
    assert_eq!(
        driver.send(&bed, state),
        Response::Ack(Some(BlockState::Mixed)).to_bytes()
    );
}

#[test]
fn resize_returns_at_once_while_the_device_thread_is_busy() {
    let gate = GateBackend::default();
    let (mut bed, handle) = bed_with(gate.clone());
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.post(PLUG4);
    bed.kick(0);
    gate.wait_entered();

    // The device thread is stuck in the backend. A resize, a status query and a
    // configuration read (as a vCPU would do) all return at once.
    let start = Instant::now();
    handle.resize(40 * BS).unwrap();
    let status = handle.status();
    let requested = bed.config_u64(CFG_REQUESTED);
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_millis(500), "took {elapsed:?}");
    assert_eq!(status.requested_size, 40 * BS);
    assert_eq!(status.usable_region_size, BLOCKS * BS);
    assert_eq!(requested, 40 * BS);
    assert_eq!(bed.msi.count(QUEUE_VECTOR), 0);
    // Invalid sizes are refused at once, with nothing changed.
    assert!(matches!(
        handle.resize(BS + 1),
        Err(ResizeError::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        handle.resize((BLOCKS + 1) * BS),
        Err(ResizeError::ExceedsRegion { .. })
    ));
    assert_eq!(handle.status().requested_size, 40 * BS);

    gate.open();
    assert!(bed.msi.wait_for(QUEUE_VECTOR, 1, WAIT));
    assert!(bed.msi.wait_for(CONFIG_VECTOR, 1, WAIT));
    assert_eq!(driver.response(0), Response::Ack(None).to_bytes());
    assert_eq!(bed.config_u64(CFG_REQUESTED), 40 * BS);
}

#[test]
fn resize_before_activation_shows_in_config_and_applies_at_activation() {
    let (mut bed, handle) = bed();
    handle.resize(2 * BS).unwrap();
    assert_eq!(bed.config_u64(CFG_REQUESTED), 2 * BS);
    assert_eq!(handle.status().requested_size, 2 * BS);
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    // The device took it: plugging past 2 blocks is refused.
    assert_eq!(driver.send(&bed, PLUG4), Response::Nack.to_bytes());
    let two = Request::Plug {
        addr: BASE,
        nb_blocks: 2,
    };
    assert_eq!(driver.send(&bed, two), Response::Ack(None).to_bytes());
}

#[test]
fn resize_while_active_interrupts_and_bumps_the_generation() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    let generation = bed.common_read(common::CFGGEN, 1);
    let usable = bed.config_u64(CFG_USABLE);
    handle.resize(REQUESTED).unwrap();
    // The device thread takes a pending resize before a later kick: once a request sent
    // after it is answered, the resize has been dealt with.
    let state = Request::State {
        addr: BASE,
        nb_blocks: 1,
    };
    driver.send(&bed, state);
    assert_eq!(bed.msi.count(CONFIG_VECTOR), 0, "no change, no interrupt");

    handle.resize(48 * BS).unwrap();
    assert!(bed.msi.wait_for(CONFIG_VECTOR, 1, WAIT));
    assert_eq!(bed.read(bed.isr, 1), 2);
    assert_eq!(bed.config_u64(CFG_REQUESTED), 48 * BS);
    assert!(bed.config_u64(CFG_USABLE) >= usable);
    assert_ne!(bed.common_read(common::CFGGEN, 1), generation);
}

#[test]
fn plugged_size_listener_sees_each_change() {
    let (mut bed, handle) = bed();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    handle.set_plugged_size_listener(move |c| seen.lock().unwrap().push(c));
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.send(&bed, PLUG4);
    driver.send(
        &bed,
        Request::State {
            addr: BASE,
            nb_blocks: 1,
        },
    );
    driver.send(&bed, Request::UnplugAll);
    // The change is told once the batch has settled: a later request is the barrier.
    driver.send(
        &bed,
        Request::State {
            addr: BASE,
            nb_blocks: 1,
        },
    );
    assert_eq!(
        *changes.lock().unwrap(),
        vec![
            PluggedSizeChange {
                previous: 0,
                plugged: 4 * BS,
                requested: REQUESTED
            },
            PluggedSizeChange {
                previous: 4 * BS,
                plugged: 0,
                requested: REQUESTED
            },
        ]
    );
}

#[test]
fn system_reset_unplugs_everything() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.send(&bed, PLUG4);
    handle.resize(0).unwrap();
    assert_eq!(handle.status().usable_region_size, BLOCKS * BS);

    let thread = thread_name(&bed);
    bed.pci().system_reset();
    assert_eq!(bed.status(), 0);
    assert!(thread_is(&thread, false));
    let status = handle.status();
    assert_eq!(status.plugged_size, 0);
    assert_eq!(status.requested_size, 0);
    // Recomputed from the requested size (docs/virtio-mem.md §1.3: only at system reset or
    // UNPLUG_ALL may it shrink).
    assert_eq!(status.usable_region_size, 0);
    assert_eq!(bed.config_u64(CFG_PLUGGED), 0);
    // MSI-X is disabled again.
    let msix = bed.msix_cap();
    assert_eq!(bed.cfg_read(msix + 2, 2) & 0xc000, 0);

    // The rebooted guest starts over.
    let mut driver = start(&mut bed, &mem);
    handle.resize(2 * BS).unwrap();
    assert!(bed.msi.wait_for(CONFIG_VECTOR, 1, WAIT));
    let two = Request::Plug {
        addr: BASE,
        nb_blocks: 2,
    };
    assert_eq!(driver.send(&bed, two), Response::Ack(None).to_bytes());
}

#[test]
fn notifications_through_mmio_and_the_pci_cfg_window() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);

    // A notify write that reached the VMM (no ioeventfd on that path).
    driver.post(PLUG4);
    bed.write(bed.notify, 0, 2);
    assert!(bed.msi.wait_for(QUEUE_VECTOR, 1, WAIT));
    assert_eq!(handle.status().plugged_size, 4 * BS);

    // Through the PCI configuration access capability: read plugged_size, then notify.
    let window = bed.virtio_cap(VIRTIO_PCI_CAP_PCI_CFG).unwrap();
    bed.cfg_write(window.at + 4, 0, 1);
    bed.cfg_write(window.at + 8, (bed.device_cfg + CFG_PLUGGED) as u32, 4);
    bed.cfg_write(window.at + 12, 4, 4);
    assert_eq!(u64::from(bed.cfg_read(window.at + 16, 4)), 4 * BS);
    driver.post(Request::UnplugAll);
    bed.cfg_write(window.at + 8, bed.notify as u32, 4);
    bed.cfg_write(window.at + 12, 2, 4);
    bed.cfg_write(window.at + 16, 0, 2);
    assert!(bed.msi.wait_for(QUEUE_VECTOR, 2, WAIT));
    assert_eq!(handle.status().plugged_size, 0);
    // A misaligned window access does nothing: the data register keeps what it held.
    bed.cfg_write(window.at + 16, 0x1234_5678, 4);
    bed.cfg_write(window.at + 8, (bed.device_cfg + 1) as u32, 4);
    bed.cfg_write(window.at + 12, 4, 4);
    assert_eq!(bed.cfg_read(window.at + 16, 4), 0x1234_5678);
    assert_eq!(handle.status().plugged_size, 0);
}

#[test]
fn bar_move_re_registers_the_ioeventfds() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    let old = bed.bar_addr;
    let new = old + 0x10_0000;
    // The guest moves the 64-bit BAR, low register then high.
    bed.cfg_write(0x10, (new as u32) | 0x4, 4);
    bed.cfg_write(0x14, (new >> 32) as u32, 4);
    assert_eq!(bed.mover.moves.lock().unwrap().len(), 1);
    bed.bar_addr = new;
    assert_eq!(bed.vm.ioevent_addresses(), vec![new + 0x3000]);
    assert_eq!(*bed.vm.unregistered.lock().unwrap(), vec![old + 0x3000]);
    assert_eq!(bed.pci().bar().unwrap().addr, new);
    assert_eq!(driver.send(&bed, PLUG4), Response::Ack(None).to_bytes());
    assert_eq!(handle.status().plugged_size, 4 * BS);
}

#[test]
fn features_are_checked_at_features_ok() {
    let (mut bed, _) = bed();
    // Without VERSION_1: a legacy driver, refused.
    assert!(!bed.negotiate(1 << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE));
    // A feature the device did not offer.
    assert!(!bed.negotiate(FEATURES | 1 << VIRTIO_MEM_F_ACPI_PXM));
    // Unplugged memory is inaccessible by default: VERSION_1 alone is refused.
    assert!(!bed.negotiate(1 << VIRTIO_F_VERSION_1));
    assert!(bed.negotiate(FEATURES));
    // Driver features read back; writes after FEATURES_OK are ignored.
    bed.common_write(common::GFSELECT, 1, 4);
    assert_eq!(bed.common_read(common::GF, 4), 1);
    bed.common_write(common::GF, 3, 4);
    assert_eq!(bed.common_read(common::GF, 4), 1);
    // DRIVER_OK without a queue: the device needs a reset.
    let status = bed.status();
    bed.set_status(status | DRIVER_OK);
    assert_eq!(bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
}

#[test]
fn a_node_offers_acpi_pxm() {
    let geometry = MemGeometry::new(BASE, BLOCKS * BS, BS).unwrap();
    let state = VirtioMemState::new(geometry, Some(3), 0).unwrap();
    let device = VirtioMem::new("mem1", state, NoopBackend).unwrap();
    let mut bed = TestBed::new(device);
    assert_eq!(bed.device_features(), FEATURES | 1 << VIRTIO_MEM_F_ACPI_PXM);
    assert_eq!(bed.read(bed.device_cfg + 8, 2), 3);
}

#[test]
fn no_vector_means_no_interrupt_but_the_answer_is_there() {
    let (mut bed, _) = bed();
    let mem = bed.mem.clone();
    let mut driver = Driver::new(&mem);
    assert!(bed.negotiate(FEATURES));
    bed.enable_msix(2);
    // A vector the table does not have reads back as NO_VECTOR.
    bed.common_write(common::MSIX, 7, 2);
    assert_eq!(
        bed.common_read(common::MSIX, 2),
        u64::from(VIRTIO_MSI_NO_VECTOR)
    );
    bed.setup_queue(0, QUEUE_SIZE, driver.rings(), VIRTIO_MSI_NO_VECTOR);
    let status = bed.status();
    bed.set_status(status | DRIVER_OK);
    driver.post(PLUG4);
    bed.kick(0);
    let deadline = Instant::now() + WAIT;
    while driver.used_idx() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(driver.used_idx(), 1);
    assert!(bed.msi.all().is_empty());
}

#[test]
fn masked_vectors_are_pending_and_fire_on_unmask() {
    let (mut bed, _) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    // Mask the queue vector (vector control of entry 1).
    bed.write(0x4000 + 16 + 12, 1, 4);
    driver.post(PLUG4);
    bed.kick(0);
    let deadline = Instant::now() + WAIT;
    while driver.used_idx() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(driver.used_idx(), 1);
    // The thread raises the (masked) vector after the used ring update: it becomes pending.
    while bed.read(0x5000, 8) != 0b10 {
        assert!(Instant::now() < deadline, "vector 1 never became pending");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(bed.msi.count(QUEUE_VECTOR), 0);
    bed.write(0x4000 + 16 + 12, 0, 4);
    assert_eq!(bed.msi.count(QUEUE_VECTOR), 1);
}

#[test]
fn dropping_the_device_stops_its_thread() {
    let (mut bed, _) = bed();
    let mem = bed.mem.clone();
    start(&mut bed, &mem);
    let thread = thread_name(&bed);
    assert!(thread_is(&thread, true));
    drop(bed);
    assert!(thread_is(&thread, false));
}

#[test]
fn any_access_at_any_offset_is_safe() {
    let (mut bed, _) = bed();
    let mem = bed.mem.clone();
    start(&mut bed, &mem);
    let mut rng = testutil::Rng::new(7);
    let interesting = [
        0u64,
        0x14,
        0x16,
        0x1c,
        0x36,
        0x38,
        0xfff,
        0x1000,
        0x1001,
        0x2000,
        0x2037,
        0x2038,
        0x2fff,
        0x3000,
        0x3002,
        0x3ffc,
        0x4000,
        0x401f,
        0x4020,
        0x5000,
        0x5fff,
        0x6000,
        0x7fff,
        0x8000,
        u64::MAX - 3,
        u64::MAX,
    ];
    for i in 0..20_000u64 {
        let offset = if i % 2 == 0 {
            interesting[rng.below(interesting.len() as u64) as usize]
        } else {
            rng.below(0x9000)
        };
        let len = [0usize, 1, 2, 3, 4, 8, 16][rng.below(7) as usize];
        let mut data = vec![0u8; len];
        if rng.below(2) == 0 {
            bed.pci().read_bar(0, offset, &mut data);
        } else {
            // Never reset the device status by accident more than it takes to stay useful.
            let value = rng.bytes(len);
            bed.pci().write_bar(rng.below(3) as u8, offset, &value);
        }
        let reg = rng.below(1100) as usize;
        if rng.below(4) == 0 {
            let value = rng.bytes(len.min(4));
            // Registers 4..10 are the BARs, whose moves need a bus; leave them alone here.
            if !(4..10).contains(&reg) {
                let _ = bed.pci().write_config_register(reg, rng.below(4), &value);
            }
        } else {
            let _ = bed.pci().read_config_register(reg);
        }
    }
}

#[test]
fn the_thread_start_hook_runs_on_each_device_thread_before_requests() {
    let mut device = VirtioMem::new(unique_id(), state(), NoopBackend).unwrap();
    let ran_on = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = ran_on.clone();
    device.set_thread_start_hook(Arc::new(move || {
        let name = std::thread::current().name().unwrap_or("").to_string();
        record.lock().unwrap().push(name);
        Ok(())
    }));
    let mut bed = TestBed::new(device);
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    assert_eq!(driver.send(&bed, PLUG4), Response::Ack(None).to_bytes());
    let name = thread_name(&bed);
    assert_eq!(*ran_on.lock().unwrap(), vec![name.clone()]);
    // A device reset ends the thread; the next DRIVER_OK starts one that runs it again.
    bed.set_status(0);
    assert!(thread_is(&name, false));
    let mut driver = start(&mut bed, &mem);
    let state = Request::State {
        addr: BASE,
        nb_blocks: 4,
    };
    assert_eq!(
        driver.send(&bed, state),
        Response::Ack(Some(BlockState::Plugged)).to_bytes()
    );
    assert_eq!(*ran_on.lock().unwrap(), vec![name.clone(), name]);
}

#[test]
fn a_failing_thread_start_hook_leaves_the_queue_unserved() {
    let mut device = VirtioMem::new(unique_id(), state(), NoopBackend).unwrap();
    device.set_thread_start_hook(Arc::new(|| Err("no filter".to_string())));
    let handle = device.handle();
    let mut bed = TestBed::new(device);
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    // No device thread exists to serve a request, whatever the driver does.
    assert!(thread_is(&thread_name(&bed), false));
    driver.post(PLUG4);
    bed.kick(0);
    assert!(thread_is(&thread_name(&bed), false));
    assert_eq!(driver.used_idx(), 0, "a request was served");
    assert_eq!(handle.status().plugged_size, 0);
    // The driver is told: DEVICE_NEEDS_RESET and a configuration interrupt.
    assert!(bed.msi.wait_for(CONFIG_VECTOR, 1, WAIT));
    assert_eq!(bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert!(handle.status().needs_reset);
    // A reset still works and gives the state back.
    bed.set_status(0);
    assert!(!bed.pci().device().is_running());
}

/// A backend whose plug panics, as a bug in one would.
struct PanickingBackend;

impl BlockBackend for PanickingBackend {
    fn plug(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        panic!("a bug in the backend");
    }
    fn unplug(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_device_thread_that_panics_tells_the_driver() {
    let (mut bed, handle) = bed_with(PanickingBackend);
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.post(PLUG4);
    bed.kick(0);
    // The thread is gone, and the driver learns it must reset the device rather than wait.
    assert!(bed.msi.wait_for(CONFIG_VECTOR, 1, WAIT));
    assert_eq!(bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert!(handle.status().needs_reset);
    assert_eq!(driver.used_idx(), 0, "nothing answered");
    assert!(thread_is(&thread_name(&bed), false));
    // A reset does not bring back what the thread took with it, and does not crash.
    bed.set_status(0);
    assert!(!bed.pci().device().is_running());
}

#[test]
fn a_driver_without_version_1_is_refused_features_ok() {
    let (mut bed, _) = bed();
    // A legacy driver (no VIRTIO_F_VERSION_1): FEATURES_OK does not stick.
    assert!(!bed.negotiate(1 << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE));
    assert!(bed.negotiate(FEATURES));
}

#[test]
fn unplugged_inaccessible_is_required_unless_the_zone_turns_it_off() {
    let (mut bed, _) = bed();
    assert!(!bed.negotiate(1 << VIRTIO_F_VERSION_1), "a pre-5.16 driver");
    let mut device = VirtioMem::new(unique_id(), state(), NoopBackend).unwrap();
    device.set_unplugged_inaccessible(false);
    let mut bed = TestBed::new(device);
    assert!(bed.negotiate(1 << VIRTIO_F_VERSION_1));
    assert!(bed.negotiate(FEATURES));
}

#[test]
fn each_kick_is_handled_once() {
    // The device thread empties the notification eventfd it was woken by: three kicks, each
    // answered before the next, are three notifications handled, not a loop that spins.
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    let state = Request::State {
        addr: BASE,
        nb_blocks: 1,
    };
    for _ in 0..3 {
        driver.send(&bed, state);
    }
    let deadline = Instant::now() + WAIT;
    while handle.status().counters.notifications < 3 {
        assert!(Instant::now() < deadline, "the kicks were not handled");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(handle.status().counters.notifications, 3);
}

/// Logs what the backend does, and the listener, in one order.
#[derive(Clone, Default)]
struct OrderLog(Arc<Mutex<Vec<&'static str>>>);

impl BlockBackend for OrderLog {
    fn plug(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().push("plug");
        Ok(())
    }
    fn unplug(&mut self, _offset: u64, _len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().push("discard");
        Ok(())
    }
    fn settle(&mut self) -> Discarded {
        self.0.lock().unwrap().push("settle");
        Discarded::default()
    }
}

#[test]
fn the_plugged_size_event_follows_the_memory_given_back() {
    let log = OrderLog::default();
    let (mut bed, handle) = bed_with(log.clone());
    let events = log.clone();
    handle.set_plugged_size_listener(move |_| events.0.lock().unwrap().push("event"));
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.send(&bed, PLUG4);
    let unplug = Request::Unplug {
        addr: BASE,
        nb_blocks: 4,
    };
    assert_eq!(driver.send(&bed, unplug), Response::Ack(None).to_bytes());
    let state = Request::State {
        addr: BASE,
        nb_blocks: 1,
    };
    driver.send(&bed, state);
    let order = log.0.lock().unwrap().clone();
    // Each batch: its backend work, settle, then the event. (The STATE batch's own settle
    // may come after its answer.)
    assert_eq!(
        order[..6],
        ["plug", "settle", "event", "discard", "settle", "event"]
    );
}

#[test]
fn a_pause_stops_the_thread_keeps_the_queue_and_a_resume_serves_it_again() {
    let (mut bed, handle) = bed();
    let mem = bed.mem.clone();
    let mut driver = start(&mut bed, &mem);
    driver.send(&bed, PLUG4);
    let thread = thread_name(&bed);

    // A resize the thread may not have seen yet goes into the saved state.
    handle.resize(8 * BS).unwrap();
    bed.pci().pause().unwrap();
    assert!(thread_is(&thread, false), "the thread stops");
    let saved = bed
        .pci()
        .device()
        .saved_state()
        .expect("paused: the state is there");
    assert_eq!(saved.plugged, vec![[0, 4]]);
    assert_eq!(saved.requested_size, 8 * BS);
    let function = bed.pci().state().unwrap();
    assert_eq!(
        (function.queues[0].next_avail, function.queues[0].next_used),
        (1, 1),
        "one request taken and answered"
    );

    let interrupts = bed.msi.count(CONFIG_VECTOR);
    bed.pci().resume();
    assert!(thread_is(&thread, true), "the thread is back");
    assert!(bed.pci().device().saved_state().is_none(), "running again");
    assert!(
        bed.msi.count(CONFIG_VECTOR) > interrupts,
        "the driver rereads"
    );
    let response = driver.send(
        &bed,
        Request::State {
            addr: BASE,
            nb_blocks: 4,
        },
    );
    assert_eq!(
        response,
        Response::Ack(Some(BlockState::Plugged)).to_bytes()
    );
}
