//! [`TestBed`]: a virtio device behind [`VirtioPciDevice`] on a real `pci::PciBus`, reached
//! through ECAM and its BAR's bus device, wired as the VMM wires it, and a few driver steps
//! (feature negotiation, MSI-X, queue setup, DRIVER_OK) done with register accesses only.

use std::sync::{Arc, Mutex, MutexGuard};

use pci::{
    BarAllocator, BarMover, BarReprogram, BusDevice, DeviceError, MmioWindow, PciAddress,
    PciBarBusDevice, PciBus, PciConfigMmio, CAPABILITY_ID_MSIX, CAPABILITY_ID_VENDOR,
};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::fake_vm::FakeVm;
use super::msi::RecordingMsi;
use crate::transport::pci::capabilities::{
    VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_PCI_CAP_ISR_CFG,
    VIRTIO_PCI_CAP_NOTIFY_CFG,
};
use crate::transport::pci::status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::transport::pci::VirtioPciDevice;
use crate::VirtioDevice;

/// Guest memory of the test bed: 16 MiB from 0.
pub const MEM_SIZE: u64 = 16 << 20;

/// Offsets of `struct virtio_pci_common_cfg`'s fields.
pub mod common {
    /// device_feature_select
    pub const DFSELECT: u64 = 0x00;
    /// device_feature
    pub const DF: u64 = 0x04;
    /// driver_feature_select
    pub const GFSELECT: u64 = 0x08;
    /// driver_feature
    pub const GF: u64 = 0x0c;
    /// config_msix_vector
    pub const MSIX: u64 = 0x10;
    /// num_queues
    pub const NUMQ: u64 = 0x12;
    /// device_status
    pub const STATUS: u64 = 0x14;
    /// config_generation
    pub const CFGGEN: u64 = 0x15;
    /// queue_select
    pub const Q_SELECT: u64 = 0x16;
    /// queue_size
    pub const Q_SIZE: u64 = 0x18;
    /// queue_msix_vector
    pub const Q_MSIX: u64 = 0x1a;
    /// queue_enable
    pub const Q_ENABLE: u64 = 0x1c;
    /// queue_notify_off
    pub const Q_NOFF: u64 = 0x1e;
    /// queue_desc
    pub const Q_DESC: u64 = 0x20;
    /// queue_driver
    pub const Q_AVAIL: u64 = 0x28;
    /// queue_device
    pub const Q_USED: u64 = 0x30;
}

/// A BAR mover that records the moves (the VMM's would move the MMIO bus entry).
#[derive(Default)]
pub struct RecordingMover {
    /// `(slot, change)` per move.
    pub moves: Mutex<Vec<(u8, BarReprogram)>>,
}

impl BarMover for RecordingMover {
    fn move_bar(&self, slot: u8, change: &BarReprogram) -> Result<(), DeviceError> {
        self.moves.lock().unwrap().push((slot, *change));
        Ok(())
    }
}

/// A virtio capability as the driver found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundCap {
    /// Where it is in configuration space.
    pub at: u64,
    /// `bar`
    pub bar: u8,
    /// `offset`
    pub offset: u64,
    /// `length`
    pub length: u32,
    /// The fifth dword (notify_off_multiplier) for 20-byte capabilities.
    pub extra: u32,
}

/// See the module doc.
pub struct TestBed<D: VirtioDevice + 'static> {
    /// The device, as the VMM holds it.
    pub device: Arc<Mutex<VirtioPciDevice<D>>>,
    /// Records ioeventfds.
    pub vm: Arc<FakeVm>,
    /// Records interrupts.
    pub msi: Arc<RecordingMsi>,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// Records BAR moves.
    pub mover: Arc<RecordingMover>,
    ecam: PciConfigMmio,
    bar: PciBarBusDevice,
    /// Where BAR 0 is now.
    pub bar_addr: u64,
    /// The device's slot.
    pub slot: u8,
    /// BAR offsets the capabilities gave.
    pub common: u64,
    /// ISR offset.
    pub isr: u64,
    /// Device configuration offset.
    pub device_cfg: u64,
    /// Notification area offset.
    pub notify: u64,
    /// notify_off_multiplier.
    pub notify_multiplier: u64,
}

impl<D: VirtioDevice + 'static> TestBed<D> {
    /// `device` on a fresh bus, wired as the VMM does, capabilities read.
    pub fn new(device: D) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let vm = Arc::new(FakeVm::default());
        let msi = Arc::new(RecordingMsi::default());
        let pci = VirtioPciDevice::new(
            "test",
            device,
            Arc::new(crate::view::GuestMemoryView::new(mem.clone())),
            msi.clone(),
            vm.clone(),
        )
        .unwrap();
        let device = Arc::new(Mutex::new(pci));
        let mover = Arc::new(RecordingMover::default());
        let bus = Arc::new(Mutex::new(PciBus::new(mover.clone())));
        let mut allocator = BarAllocator::new(
            MmioWindow {
                base: 0xc000_0000,
                size: 0x1000_0000,
            },
            MmioWindow {
                base: 0x100_0000_0000,
                size: 0x100_0000_0000,
            },
        )
        .unwrap();
        let added = bus
            .lock()
            .unwrap()
            .add_device(device.clone(), &mut allocator)
            .unwrap();
        assert_eq!(added.bars.len(), 1);
        let bar = added.bars[0];
        let bar_bus_device = PciBarBusDevice::new(device.clone(), bar.index);
        device.lock().unwrap().register_ioevents().unwrap();
        let mut bed = TestBed {
            device,
            vm,
            msi,
            mem,
            mover,
            ecam: PciConfigMmio::new(bus),
            bar: bar_bus_device,
            bar_addr: bar.addr,
            slot: added.slot,
            common: 0,
            isr: 0,
            device_cfg: 0,
            notify: 0,
            notify_multiplier: 0,
        };
        let cap = |bed: &mut Self, t| bed.virtio_cap(t).expect("capability");
        bed.common = cap(&mut bed, VIRTIO_PCI_CAP_COMMON_CFG).offset;
        bed.isr = cap(&mut bed, VIRTIO_PCI_CAP_ISR_CFG).offset;
        bed.device_cfg = cap(&mut bed, VIRTIO_PCI_CAP_DEVICE_CFG).offset;
        let notify = cap(&mut bed, VIRTIO_PCI_CAP_NOTIFY_CFG);
        bed.notify = notify.offset;
        bed.notify_multiplier = u64::from(notify.extra);
        bed
    }

    /// The device, locked (as a vCPU thread would hold it).
    pub fn pci(&self) -> MutexGuard<'_, VirtioPciDevice<D>> {
        self.device.lock().unwrap()
    }

    fn ecam_offset(&self, byte: u64) -> u64 {
        let address = PciAddress {
            bus: 0,
            device: self.slot,
            function: 0,
            register: (byte / 4) as usize,
        };
        address.ecam_offset() + byte % 4
    }

    /// A configuration read of `len` bytes at byte `at`.
    pub fn cfg_read(&mut self, at: u64, len: usize) -> u32 {
        let mut data = vec![0u8; len];
        let offset = self.ecam_offset(at);
        self.ecam.read(offset, &mut data);
        let mut b = [0u8; 4];
        b[..len.min(4)].copy_from_slice(&data[..len.min(4)]);
        u32::from_le_bytes(b)
    }

    /// A configuration write of the low `len` bytes of `value` at byte `at`.
    pub fn cfg_write(&mut self, at: u64, value: u32, len: usize) {
        let offset = self.ecam_offset(at);
        self.ecam.write(offset, &value.to_le_bytes()[..len]);
    }

    /// A read of `len` bytes at BAR 0 offset `offset`.
    pub fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut data = vec![0u8; len];
        self.bar.read(offset, &mut data);
        let mut b = [0u8; 8];
        b[..len.min(8)].copy_from_slice(&data[..len.min(8)]);
        u64::from_le_bytes(b)
    }

    /// A write of the low `len` bytes of `value` at BAR 0 offset `offset`.
    pub fn write(&mut self, offset: u64, value: u64, len: usize) {
        self.bar.write(offset, &value.to_le_bytes()[..len]);
    }

    /// A read of the common configuration field at `field` with its width.
    pub fn common_read(&mut self, field: u64, len: usize) -> u64 {
        self.read(self.common + field, len)
    }

    /// A write of the common configuration field at `field` with its width.
    pub fn common_write(&mut self, field: u64, value: u64, len: usize) {
        self.write(self.common + field, value, len)
    }

    /// A 64-bit device configuration field, read as two 32-bit halves as Linux does.
    pub fn config_u64(&mut self, offset: u64) -> u64 {
        let lo = self.read(self.device_cfg + offset, 4);
        let hi = self.read(self.device_cfg + offset + 4, 4);
        hi << 32 | lo
    }

    /// The capabilities with `id`, as `(offset)` in list order.
    fn capabilities(&mut self, id: u8) -> Vec<u64> {
        let mut found = Vec::new();
        let mut at = u64::from(self.cfg_read(0x34, 1) as u8 & !3);
        while at != 0 && found.len() < 48 {
            if self.cfg_read(at, 1) as u8 == id {
                found.push(at);
            }
            at = u64::from(self.cfg_read(at + 1, 1) as u8 & !3);
        }
        found
    }

    /// The virtio vendor capability of `cfg_type`.
    pub fn virtio_cap(&mut self, cfg_type: u8) -> Option<FoundCap> {
        for at in self.capabilities(CAPABILITY_ID_VENDOR) {
            if self.cfg_read(at + 3, 1) as u8 == cfg_type {
                let len = self.cfg_read(at + 2, 1);
                return Some(FoundCap {
                    at,
                    bar: self.cfg_read(at + 4, 1) as u8,
                    offset: u64::from(self.cfg_read(at + 8, 4)),
                    length: self.cfg_read(at + 12, 4),
                    extra: if len >= 20 {
                        self.cfg_read(at + 16, 4)
                    } else {
                        0
                    },
                });
            }
        }
        None
    }

    /// Where the MSI-X capability is.
    pub fn msix_cap(&mut self) -> u64 {
        self.capabilities(CAPABILITY_ID_MSIX)[0]
    }

    /// The status byte.
    pub fn status(&mut self) -> u8 {
        self.common_read(common::STATUS, 1) as u8
    }

    /// Writes the status byte.
    pub fn set_status(&mut self, status: u8) {
        self.common_write(common::STATUS, u64::from(status), 1);
    }

    /// The 64 feature bits the device offers.
    pub fn device_features(&mut self) -> u64 {
        self.common_write(common::DFSELECT, 0, 4);
        let lo = self.common_read(common::DF, 4);
        self.common_write(common::DFSELECT, 1, 4);
        let hi = self.common_read(common::DF, 4);
        hi << 32 | lo
    }

    /// Reset, ACKNOWLEDGE, DRIVER, write `features`, FEATURES_OK. Returns whether the device
    /// kept FEATURES_OK.
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.set_status(0);
        self.set_status(ACKNOWLEDGE);
        self.set_status(ACKNOWLEDGE | DRIVER);
        self.common_write(common::GFSELECT, 0, 4);
        self.common_write(common::GF, features & 0xffff_ffff, 4);
        self.common_write(common::GFSELECT, 1, 4);
        self.common_write(common::GF, features >> 32, 4);
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.status() & FEATURES_OK != 0
    }

    /// Enables MSI-X and unmasks `vectors` table entries, each with its own message.
    pub fn enable_msix(&mut self, vectors: u16) {
        let cap = self.msix_cap();
        // Message control: enable.
        self.cfg_write(cap + 2, 0x8000, 2);
        let table = u64::from(self.cfg_read(cap + 4, 4) & !7);
        for v in 0..u64::from(vectors) {
            let entry = table + v * 16;
            self.write(entry, 0xfee0_0000, 4);
            self.write(entry + 4, 0, 4);
            self.write(entry + 8, 0x40 + v, 4);
            self.write(entry + 12, 0, 4);
        }
    }

    /// Sets up queue `queue` with `size` entries at the given ring addresses, on MSI-X vector
    /// `vector`, and enables it.
    pub fn setup_queue(&mut self, queue: u16, size: u16, rings: [u64; 3], vector: u16) {
        self.common_write(common::Q_SELECT, u64::from(queue), 2);
        self.common_write(common::Q_SIZE, u64::from(size), 2);
        self.common_write(common::Q_MSIX, u64::from(vector), 2);
        for (field, addr) in [common::Q_DESC, common::Q_AVAIL, common::Q_USED]
            .into_iter()
            .zip(rings)
        {
            self.common_write(field, addr & 0xffff_ffff, 4);
            self.common_write(field + 4, addr >> 32, 4);
        }
        self.common_write(common::Q_ENABLE, 1, 2);
    }

    /// The whole initialisation of a one-queue device: negotiate `features`, MSI-X with the
    /// configuration vector 0 and the queue on vector 1, the queue at `rings`, DRIVER_OK.
    pub fn init(&mut self, features: u64, size: u16, rings: [u64; 3]) {
        assert!(self.negotiate(features), "features refused");
        self.enable_msix(2);
        self.common_write(common::MSIX, 0, 2);
        assert_eq!(self.common_read(common::MSIX, 2), 0);
        self.setup_queue(0, size, rings, 1);
        assert_eq!(self.common_read(common::Q_MSIX, 2), 1);
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    /// Notifies queue `queue` the way KVM would deliver the driver's write: through the
    /// ioeventfd registered at its notification address.
    pub fn kick(&self, queue: u16) {
        let addr = self.bar_addr + self.notify + u64::from(queue) * self.notify_multiplier;
        assert!(self.vm.guest_write(addr), "no ioeventfd at {addr:#x}");
    }
}
