//! The virtio-mem device configuration space and feature bits (docs/virtio-mem.md §1.2, §1.3).

use virtio_bindings::virtio_config;
use virtio_bindings::virtio_ids;

/// Virtio device ID of virtio-mem (docs/virtio-mem.md §1.1).
pub const VIRTIO_ID_MEM: u32 = virtio_ids::VIRTIO_ID_MEM;

/// Feature bit: `node_id` is valid and is an ACPI proximity domain (docs/virtio-mem.md §1.2, bit 0).
pub const VIRTIO_MEM_F_ACPI_PXM: u32 = 0;
/// Feature bit: the driver must not access unplugged memory at all (docs/virtio-mem.md §1.2, bit 1).
pub const VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE: u32 = 1;
/// Feature bit: block states survive suspend and resume (docs/virtio-mem.md §1.2, bit 2; virtio v1.4+).
/// Accordion does not offer it, so a conforming driver refuses to suspend the guest.
pub const VIRTIO_MEM_F_PERSISTENT_SUSPEND: u32 = 2;
/// Feature bit: the device conforms to virtio 1.0 or later (docs/virtio-mem.md §1.1: every
/// implementation offers it and QEMU forces it).
pub const VIRTIO_F_VERSION_1: u32 = virtio_config::VIRTIO_F_VERSION_1;

/// Size in bytes of `struct virtio_mem_config` (docs/virtio-mem.md §1.3).
pub const CONFIG_SPACE_SIZE: usize = 56;

/// The feature bits the device offers (docs/virtio-mem.md §3): `VIRTIO_F_VERSION_1`,
/// `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`, and `VIRTIO_MEM_F_ACPI_PXM` when the device
/// belongs to a guest NUMA node (`has_node` is true and `node_id` holds its proximity domain).
pub fn device_features(has_node: bool) -> u64 {
    let mut features = (1u64 << VIRTIO_F_VERSION_1) | (1u64 << VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE);
    if has_node {
        features |= 1u64 << VIRTIO_MEM_F_ACPI_PXM;
    }
    features
}

/// Whether the device can operate with the features the driver acknowledged.
///
/// `VIRTIO_F_VERSION_1` is required (docs/virtio-mem.md §1.1), and so is
/// `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE` when the region's unplugged memory is inaccessible
/// (`unplugged_inaccessible`): §1.2 lets the device refuse a driver that does not accept it,
/// which is one that may read unplugged memory (Linux before 5.16 does not know the bit).
pub fn features_acceptable(acked: u64, unplugged_inaccessible: bool) -> bool {
    let has = |bit: u32| acked & (1u64 << bit) != 0;
    has(VIRTIO_F_VERSION_1) && (!unplugged_inaccessible || has(VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE))
}

/// `struct virtio_mem_config` (docs/virtio-mem.md §1.3): what the driver reads from the device
/// configuration space. All fields are little-endian on the wire; the 6 padding bytes after
/// `node_id` read as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioMemConfig {
    /// Size and alignment of one block in bytes; a power of two.
    pub block_size: u64,
    /// ACPI proximity domain; meaningful only with `VIRTIO_MEM_F_ACPI_PXM`.
    pub node_id: u16,
    /// Guest-physical start of the device region; a multiple of `block_size`.
    pub addr: u64,
    /// Size of the whole region; a multiple of `block_size`.
    pub region_size: u64,
    /// Size of the front part of the region that may be plugged.
    pub usable_region_size: u64,
    /// Bytes currently plugged.
    pub plugged_size: u64,
    /// The target set by the host.
    pub requested_size: u64,
}

impl VirtioMemConfig {
    /// The configuration space as the driver sees it (docs/virtio-mem.md §1.3 offsets).
    pub fn to_bytes(&self) -> [u8; CONFIG_SPACE_SIZE] {
        let mut b = [0u8; CONFIG_SPACE_SIZE];
        b[0..8].copy_from_slice(&self.block_size.to_le_bytes());
        b[8..10].copy_from_slice(&self.node_id.to_le_bytes());
        // 10..16: padding, zero.
        b[16..24].copy_from_slice(&self.addr.to_le_bytes());
        b[24..32].copy_from_slice(&self.region_size.to_le_bytes());
        b[32..40].copy_from_slice(&self.usable_region_size.to_le_bytes());
        b[40..48].copy_from_slice(&self.plugged_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.requested_size.to_le_bytes());
        b
    }

    /// Parses the layout written by [`VirtioMemConfig::to_bytes`] (padding is ignored).
    pub fn from_bytes(b: &[u8; CONFIG_SPACE_SIZE]) -> Self {
        let le64 = |off: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[off..off + 8]);
            u64::from_le_bytes(w)
        };
        VirtioMemConfig {
            block_size: le64(0),
            node_id: u16::from_le_bytes([b[8], b[9]]),
            addr: le64(16),
            region_size: le64(24),
            usable_region_size: le64(32),
            plugged_size: le64(40),
            requested_size: le64(48),
        }
    }

    /// A driver read of `data.len()` bytes at `offset` into the configuration space.
    ///
    /// Never panics, whatever the offset and size: the bytes that overlap the 56-byte space
    /// are copied, every other byte of `data` is set to zero. Returns how many bytes came
    /// from the configuration space (0 for a read entirely outside it).
    pub fn read(&self, offset: u64, data: &mut [u8]) -> usize {
        let bytes = self.to_bytes();
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return 0;
        };
        if start >= CONFIG_SPACE_SIZE {
            return 0;
        }
        let n = data.len().min(CONFIG_SPACE_SIZE - start);
        data[..n].copy_from_slice(&bytes[start..start + n]);
        n
    }

    /// A driver write to the configuration space: ignored (docs/virtio-mem.md §1.3: the space is
    /// read-only for the driver, and a device can ignore writes). Logged at debug level only,
    /// so that a guest writing in a loop cannot flood the host's log.
    pub fn write(&self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-mem: ignoring a driver write of {} bytes to the read-only config space at offset {offset}",
            data.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VirtioMemConfig {
        VirtioMemConfig {
            block_size: 0x20_0000,
            node_id: 0x0102,
            addr: 0x1_4000_0000,
            region_size: 0x2_0000_0000,
            usable_region_size: 0x5000_0000,
            plugged_size: 0x4000_0000,
            requested_size: 0x4000_0000,
        }
    }

    #[test]
    fn layout_matches_reference_offsets() {
        let b = sample().to_bytes();
        assert_eq!(&b[0..8], &0x20_0000u64.to_le_bytes());
        assert_eq!(&b[8..10], &[0x02, 0x01]);
        assert_eq!(&b[10..16], &[0; 6], "padding reads as zero");
        assert_eq!(&b[16..24], &0x1_4000_0000u64.to_le_bytes());
        assert_eq!(&b[24..32], &0x2_0000_0000u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x5000_0000u64.to_le_bytes());
        assert_eq!(&b[40..48], &0x4000_0000u64.to_le_bytes());
        assert_eq!(&b[48..56], &0x4000_0000u64.to_le_bytes());
        assert_eq!(VirtioMemConfig::from_bytes(&b), sample());
    }

    #[test]
    fn read_of_each_field_at_its_offset() {
        let c = sample();
        let mut w = [0u8; 8];
        assert_eq!(c.read(32, &mut w), 8);
        assert_eq!(u64::from_le_bytes(w), c.usable_region_size);
        let mut h = [0u8; 2];
        assert_eq!(c.read(8, &mut h), 2);
        assert_eq!(u16::from_le_bytes(h), c.node_id);
        // A 4-byte read of the high half of a 64-bit field, as a 32-bit PCI access does.
        let mut d = [0u8; 4];
        assert_eq!(c.read(28, &mut d), 4);
        assert_eq!(u32::from_le_bytes(d), 2);
    }

    #[test]
    fn read_never_panics_and_zero_fills_outside() {
        let c = sample();
        let full = c.to_bytes();
        let offsets = [
            0u64,
            1,
            7,
            54,
            55,
            56,
            57,
            4096,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &off in &offsets {
            for len in [0usize, 1, 2, 4, 8, 56, 100] {
                let mut data = vec![0xAAu8; len];
                let n = c.read(off, &mut data);
                let start = usize::try_from(off).unwrap_or(usize::MAX);
                let expect = if start >= CONFIG_SPACE_SIZE {
                    0
                } else {
                    len.min(CONFIG_SPACE_SIZE - start)
                };
                assert_eq!(n, expect, "offset {off} len {len}");
                assert_eq!(&data[..n], &full[start.min(56)..start.min(56) + n]);
                assert!(data[n..].iter().all(|&x| x == 0));
            }
        }
    }

    #[test]
    fn writes_are_ignored() {
        let c = sample();
        c.write(0, &[1, 2, 3, 4]);
        c.write(u64::MAX, &[]);
        assert_eq!(c, sample());
    }

    #[test]
    fn features() {
        assert_eq!(VIRTIO_F_VERSION_1, 32);
        assert_eq!(VIRTIO_ID_MEM, 24);
        let f = device_features(false);
        assert_eq!(f, (1 << 32) | (1 << 1));
        assert_eq!(device_features(true), f | 1);
        // Unplugged memory accessible: VERSION_1 is enough.
        assert!(features_acceptable(1 << 32, false));
        assert!(features_acceptable(f, false));
        assert!(!features_acceptable(1 << 1, false));
        assert!(!features_acceptable(0, false));
        // Inaccessible: the driver must know it.
        assert!(features_acceptable(f, true));
        assert!(!features_acceptable(1 << 32, true));
        assert!(!features_acceptable(1 << 1, true));
    }
}
