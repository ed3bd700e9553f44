//! How a virtio-mem region is cut into KVM memslots (docs/design.md, "Slots and
//! protection"): slots of one power-of-two size, each in KVM only while it holds at least
//! one plugged block, so that a large region with little plugged costs KVM (its rmap,
//! write-tracking and dirty-bitmap arrays, all sized by the slot) next to nothing.

use std::ops::Range;

/// The smallest default slot: 128 MiB, Linux's memory block size on x86-64, so that one
/// slot is what the guest onlines at a time.
pub const MIN_DEFAULT_SLOT_SIZE: u64 = 128 << 20;

/// The default slot size keeps a device at or under this many slots.
pub const MAX_DEFAULT_SLOTS: u64 = 512;

/// A region cut into slots; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    region_size: u64,
    slot_size: u64,
}

/// The default slot size for a region: `max(128 MiB, block_size)`, doubled until the region
/// needs at most [`MAX_DEFAULT_SLOTS`].
pub fn default_slot_size(region_size: u64, block_size: u64) -> u64 {
    let mut size = MIN_DEFAULT_SLOT_SIZE.max(block_size);
    while region_size.div_ceil(size) > MAX_DEFAULT_SLOTS {
        size *= 2;
    }
    size
}

/// Why a `slot_size=` cannot cut a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotSizeError {
    #[error("slot_size={0} is not a power of two")]
    NotPowerOfTwo(u64),
    #[error("slot_size={slot_size} is smaller than the block size ({block_size})")]
    BelowBlockSize { slot_size: u64, block_size: u64 },
}

/// Checks a `slot_size=` against the block size (the region size is a multiple of the
/// block size, so a power of two at least that large cuts it into whole blocks).
pub fn check_slot_size(slot_size: u64, block_size: u64) -> Result<(), SlotSizeError> {
    if !slot_size.is_power_of_two() {
        return Err(SlotSizeError::NotPowerOfTwo(slot_size));
    }
    if slot_size < block_size {
        return Err(SlotSizeError::BelowBlockSize {
            slot_size,
            block_size,
        });
    }
    Ok(())
}

impl SlotLayout {
    /// A region of `region_size` bytes in slots of `slot_size` (checked by
    /// [`check_slot_size`]; the last slot may be shorter).
    pub fn new(region_size: u64, slot_size: u64) -> Self {
        SlotLayout {
            region_size,
            slot_size,
        }
    }

    pub fn slot_size(&self) -> u64 {
        self.slot_size
    }

    /// How many slots the region has.
    pub fn count(&self) -> usize {
        // A region is at most 2^28 blocks of at least 2 MiB, and slots are at least a block.
        self.region_size.div_ceil(self.slot_size) as usize
    }

    /// The slot holding region offset `offset`.
    pub fn slot_of(&self, offset: u64) -> usize {
        (offset / self.slot_size) as usize
    }

    /// Slot `index` as (offset in the region, length).
    pub fn range(&self, index: usize) -> (u64, u64) {
        let start = index as u64 * self.slot_size;
        (start, self.slot_size.min(self.region_size - start))
    }

    /// The slots that `[offset, offset + len)` touches (`len` > 0).
    pub fn touching(&self, offset: u64, len: u64) -> Range<usize> {
        self.slot_of(offset)..self.slot_of(offset + len - 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn default_slot_size_keeps_a_device_under_512_slots() {
        assert_eq!(default_slot_size(GIB, 2 * MIB), 128 * MIB);
        assert_eq!(default_slot_size(64 * GIB, 2 * MIB), 128 * MIB);
        assert_eq!(default_slot_size(64 * GIB + 2 * MIB, 2 * MIB), 256 * MIB);
        assert_eq!(default_slot_size(1 << 40, 2 * MIB), 2 * GIB);
        assert_eq!(default_slot_size(GIB, GIB), GIB);
        assert_eq!(default_slot_size(4 * MIB, 2 * MIB), 128 * MIB);
        for region in [2 * MIB, GIB, 64 * GIB, 1 << 40, 100 << 40] {
            let size = default_slot_size(region, 2 * MIB);
            assert!(region.div_ceil(size) <= MAX_DEFAULT_SLOTS);
            assert!(size == 128 * MIB || region.div_ceil(size / 2) > MAX_DEFAULT_SLOTS);
        }
    }

    #[test]
    fn slot_sizes_must_be_powers_of_two_of_whole_blocks() {
        assert_eq!(check_slot_size(256 * MIB, 2 * MIB), Ok(()));
        assert_eq!(check_slot_size(2 * MIB, 2 * MIB), Ok(()));
        assert_eq!(
            check_slot_size(3 * MIB, 2 * MIB),
            Err(SlotSizeError::NotPowerOfTwo(3 * MIB))
        );
        assert_eq!(
            check_slot_size(MIB, 2 * MIB),
            Err(SlotSizeError::BelowBlockSize {
                slot_size: MIB,
                block_size: 2 * MIB
            })
        );
    }

    #[test]
    fn ranges_cover_the_region_and_the_last_slot_may_be_short() {
        let layout = SlotLayout::new(300 * MIB, 128 * MIB);
        assert_eq!(layout.count(), 3);
        assert_eq!(layout.range(0), (0, 128 * MIB));
        assert_eq!(layout.range(2), (256 * MIB, 44 * MIB));
        assert_eq!(layout.slot_of(128 * MIB - 1), 0);
        assert_eq!(layout.slot_of(128 * MIB), 1);
        assert_eq!(layout.touching(0, 2 * MIB), 0..1);
        assert_eq!(layout.touching(126 * MIB, 4 * MIB), 0..2);
        assert_eq!(layout.touching(0, 300 * MIB), 0..3);
        let total: u64 = (0..layout.count()).map(|i| layout.range(i).1).sum();
        assert_eq!(total, 300 * MIB);
    }
}
