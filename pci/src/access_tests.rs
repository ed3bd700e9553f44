//! End-to-end tests: a device on the bus, reached through the ports and through ECAM.

use std::sync::{Arc, Mutex};

use crate::*;

/// A device with a 32-bit and a 64-bit BAR and a vendor capability; it records BAR
/// accesses and moves.
struct TestDevice {
    config: PciConfiguration,
    bar_writes: Vec<(u8, u64, Vec<u8>)>,
    moves: Vec<BarReprogram>,
}

impl TestDevice {
    fn new() -> Self {
        let mut config = PciConfiguration::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x105a,
            class_code: 0x05,
            subclass: 0x00,
            ..PciHeader::default()
        });
        config
            .add_capability(CAPABILITY_ID_VENDOR, &[0x10, 0x20])
            .unwrap();
        TestDevice {
            config,
            bar_writes: Vec::new(),
            moves: Vec::new(),
        }
    }
}

impl PciDevice for TestDevice {
    fn bar_requests(&self) -> Vec<BarRequest> {
        vec![
            BarRequest {
                index: 0,
                size: 0x100,
                kind: BarKind::Memory32,
                prefetchable: false,
            },
            BarRequest {
                index: 2,
                size: 0x3000,
                kind: BarKind::Memory64,
                prefetchable: true,
            },
        ]
    }
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
    fn read_bar(&mut self, index: u8, offset: u64, data: &mut [u8]) {
        data.fill(index * 0x10 + offset as u8);
    }
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) {
        self.bar_writes.push((index, offset, data.to_vec()));
    }
    fn move_bar(&mut self, change: &BarReprogram) -> Result<(), DeviceError> {
        self.moves.push(*change);
        Ok(())
    }
}

/// Records the moves the VMM was asked to make.
#[derive(Default)]
struct Mover(Mutex<Vec<(u8, BarReprogram)>>);

impl BarMover for Mover {
    fn move_bar(&self, slot: u8, change: &BarReprogram) -> Result<(), DeviceError> {
        self.0.lock().unwrap().push((slot, *change));
        Ok(())
    }
}

struct Machine {
    bus: Arc<Mutex<PciBus>>,
    io: PciConfigIo,
    ecam: PciConfigMmio,
    device: Arc<Mutex<TestDevice>>,
    mover: Arc<Mover>,
    added: AddedDevice,
}

fn machine() -> Machine {
    let mover = Arc::new(Mover::default());
    let bus = Arc::new(Mutex::new(PciBus::new(mover.clone())));
    let mut allocator = BarAllocator::new(
        MmioWindow {
            base: 0xc000_0000,
            size: 0x1000_0000,
        },
        MmioWindow {
            base: 0x100_0000_0000,
            size: 0x10_0000_0000,
        },
    )
    .unwrap();
    let device = Arc::new(Mutex::new(TestDevice::new()));
    let added = bus
        .lock()
        .unwrap()
        .add_device(device.clone(), &mut allocator)
        .unwrap();
    Machine {
        io: PciConfigIo::new(bus.clone()),
        ecam: PciConfigMmio::new(bus.clone()),
        bus,
        device,
        mover,
        added,
    }
}

fn select(io: &mut PciConfigIo, device: u8, register: usize) {
    let address = PciAddress {
        bus: 0,
        device,
        function: 0,
        register,
    };
    io.write(0, &address.config_address().to_le_bytes());
}

fn io_read32(io: &mut PciConfigIo, device: u8, register: usize) -> u32 {
    select(io, device, register);
    let mut b = [0u8; 4];
    io.read(4, &mut b);
    u32::from_le_bytes(b)
}

fn io_write32(io: &mut PciConfigIo, device: u8, register: usize, value: u32) {
    select(io, device, register);
    io.write(4, &value.to_le_bytes());
}

fn ecam_offset(device: u8, register: usize) -> u64 {
    PciAddress {
        bus: 0,
        device,
        function: 0,
        register,
    }
    .ecam_offset()
}

fn ecam_read32(ecam: &mut PciConfigMmio, device: u8, register: usize) -> u32 {
    let mut b = [0u8; 4];
    ecam.read(ecam_offset(device, register), &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn host_bridge_at_slot_0() {
    let mut m = machine();
    assert_eq!(io_read32(&mut m.io, 0, 0), 0x0d57_8086);
    assert_eq!(io_read32(&mut m.io, 0, 2) >> 16, 0x0600);
    assert_eq!(io_read32(&mut m.io, 0, 3), 0, "header type 0");
    assert_eq!(ecam_read32(&mut m.ecam, 0, 0), 0x0d57_8086);
}

#[test]
fn device_added_in_slot_1_with_its_bars_placed() {
    let mut m = machine();
    assert_eq!(m.added.slot, 1);
    assert_eq!(
        m.added.bars,
        vec![
            BarRegion {
                index: 0,
                addr: 0xc000_0000,
                size: 0x1000,
                kind: BarKind::Memory32,
                prefetchable: false
            },
            BarRegion {
                index: 2,
                addr: 0x100_0000_0000,
                size: 0x4000,
                kind: BarKind::Memory64,
                prefetchable: true
            },
        ]
    );
    assert_eq!(io_read32(&mut m.io, 1, 0), 0x105a_1af4);
    assert_eq!(io_read32(&mut m.io, 1, 4), 0xc000_0000);
    assert_eq!(io_read32(&mut m.io, 1, 6), 0x0000_000c);
    assert_eq!(io_read32(&mut m.io, 1, 7), 0x0000_0100);
}

#[test]
fn config_address_register_reads_back_only_as_a_dword() {
    let mut m = machine();
    m.io.write(0, &0x8000_0810u32.to_le_bytes());
    let mut b = [0u8; 4];
    m.io.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x8000_0810);
    // A byte write to 0xCFB (Linux's type-1 probe) or 0xCF9 leaves it alone.
    m.io.write(3, &[0x01]);
    m.io.write(1, &[0x06]);
    m.io.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x8000_0810);
    let mut one = [0u8; 1];
    m.io.read(1, &mut one);
    assert_eq!(one, [0xff]);
}

#[test]
fn cf8_cfc_byte_and_word_accesses() {
    let mut m = machine();
    select(&mut m.io, 1, 0);
    let mut w = [0u8; 2];
    m.io.read(6, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x105a, "word at 0xCFE: device id");
    let mut b = [0u8; 1];
    m.io.read(5, &mut b);
    assert_eq!(b, [0x1a]);
    // Interrupt line: byte write at 0xCFC, read back as byte and dword.
    select(&mut m.io, 1, 15);
    m.io.write(4, &[0x0a]);
    m.io.read(4, &mut b);
    assert_eq!(b, [0x0a]);
    assert_eq!(io_read32(&mut m.io, 1, 15), 0x0a);
    // Command register by word at 0xCFC.
    select(&mut m.io, 1, 1);
    m.io.write(4, &0x0006u16.to_le_bytes());
    assert_eq!(io_read32(&mut m.io, 1, 1) & 0xffff, 0x0006);
    assert_eq!(
        io_read32(&mut m.io, 1, 1) >> 16,
        0x0010,
        "capability list bit"
    );
    // Word at 0xCFF runs past the data port: all ones, not written.
    select(&mut m.io, 1, 15);
    m.io.read(7, &mut w);
    assert_eq!(w, [0xff; 2]);
    m.io.write(7, &[0x55, 0x55]);
    assert_eq!(io_read32(&mut m.io, 1, 15), 0x0a);
}

#[test]
fn config_address_disabled_or_absent_reads_all_ones() {
    let mut m = machine();
    // Enable bit clear.
    m.io.write(0, &0x0000_0800u32.to_le_bytes());
    let mut b = [0u8; 4];
    m.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Empty slot, other function, other bus.
    assert_eq!(io_read32(&mut m.io, 2, 0), 0xffff_ffff);
    assert_eq!(io_read32(&mut m.io, 31, 0), 0xffff_ffff);
    m.io.write(0, &0x8000_0900u32.to_le_bytes());
    m.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4], "function 1 of the device");
    m.io.write(0, &0x8001_0000u32.to_le_bytes());
    m.io.read(4, &mut b);
    assert_eq!(b, [0xff; 4], "bus 1");
    // ECAM sees the same.
    assert_eq!(ecam_read32(&mut m.ecam, 2, 0), 0xffff_ffff);
    m.ecam.read(1 << 20, &mut b);
    assert_eq!(b, [0xff; 4]);
    m.ecam.read(1 << 15 | 3 << 12, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Writes to absent functions go nowhere (and do not panic).
    io_write32(&mut m.io, 2, 1, 0xffff_ffff);
    m.ecam.write(ecam_offset(7, 1), &[0xff; 4]);
}

#[test]
fn ecam_addressing_and_narrow_accesses() {
    let mut m = machine();
    assert_eq!(ecam_read32(&mut m.ecam, 1, 0), 0x105a_1af4);
    let mut w = [0u8; 2];
    m.ecam.read(ecam_offset(1, 0) + 2, &mut w);
    assert_eq!(u16::from_le_bytes(w), 0x105a);
    let mut b = [0u8; 1];
    m.ecam.read(ecam_offset(1, 2) + 3, &mut b);
    assert_eq!(b, [0x05], "class code");
    m.ecam.write(ecam_offset(1, 15), &[0x0b]);
    assert_eq!(
        io_read32(&mut m.io, 1, 15),
        0x0b,
        "same space through the ports"
    );
    // Capabilities pointer and the capability itself.
    m.ecam.read(ecam_offset(1, 13), &mut b);
    assert_eq!(b, [0x40]);
    assert_eq!(ecam_read32(&mut m.ecam, 1, 0x10), 0x2010_0009);
    // Extended space reads zero; an access crossing a dword reads all ones.
    assert_eq!(ecam_read32(&mut m.ecam, 1, 0x40), 0);
    assert_eq!(ecam_read32(&mut m.ecam, 1, 0x3ff), 0);
    let mut d = [0u8; 4];
    m.ecam.read(ecam_offset(1, 0) + 2, &mut d);
    assert_eq!(d, [0xff; 4]);
}

#[test]
fn bar_probe_through_the_ports_and_a_move_through_ecam() {
    let mut m = machine();
    // Size probe of the 64-bit BAR, Linux style: no moves.
    io_write32(&mut m.io, 1, 6, 0xffff_ffff);
    assert_eq!(io_read32(&mut m.io, 1, 6), 0xffff_c00c);
    io_write32(&mut m.io, 1, 6, 0x0000_000c);
    io_write32(&mut m.io, 1, 7, 0xffff_ffff);
    assert_eq!(io_read32(&mut m.io, 1, 7), 0xffff_ffff);
    io_write32(&mut m.io, 1, 7, 0x0000_0100);
    assert!(m.mover.0.lock().unwrap().is_empty());
    // The guest moves the 32-bit BAR.
    m.ecam
        .write(ecam_offset(1, 4), &0xc800_0000u32.to_le_bytes());
    let expected = BarReprogram {
        index: 0,
        old_addr: 0xc000_0000,
        new_addr: 0xc800_0000,
        size: 0x1000,
        kind: BarKind::Memory32,
    };
    assert_eq!(*m.mover.0.lock().unwrap(), vec![(1, expected)]);
    assert_eq!(m.device.lock().unwrap().moves, vec![expected]);
}

#[test]
fn bar_bus_device_forwards_to_the_device() {
    let m = machine();
    let device: Arc<Mutex<dyn PciDevice>> = m.device.clone();
    let mut bar = PciBarBusDevice::new(device, 2);
    let mut b = [0u8; 2];
    bar.read(3, &mut b);
    assert_eq!(b, [0x23; 2]);
    bar.write(8, &[1, 2, 3, 4]);
    assert_eq!(
        m.device.lock().unwrap().bar_writes,
        vec![(2, 8, vec![1, 2, 3, 4])]
    );
}

#[test]
fn bus_fills_up_at_32_devices() {
    let m = machine();
    let mut allocator = BarAllocator::new(
        MmioWindow {
            base: 0xd000_0000,
            size: 0x1000_0000,
        },
        MmioWindow {
            base: 0x200_0000_0000,
            size: 0x10_0000_0000,
        },
    )
    .unwrap();
    let mut bus = m.bus.lock().unwrap();
    for slot in 2..32 {
        let added = bus
            .add_device(Arc::new(Mutex::new(TestDevice::new())), &mut allocator)
            .unwrap();
        assert_eq!(added.slot, slot);
    }
    assert!(matches!(
        bus.add_device(Arc::new(Mutex::new(TestDevice::new())), &mut allocator),
        Err(PciBusError::Full)
    ));
    assert!(bus.device(31).is_some());
    assert!(bus.device(32).is_none());
}

#[test]
fn a_device_whose_bars_do_not_fit_is_not_added() {
    let mover = Arc::new(Mover::default());
    let mut bus = PciBus::new(mover);
    let mut allocator = BarAllocator::new(
        MmioWindow {
            base: 0xc000_0000,
            size: 0x1000_0000,
        },
        MmioWindow::default(),
    )
    .unwrap();
    let err = bus
        .add_device(Arc::new(Mutex::new(TestDevice::new())), &mut allocator)
        .unwrap_err();
    assert!(matches!(err, PciBusError::Allocate { slot: 1, .. }));
    assert!(bus.device(1).is_none());
    // The 32-bit BAR allocated before the failure was given back.
    let again = allocator
        .allocate(&BarRequest {
            index: 0,
            size: 0x1000,
            kind: BarKind::Memory32,
            prefetchable: false,
        })
        .unwrap();
    assert_eq!(again.addr, 0xc000_0000);
}

#[test]
fn no_panic_on_any_offset_or_size() {
    let mut m = machine();
    let sizes = [1usize, 2, 3, 4, 8];
    // Every port offset (and some beyond), every register of the device through CF8.
    for register in 0..64 {
        for offset in 0..10u64 {
            for &len in &sizes {
                select(&mut m.io, 1, register);
                let mut buf = [0x5au8; 8];
                m.io.read(offset, &mut buf[..len]);
                if offset >= 4 {
                    m.io.write(offset, &buf[..len]);
                }
            }
        }
    }
    // Every byte of the device's 4 KiB through ECAM, and far offsets.
    let base = ecam_offset(1, 0);
    let far = [u64::MAX, u64::MAX - 3, 0xfff_ffff, 0x1000_0000];
    for offset in (base..base + 0x1000).chain(far) {
        for &len in &sizes {
            let mut buf = [0xa5u8; 8];
            m.ecam.read(offset, &mut buf[..len]);
            m.ecam.write(offset, &buf[..len]);
        }
    }
    // Still there, still itself.
    assert_eq!(io_read32(&mut m.io, 1, 0), 0x105a_1af4);
    assert_eq!(io_read32(&mut m.io, 0, 0), 0x0d57_8086);
}
