//! The virtio vendor-specific capabilities (`struct virtio_pci_cap` and its notify and
//! PCI-configuration-access variants) that tell the driver where each area of BAR 0 is.
//!
//! ```text
//! +0  cap_vndr 0x09 | cap_next | cap_len | cfg_type
//! +4  bar | id | padding[2]
//! +8  offset (le32)
//! +12 length (le32)
//! +16 notify_off_multiplier (le32, NOTIFY only) or pci_cfg_data[4] (PCI_CFG only)
//! ```

use pci::{ConfigError, PciConfiguration, CAPABILITY_ID_VENDOR};

use super::layout::{
    BarLayout, COMMON_CFG_LEN, COMMON_CFG_OFFSET, DEVICE_CFG_OFFSET, ISR_LEN, ISR_OFFSET,
    NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER,
};

/// `cfg_type` of the common configuration capability.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// `cfg_type` of the notification capability.
pub const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
/// `cfg_type` of the ISR capability.
pub const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
/// `cfg_type` of the device configuration capability.
pub const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
/// `cfg_type` of the PCI configuration access capability.
pub const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

/// Length of `struct virtio_pci_cap`.
const CAP_LEN: u8 = 16;
/// Length of `struct virtio_pci_notify_cap` and `struct virtio_pci_cfg_cap`.
const CAP_LEN_EXTENDED: u8 = 20;

/// The bytes of a `virtio_pci_cap` after `cap_vndr` and `cap_next`: `cap_len`, `cfg_type`,
/// `bar`, `id`, padding, `offset`, `length`.
fn body(cap_len: u8, cfg_type: u8, offset: u64, length: u64) -> Vec<u8> {
    let mut b = vec![cap_len, cfg_type, 0, 0, 0, 0];
    // Every offset and length of the layout is below 64 KiB.
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    b
}

/// Where the PCI configuration access capability's fields are, as register indices of the
/// configuration space (the capability is dword aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciCfgCap {
    /// The register whose low byte is `bar`.
    pub bar_reg: usize,
    /// The `offset` register.
    pub offset_reg: usize,
    /// The `length` register.
    pub length_reg: usize,
    /// The `pci_cfg_data` register.
    pub data_reg: usize,
}

/// Appends the COMMON, ISR, DEVICE, NOTIFY and PCI_CFG capabilities for `layout` (all in
/// BAR 0) to `config`. Returns where the PCI_CFG capability's registers are.
pub fn add_virtio_capabilities(
    config: &mut PciConfiguration,
    layout: &BarLayout,
) -> Result<PciCfgCap, ConfigError> {
    let read_only =
        |config: &mut PciConfiguration, b: Vec<u8>| config.add_capability(CAPABILITY_ID_VENDOR, &b);
    read_only(
        config,
        body(
            CAP_LEN,
            VIRTIO_PCI_CAP_COMMON_CFG,
            COMMON_CFG_OFFSET,
            COMMON_CFG_LEN,
        ),
    )?;
    read_only(
        config,
        body(CAP_LEN, VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, ISR_LEN),
    )?;
    read_only(
        config,
        body(
            CAP_LEN,
            VIRTIO_PCI_CAP_DEVICE_CFG,
            DEVICE_CFG_OFFSET,
            layout.device_cfg_len(),
        ),
    )?;
    let mut notify = body(
        CAP_LEN_EXTENDED,
        VIRTIO_PCI_CAP_NOTIFY_CFG,
        NOTIFY_OFFSET,
        layout.notify_len(),
    );
    notify.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
    read_only(config, notify)?;

    // PCI_CFG: the driver writes bar, offset and length, then reads or writes the data.
    let mut pci_cfg = body(CAP_LEN_EXTENDED, VIRTIO_PCI_CAP_PCI_CFG, 0, 0);
    pci_cfg.extend_from_slice(&[0; 4]);
    let mut mask = vec![0u8; pci_cfg.len()];
    // bar (body byte 2), offset, length, pci_cfg_data (body bytes 6..18).
    mask[2] = 0xff;
    mask[6..].fill(0xff);
    let at = config.add_capability_with_mask(CAPABILITY_ID_VENDOR, &pci_cfg, &mask)?;
    let reg = at / 4;
    Ok(PciCfgCap {
        bar_reg: reg + 1,
        offset_reg: reg + 2,
        length_reg: reg + 3,
        data_reg: reg + 4,
    })
}

#[cfg(test)]
mod tests {
    use pci::PciHeader;

    use super::*;

    /// The capabilities as a driver walks them: (cfg_type, bar, offset, length, extra).
    fn walk(config: &PciConfiguration) -> Vec<(u8, u8, u32, u32, u32)> {
        config
            .capabilities()
            .into_iter()
            .filter(|&(id, _)| id == CAPABILITY_ID_VENDOR)
            .map(|(_, at)| {
                let r = |i: usize| config.read_register(at / 4 + i);
                let head = r(0).to_le_bytes();
                assert!(head[2] == CAP_LEN || head[2] == CAP_LEN_EXTENDED);
                let extra = if head[2] == CAP_LEN_EXTENDED { r(4) } else { 0 };
                (head[3], r(1) as u8, r(2), r(3), extra)
            })
            .collect()
    }

    #[test]
    fn capabilities_describe_the_layout() {
        let mut config = PciConfiguration::new(&PciHeader::default());
        let layout = BarLayout::new(1, 56).unwrap();
        let cap = add_virtio_capabilities(&mut config, &layout).unwrap();
        assert_eq!(
            walk(&config),
            vec![
                (VIRTIO_PCI_CAP_COMMON_CFG, 0, 0, 0x38, 0),
                (VIRTIO_PCI_CAP_ISR_CFG, 0, 0x1000, 1, 0),
                (VIRTIO_PCI_CAP_DEVICE_CFG, 0, 0x2000, 56, 0),
                (VIRTIO_PCI_CAP_NOTIFY_CFG, 0, 0x3000, 4, 4),
                (VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0, 0),
            ]
        );
        // Only the PCI_CFG fields are writable.
        config.write_register(cap.offset_reg, 0, &0x1234u32.to_le_bytes());
        config.write_register(cap.data_reg, 0, &[0xaa, 0xbb]);
        config.write_register(cap.bar_reg, 0, &[0xff, 0xff, 0xff, 0xff]);
        config.write_register(cap.bar_reg - 1, 0, &[0; 4]);
        assert_eq!(config.read_register(cap.offset_reg), 0x1234);
        assert_eq!(config.read_register(cap.data_reg), 0xbbaa);
        assert_eq!(config.read_register(cap.bar_reg), 0xff);
        assert_eq!(
            config.read_register(cap.bar_reg - 1) >> 16,
            u32::from(VIRTIO_PCI_CAP_PCI_CFG) << 8 | u32::from(CAP_LEN_EXTENDED)
        );
    }
}
