//! The transport on its own, with a device that records what it is given: the common
//! configuration's corner cases, activation with several queues, ISR without MSI-X,
//! ioeventfd registration failures, and activation failures.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pci::{BarKind, BarRegion, PciDevice};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::capabilities::VIRTIO_PCI_CAP_DEVICE_CFG;
use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK};
use super::*;
use crate::device::{ActivateContext, ActivateError, ResetError, VirtioDevice};
use crate::testing::driver::{common, TestBed};
use crate::testing::fake_vm::FakeVm;
use crate::testing::msi::RecordingMsi;
use crate::{VirtioInterrupt, VirtioInterruptType};

const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const FEATURES: u64 = VERSION_1 | EVENT_IDX | 1 << 5;

/// A queue as activate saw it: index, size, event index enabled.
type SeenQueue = (u16, u16, bool);

/// What the dummy device was activated with.
#[derive(Default)]
struct Seen {
    /// Per activation: acked features and the queues.
    activations: Vec<(u64, Vec<SeenQueue>)>,
    interrupt: Option<Arc<dyn VirtioInterrupt>>,
    resets: usize,
    writes: Vec<(u64, Vec<u8>)>,
}

/// Two queues (16 and 8 entries), 8 bytes of configuration, a generation counter the test
/// controls; activation fails while `fail` is set.
struct Dummy {
    seen: Arc<Mutex<Seen>>,
    generation: Arc<AtomicU32>,
    fail: Arc<AtomicUsize>,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn features(&self) -> u64 {
        FEATURES
    }
    fn config_size(&self) -> usize {
        8
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = if at < 8 { at as u8 + 1 } else { 0 };
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.seen
            .lock()
            .unwrap()
            .writes
            .push((offset, data.to_vec()));
    }
    fn config_generation(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }
    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        if self.fail.load(Ordering::SeqCst) != 0 {
            return Err(ActivateError::QueueNotEnabled(0));
        }
        let queues = context
            .queues
            .iter()
            .map(|(i, q, _)| (*i, q.size(), q.event_idx_enabled()))
            .collect();
        let mut seen = self.seen.lock().unwrap();
        seen.activations.push((context.acked_features, queues));
        seen.interrupt = Some(context.interrupt);
        Ok(())
    }
    fn reset(&mut self) -> Result<(), ResetError> {
        self.seen.lock().unwrap().resets += 1;
        Ok(())
    }
}

struct Fixture {
    bed: TestBed<Dummy>,
    seen: Arc<Mutex<Seen>>,
    generation: Arc<AtomicU32>,
    fail: Arc<AtomicUsize>,
}

fn fixture() -> Fixture {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let generation = Arc::new(AtomicU32::new(0));
    let fail = Arc::new(AtomicUsize::new(0));
    let dummy = Dummy {
        seen: seen.clone(),
        generation: generation.clone(),
        fail: fail.clone(),
    };
    Fixture {
        bed: TestBed::new(dummy),
        seen,
        generation,
        fail,
    }
}

/// Rings of queue `n` somewhere in the first MiB.
fn rings(n: u64) -> [u64; 3] {
    let base = 0x1_0000 * (n + 1);
    [base, base + 0x1000, base + 0x2000]
}

#[test]
fn identity_of_an_unclassified_device() {
    let mut f = fixture();
    assert_eq!(
        f.bed.cfg_read(0, 4),
        u32::from(0x1040u16 + 42) << 16 | 0x1af4
    );
    assert_eq!(f.bed.cfg_read(8, 4) >> 16, 0xff00);
    assert_eq!(f.bed.common_read(common::NUMQ, 2), 2);
    let msix = f.bed.msix_cap();
    assert_eq!(f.bed.cfg_read(msix + 2, 2) & 0x7ff, 2, "three vectors");
    assert_eq!(msix_vector_count(2), 3);
    assert_eq!(
        f.bed.virtio_cap(VIRTIO_PCI_CAP_DEVICE_CFG).unwrap().length,
        8
    );
    assert_eq!(
        f.bed.vm.ioevent_addresses(),
        vec![f.bed.bar_addr + 0x3000, f.bed.bar_addr + 0x3004]
    );
}

#[test]
fn common_config_reads_at_any_offset_and_size() {
    let mut f = fixture();
    f.bed.common_write(common::DFSELECT, 1, 4);
    assert_eq!(f.bed.common_read(common::DF, 4), 1);
    // The same register read as a byte, a word and a qword from odd places.
    assert_eq!(f.bed.common_read(common::DF, 1), 1);
    assert_eq!(f.bed.common_read(common::DFSELECT, 8), 1 | 1 << 32);
    // The high byte of config_msix_vector (NO_VECTOR) and the low byte of num_queues.
    assert_eq!(f.bed.common_read(common::NUMQ - 1, 2), 0x02ff);
    // Pages past the second have no features.
    f.bed.common_write(common::DFSELECT, 2, 4);
    assert_eq!(f.bed.common_read(common::DF, 4), 0);
    // Past the structure: zeros.
    assert_eq!(f.bed.common_read(0x38, 8), 0);
    assert_eq!(f.bed.common_read(0xffc, 4), 0);
    assert_eq!(f.bed.common_read(0x36, 4), 0);
}

#[test]
fn config_generation_follows_the_device() {
    let mut f = fixture();
    assert_eq!(f.bed.common_read(common::CFGGEN, 1), 0);
    f.generation.store(0x1_0203, Ordering::SeqCst);
    assert_eq!(f.bed.common_read(common::CFGGEN, 1), 0x03);
    // Read-only.
    f.bed.common_write(common::CFGGEN, 9, 1);
    assert_eq!(f.bed.common_read(common::CFGGEN, 1), 0x03);
}

#[test]
fn device_config_is_forwarded() {
    let mut f = fixture();
    let cfg = f.bed.device_cfg;
    assert_eq!(f.bed.read(cfg, 8), 0x0807_0605_0403_0201);
    assert_eq!(f.bed.read(cfg + 6, 4), 0x0807);
    f.bed.write(cfg + 2, 0xabcd, 2);
    assert_eq!(f.seen.lock().unwrap().writes, vec![(2, vec![0xcd, 0xab])]);
}

#[test]
fn queue_setup_corner_cases() {
    let mut f = fixture();
    let b = &mut f.bed;
    b.common_write(common::Q_SELECT, 1, 2);
    assert_eq!(b.common_read(common::Q_SIZE, 2), 8);
    assert_eq!(b.common_read(common::Q_NOFF, 2), 1);
    // Too large, zero, not a power of two: ignored.
    for size in [16, 0, 6] {
        b.common_write(common::Q_SIZE, size, 2);
        assert_eq!(b.common_read(common::Q_SIZE, 2), 8, "size {size}");
    }
    b.common_write(common::Q_SIZE, 4, 2);
    assert_eq!(b.common_read(common::Q_SIZE, 2), 4);
    // A 4-byte write to a 16-bit register: ignored.
    b.common_write(common::Q_SIZE, 2, 4);
    assert_eq!(b.common_read(common::Q_SIZE, 2), 4);
    // A 64-bit address in one write, and halves.
    b.common_write(common::Q_DESC, 0x1_2345_6780, 8);
    assert_eq!(b.common_read(common::Q_DESC, 8), 0x1_2345_6780);
    b.common_write(common::Q_DESC + 4, 0, 4);
    assert_eq!(b.common_read(common::Q_DESC, 8), 0x2345_6780);
    // A misaligned descriptor table is refused.
    b.common_write(common::Q_DESC, 0x2345_6788, 4);
    assert_eq!(b.common_read(common::Q_DESC, 8), 0x2345_6780);
    // Disabling is not a thing without a reset.
    b.common_write(common::Q_ENABLE, 1, 2);
    b.common_write(common::Q_ENABLE, 0, 2);
    assert_eq!(b.common_read(common::Q_ENABLE, 2), 1);
    // A queue that does not exist reads as unavailable and ignores writes.
    b.common_write(common::Q_SELECT, 2, 2);
    assert_eq!(b.common_read(common::Q_SIZE, 2), 0);
    b.common_write(common::Q_ENABLE, 1, 2);
    b.common_write(common::Q_MSIX, 1, 2);
    assert_eq!(b.common_read(common::Q_ENABLE, 2), 0);
    assert_eq!(
        b.common_read(common::Q_MSIX, 2),
        u64::from(VIRTIO_MSI_NO_VECTOR)
    );
}

#[test]
fn only_enabled_queues_are_activated_with_their_index() {
    let mut f = fixture();
    assert!(f.bed.negotiate(FEATURES));
    f.bed.setup_queue(1, 4, rings(1), 2);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(f.bed.pci().is_active());
    assert_eq!(
        f.seen.lock().unwrap().activations,
        vec![(FEATURES, vec![(1, 4, true)])]
    );
    // Queue setup is closed after DRIVER_OK.
    f.bed.common_write(common::Q_SELECT, 0, 2);
    f.bed.common_write(common::Q_SIZE, 4, 2);
    f.bed.common_write(common::Q_ENABLE, 1, 2);
    assert_eq!(f.bed.common_read(common::Q_SIZE, 2), 16);
    assert_eq!(f.bed.common_read(common::Q_ENABLE, 2), 0);
    // Event index off when not negotiated.
    assert!(f.bed.negotiate(VERSION_1));
    f.bed.setup_queue(0, 16, rings(0), 1);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    let seen = f.seen.lock().unwrap();
    assert_eq!(seen.resets, 1, "the second negotiation reset the device");
    assert_eq!(seen.activations[1], (VERSION_1, vec![(0, 16, false)]));
}

#[test]
fn failed_activation_needs_reset() {
    let mut f = fixture();
    f.fail.store(1, Ordering::SeqCst);
    assert!(f.bed.negotiate(FEATURES));
    f.bed.enable_msix(3);
    f.bed.common_write(common::MSIX, 2, 2);
    f.bed.setup_queue(0, 16, rings(0), 0);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(f.bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert_eq!(f.bed.msi.all(), vec![2]);
    assert!(!f.bed.pci().is_active());
    // No reset of a device that never started.
    f.bed.set_status(0);
    assert_eq!(f.seen.lock().unwrap().resets, 0);
    assert_eq!(f.bed.status(), 0);
}

#[test]
fn interrupts_without_msix_set_the_isr() {
    let mut f = fixture();
    assert!(f.bed.negotiate(FEATURES));
    f.bed.setup_queue(0, 16, rings(0), 0);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    let interrupt = f.seen.lock().unwrap().interrupt.clone().unwrap();
    // MSI-X disabled: the vector write is kept but nothing is delivered.
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert_eq!(f.bed.read(f.bed.isr, 1), 1);
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    assert_eq!(f.bed.read(f.bed.isr, 4), 3);
    assert_eq!(f.bed.read(f.bed.isr, 1), 0);
    assert!(f.bed.msi.all().is_empty());
    assert!(interrupt.trigger(VirtioInterruptType::Queue(2)).is_err());
    // With MSI-X on, the queue goes to its vector and the ISR queue bit stays clear.
    f.bed.enable_msix(3);
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert_eq!(f.bed.msi.all(), vec![0]);
    assert_eq!(f.bed.read(f.bed.isr, 1), 0);
    // NEEDS_RESET with DRIVER_OK set: status bit and a configuration interrupt (no
    // vector assigned, so only the ISR shows it).
    interrupt.set_needs_reset().unwrap();
    assert_eq!(f.bed.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert_eq!(f.bed.read(f.bed.isr, 1), 2);
}

/// An INTx line that counts its pulses.
#[derive(Default)]
struct CountingLine(AtomicUsize);

impl pci::IntxLine for CountingLine {
    fn pulse(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn without_msix_every_interrupt_pulses_intx_unless_disabled() {
    let mut f = fixture();
    assert_eq!(
        f.bed.cfg_read(0x3d, 1),
        0,
        "no INTx pin before the VMM gives a line"
    );
    let line = Arc::new(CountingLine::default());
    f.bed.pci().set_intx(line.clone());
    assert_eq!(f.bed.cfg_read(0x3d, 1), 1, "pin INTA#");
    assert!(f.bed.negotiate(FEATURES));
    f.bed.setup_queue(0, 16, rings(0), 0);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    let interrupt = f.seen.lock().unwrap().interrupt.clone().unwrap();
    let pulses = || line.0.load(Ordering::SeqCst);
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(
        pulses(),
        2,
        "one edge per event, even with the ISR already set"
    );
    assert_eq!(f.bed.read(f.bed.isr, 1), 3);
    // The command register's Interrupt Disable bit holds the line down; the ISR still
    // records, and enabling INTx again raises the pending event.
    let command = f.bed.cfg_read(0x04, 2);
    f.bed.cfg_write(0x04, command | 1 << 10, 2);
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(pulses(), 2);
    f.bed.cfg_write(0x04, command, 2);
    assert_eq!(
        pulses(),
        3,
        "the pending ISR is raised when INTx is enabled again"
    );
    assert_eq!(f.bed.read(f.bed.isr, 1), 2);
    // With MSI-X on, vectors carry interrupts and INTx stays quiet.
    f.bed.enable_msix(3);
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(pulses(), 3);
    assert_eq!(f.bed.msi.all(), vec![0]);
}

#[test]
fn ioevent_registration_is_all_or_nothing() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let vm = Arc::new(FakeVm::default());
    vm.ioevent_limit.store(1, Ordering::SeqCst);
    let f = fixture();
    drop(f.bed);
    let dummy = Dummy {
        seen: f.seen,
        generation: f.generation,
        fail: f.fail,
    };
    let msi = Arc::new(RecordingMsi::default());
    let mut device = VirtioPciDevice::new(
        "t",
        dummy,
        Arc::new(crate::view::GuestMemoryView::new(mem)),
        msi,
        vm.clone(),
    )
    .unwrap();
    assert!(matches!(
        device.register_ioevents(),
        Err(VirtioPciError::BarNotPlaced)
    ));
    let bar = BarRegion {
        index: 0,
        addr: 0x100_0000_0000,
        size: device.layout().bar_size(),
        kind: BarKind::Memory64,
        prefetchable: false,
    };
    device.assign_bar(&bar).unwrap();
    assert!(matches!(
        device.register_ioevents(),
        Err(VirtioPciError::IoEvent { queue: 1, .. })
    ));
    assert!(vm.ioevent_addresses().is_empty());
    assert_eq!(*vm.unregistered.lock().unwrap(), vec![bar.addr + 0x3000]);
    vm.ioevent_limit.store(0, Ordering::SeqCst);
    device.register_ioevents().unwrap();
    assert_eq!(vm.ioevent_addresses().len(), 2);
    drop(device);
    assert!(vm.ioevent_addresses().is_empty(), "dropping unregisters");
}

#[test]
fn ioeventfds_follow_a_bar_move_even_after_a_failed_intermediate_step() {
    let mut f = fixture();
    let old = f.bed.bar_addr;
    let new = 0x200_0010_0000u64;
    // The low register first: the BAR passes through 0x100_0010_0000, where registering
    // fails (another device's ioeventfd there, say).
    f.bed.vm.ioevent_failures.store(1, Ordering::SeqCst);
    f.bed.cfg_write(0x10, new as u32 | 0x4, 4);
    assert!(f.bed.vm.ioevent_addresses().is_empty());
    f.bed.cfg_write(0x14, (new >> 32) as u32, 4);
    assert_eq!(f.bed.mover.moves.lock().unwrap().len(), 2);
    assert_eq!(
        f.bed.vm.ioevent_addresses(),
        vec![new + 0x3000, new + 0x3004]
    );
    assert_eq!(
        *f.bed.vm.unregistered.lock().unwrap(),
        vec![old + 0x3000, old + 0x3004]
    );
}

#[test]
fn deferred_activation_and_reset_wait_for_the_serving_thread() {
    let mut f = fixture();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    f.bed.pci().set_deferred_work(Arc::new(move || {
        count.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(f.bed.negotiate(FEATURES));
    f.bed.setup_queue(0, 16, rings(0), 1);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    // DRIVER_OK reads back, but the device starts only when the work is served.
    assert_eq!(f.bed.status() & DRIVER_OK, DRIVER_OK);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(!f.bed.pci().is_active());
    assert!(f.seen.lock().unwrap().activations.is_empty());
    f.bed.pci().service_deferred();
    assert!(f.bed.pci().is_active());
    assert_eq!(f.seen.lock().unwrap().activations.len(), 1);

    // A reset of the running device: the status keeps reading non-zero (the driver polls
    // for 0) and later writes are ignored until the serving thread stops the device.
    f.bed.set_status(0);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_ne!(f.bed.status(), 0);
    f.bed.set_status(ACKNOWLEDGE);
    assert_eq!(f.seen.lock().unwrap().resets, 0);
    f.bed.pci().service_deferred();
    assert_eq!(f.seen.lock().unwrap().resets, 1);
    assert_eq!(f.bed.status(), 0);
    assert!(!f.bed.pci().is_active());

    // A reset before a deferred activation was served cancels it, at once.
    assert!(f.bed.negotiate(FEATURES));
    f.bed.setup_queue(0, 16, rings(0), 1);
    f.bed
        .set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    f.bed.set_status(0);
    assert_eq!(f.bed.status(), 0);
    f.bed.pci().service_deferred();
    assert!(!f.bed.pci().is_active());
    assert_eq!(f.seen.lock().unwrap().activations.len(), 1);
}

#[test]
fn a_saved_function_comes_back_in_a_new_one_and_starts() {
    let mut source = fixture();
    source.bed.init(VERSION_1, 8, rings(0));
    assert_eq!(source.seen.lock().unwrap().activations.len(), 1);
    // Running: the state is refused until paused.
    assert!(matches!(
        source.bed.pci().state(),
        Err(StateError::NotPaused)
    ));
    source.bed.pci().pause().unwrap();
    let state = source.bed.pci().state().unwrap();
    assert!(state.active);
    assert_eq!(state.queues[0].size, 8);
    assert_eq!(state.queues[0].desc_table, rings(0)[0]);
    assert!(state.msix.enabled);
    assert_eq!(state.queue_vectors[0], 1);

    let mut target = fixture();
    let moves = target.bed.pci().restore(&state).unwrap();
    assert!(moves.is_empty(), "the BAR is where the source had it");
    // Not started before guest memory is there.
    assert!(target.seen.lock().unwrap().activations.is_empty());
    target.bed.pci().start_restored().unwrap();
    let seen = target.seen.lock().unwrap().activations.clone();
    assert_eq!(seen, source.seen.lock().unwrap().activations);
    // The driver reads what it had set up.
    assert_eq!(target.bed.status(), source.bed.status());
    assert_eq!(target.bed.common_read(common::Q_MSIX, 2), 1);
    assert_eq!(target.bed.common_read(common::Q_DESC, 4), rings(0)[0]);
    target.bed.pci().pause().unwrap();
    assert_eq!(target.bed.pci().state().unwrap(), state);

    // A function the driver has touched takes no state.
    let mut used = fixture();
    used.bed.negotiate(VERSION_1);
    assert!(matches!(
        used.bed.pci().restore(&state),
        Err(StateError::NotFresh)
    ));
    // Nor one with another number of queues, or a vector past the table.
    let mut bad = state.clone();
    bad.queues.pop();
    assert!(matches!(
        fixture().bed.pci().restore(&bad),
        Err(StateError::QueueCount { .. })
    ));
    let mut bad = state.clone();
    bad.config_vector = 7;
    assert!(matches!(
        fixture().bed.pci().restore(&bad),
        Err(StateError::Vector { vector: 7, .. })
    ));
}
