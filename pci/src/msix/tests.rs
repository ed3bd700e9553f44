use std::sync::{Arc, Mutex};

use super::*;
use crate::configuration::{PciConfiguration, PciHeader};
use crate::msi::MsiMessage;

/// What the fake group was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Update(u16, MsiMessage, bool),
    Trigger(u16),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Call>>);

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl MsiInterruptGroup for Recorder {
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool) -> Result<(), MsiError> {
        self.0
            .lock()
            .unwrap()
            .push(Call::Update(vector, msg, masked));
        Ok(())
    }
    fn trigger(&self, vector: u16) -> Result<(), MsiError> {
        self.0.lock().unwrap().push(Call::Trigger(vector));
        Ok(())
    }
}

fn msix(vectors: u16) -> (MsixConfig, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (MsixConfig::new(vectors, rec.clone()).unwrap(), rec)
}

fn write32(m: &mut MsixConfig, offset: u64, value: u32) {
    m.write_table(offset, &value.to_le_bytes());
}

fn read32(m: &MsixConfig, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    m.read_table(offset, &mut b);
    u32::from_le_bytes(b)
}

const MSG: MsiMessage = MsiMessage {
    addr_lo: 0xfee0_1000,
    addr_hi: 0,
    data: 0x4041,
};

/// Programs entry `v` with `MSG` and unmasks it.
fn program(m: &mut MsixConfig, v: u64) {
    write32(m, v * 16, MSG.addr_lo);
    write32(m, v * 16 + 4, MSG.addr_hi);
    write32(m, v * 16 + 8, MSG.data);
    write32(m, v * 16 + 12, 0);
}

#[test]
fn capability_bytes_and_checks() {
    let cap = MsixCapability::new(3, 1, 0x2000, 2, 0x3008).unwrap();
    assert_eq!(
        cap.body(),
        [0x02, 0x00, 0x01, 0x20, 0x00, 0x00, 0x0a, 0x30, 0x00, 0x00]
    );
    assert_eq!(cap.table(), (1, 0x2000));
    assert_eq!(cap.pba(), (2, 0x3008));
    assert_eq!(
        MsixCapability::new(0, 0, 0, 0, 0),
        Err(MsixError::VectorCount { vectors: 0 })
    );
    assert_eq!(
        MsixCapability::new(2049, 0, 0, 0, 0),
        Err(MsixError::VectorCount { vectors: 2049 })
    );
    assert_eq!(
        MsixCapability::new(1, 6, 0, 0, 0),
        Err(MsixError::Bir { bir: 6 })
    );
    assert!(matches!(
        MsixCapability::new(1, 0, 4, 0, 0),
        Err(MsixError::Offset { what: "table", .. })
    ));

    let mut config = PciConfiguration::new(&PciHeader::default());
    let at = cap.add_to(&mut config).unwrap();
    assert_eq!(at, 0x40);
    assert_eq!(config.read_register(0x10), 0x0002_0011);
    config.write_register(0x10, 0, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(
        msix_message_control(&config, at),
        0xc002,
        "only enable and mask are writable"
    );
    assert_eq!(config.read_register(0x11), 0x2001);

    // The device hands guest writes of message control on to its MsixConfig.
    let (mut m, _rec) = msix(3);
    m.config_written(&config, at, 0x11);
    assert!(!m.enabled(), "another register: ignored");
    m.config_written(&config, at, 0x10);
    assert!(m.enabled() && m.function_masked());
}

#[test]
fn table_reads_back_what_was_written() {
    let (mut m, rec) = msix(4);
    assert_eq!((m.table_len(), m.pba_len()), (64, 8));
    assert_eq!(read32(&m, 12), 1, "entries come out of reset masked");
    write32(&mut m, 16, 0xfee0_0000);
    write32(&mut m, 20, 0x1);
    write32(&mut m, 24, 0x31);
    assert_eq!(read32(&m, 16), 0xfee0_0000);
    assert_eq!(read32(&m, 20), 0x1);
    assert_eq!(read32(&m, 24), 0x31);
    // Qword access across address lo/hi.
    let mut q = [0u8; 8];
    m.read_table(16, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0x1_fee0_0000);
    m.write_table(32, &0x2_fee0_2000u64.to_le_bytes());
    assert_eq!(m.entry(2).unwrap().msg.address(), 0x2_fee0_2000);
    // Beyond the table: reads zero, writes ignored.
    assert_eq!(read32(&m, 64), 0);
    write32(&mut m, 64, 7);
    m.write_table(u64::MAX, &[1, 2]);
    // MSI-X is disabled: the vectors stay masked, so the group hears nothing.
    assert!(rec.take().is_empty());
}

#[test]
fn enable_unmask_and_trigger() {
    let (mut m, rec) = msix(2);
    // Linux: enable with the function mask, program and unmask, then drop the function mask.
    m.set_message_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
    assert!(rec.take().is_empty(), "still masked everywhere");
    program(&mut m, 1);
    assert!(m.masked(1));
    m.set_message_control(MSIX_ENABLE);
    assert_eq!(rec.take(), vec![Call::Update(1, MSG, false)]);
    assert!(!m.masked(1));
    assert!(m.masked(0));
    m.trigger(1).unwrap();
    assert_eq!(rec.take(), vec![Call::Trigger(1)]);
    assert!(matches!(
        m.trigger(2),
        Err(MsiError::VectorOutOfRange {
            vector: 2,
            count: 2
        })
    ));
}

#[test]
fn masked_vector_goes_pending_and_fires_on_unmask() {
    let (mut m, rec) = msix(70);
    m.set_message_control(MSIX_ENABLE);
    program(&mut m, 65);
    rec.take();
    write32(&mut m, 65 * 16 + 12, 1);
    assert_eq!(rec.take(), vec![Call::Update(65, MSG, true)]);
    m.trigger(65).unwrap();
    assert!(m.pending(65));
    assert!(rec.take().is_empty());
    let mut pba = [0u8; 8];
    m.read_pba(8, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1 << 1);
    m.write_pba(8, &[0; 8]);
    assert!(m.pending(65), "the PBA is read-only");
    write32(&mut m, 65 * 16 + 12, 0);
    assert_eq!(
        rec.take(),
        vec![Call::Update(65, MSG, false), Call::Trigger(65)]
    );
    assert!(!m.pending(65));
}

#[test]
fn function_mask_makes_pending_and_unmask_delivers() {
    let (mut m, rec) = msix(2);
    m.set_message_control(MSIX_ENABLE);
    program(&mut m, 0);
    rec.take();
    m.set_message_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
    assert_eq!(rec.take(), vec![Call::Update(0, MSG, true)]);
    m.trigger(0).unwrap();
    m.trigger(1).unwrap();
    assert!(m.pending(0) && m.pending(1));
    m.set_message_control(MSIX_ENABLE);
    // Vector 1 is still masked by its own bit: it stays pending.
    assert_eq!(
        rec.take(),
        vec![Call::Update(0, MSG, false), Call::Trigger(0)]
    );
    assert!(!m.pending(0) && m.pending(1));
}

#[test]
fn disabled_drops_interrupts_and_rewrites_are_quiet() {
    let (mut m, rec) = msix(1);
    m.trigger(0).unwrap();
    assert!(!m.pending(0));
    m.set_message_control(MSIX_ENABLE);
    program(&mut m, 0);
    rec.take();
    // Writing the same values again changes nothing.
    program(&mut m, 0);
    assert!(rec.take().is_empty());
    // Changing the data of an unmasked vector updates it.
    write32(&mut m, 8, 0x4042);
    let msg = MsiMessage {
        data: 0x4042,
        ..MSG
    };
    assert_eq!(rec.take(), vec![Call::Update(0, msg, false)]);
}

#[test]
fn reset_masks_everything() {
    let (mut m, rec) = msix(2);
    m.set_message_control(MSIX_ENABLE);
    program(&mut m, 0);
    rec.take();
    m.reset();
    assert!(!m.enabled());
    assert_eq!(m.entry(0), Some(MsixTableEntry::default()));
    assert_eq!(
        rec.take(),
        vec![
            Call::Update(0, MsiMessage::default(), true),
            Call::Update(1, MsiMessage::default(), true)
        ]
    );
}

#[test]
fn any_table_or_pba_access_is_safe() {
    let (mut m, _rec) = msix(3);
    m.set_message_control(MSIX_ENABLE);
    for offset in (0..80).chain([u64::MAX - 3, u64::MAX]) {
        for len in [1, 2, 3, 4, 8] {
            let mut buf = [0x5au8; 8];
            m.write_table(offset, &buf[..len]);
            m.read_table(offset, &mut buf[..len]);
            m.read_pba(offset, &mut buf[..len]);
            m.write_pba(offset, &buf[..len]);
        }
    }
}
