//! A virtio-mem device's memory state saved and brought back (snapshot, migration): the
//! region's shape, the sizes, and the plugged blocks as runs.

use serde::{Deserialize, Serialize};

use super::bitmap::BlockBitmap;
use super::state::{BlockBackend, MemGeometry, VirtioMemState};

/// What [`VirtioMemState::saved`] records. Plugged blocks are runs of `[first block,
/// count]`, in order: a few runs where the bitmap would be thousands of words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemDeviceState {
    /// Guest-physical start of the region.
    pub addr: u64,
    /// Size of the region in bytes.
    pub region_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// The ACPI proximity domain, when the device has one.
    pub node_id: Option<u16>,
    /// What the host asked the guest to plug.
    pub requested_size: u64,
    /// Where the driver may plug.
    pub usable_region_size: u64,
    /// The plugged blocks.
    pub plugged: Vec<[u64; 2]>,
}

/// Saved state that does not describe this device, or not a possible one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SavedStateError {
    #[error(
        "the saved region is {saved_size:#x} bytes at {saved_addr:#x} in {saved_block:#x}-byte \
         blocks; this device's is {size:#x} at {addr:#x} in {block:#x}-byte blocks"
    )]
    Geometry {
        saved_addr: u64,
        saved_size: u64,
        saved_block: u64,
        addr: u64,
        size: u64,
        block: u64,
    },
    #[error("the saved device is on proximity domain {saved:?}, this one on {here:?}")]
    Node {
        saved: Option<u16>,
        here: Option<u16>,
    },
    #[error("requested_size {0:#x} is not a multiple of the block size within the region")]
    RequestedSize(u64),
    #[error("usable_region_size {0:#x} is not a multiple of the block size within the region")]
    UsableRegion(u64),
    #[error(
        "plugged run [{first}, +{count}) is empty, overlaps another, or lies outside the \
         usable region's {usable_blocks} blocks"
    )]
    Run {
        first: u64,
        count: u64,
        usable_blocks: u64,
    },
}

impl VirtioMemState {
    /// The state as it is now, to save.
    pub fn saved(&self) -> MemDeviceState {
        let geometry = self.geometry();
        MemDeviceState {
            addr: geometry.addr(),
            region_size: geometry.region_size(),
            block_size: geometry.block_size(),
            node_id: self.node_id(),
            requested_size: self.requested_size(),
            usable_region_size: self.usable_region_size(),
            plugged: self.bitmap().set_runs().map(|(f, n)| [f, n]).collect(),
        }
    }

    /// A device over `geometry` and `node_id` (as the VMM sets the device up) in the state
    /// `saved` describes, after checking that `saved` is a state such a device can be in:
    /// the same region and node, sizes that are block multiples within it, and plugged runs
    /// inside the usable region that do not overlap. The counters start at zero.
    pub fn from_saved(
        geometry: MemGeometry,
        node_id: Option<u16>,
        saved: &MemDeviceState,
    ) -> Result<Self, SavedStateError> {
        if (saved.addr, saved.region_size, saved.block_size)
            != (
                geometry.addr(),
                geometry.region_size(),
                geometry.block_size(),
            )
        {
            return Err(SavedStateError::Geometry {
                saved_addr: saved.addr,
                saved_size: saved.region_size,
                saved_block: saved.block_size,
                addr: geometry.addr(),
                size: geometry.region_size(),
                block: geometry.block_size(),
            });
        }
        if saved.node_id != node_id {
            return Err(SavedStateError::Node {
                saved: saved.node_id,
                here: node_id,
            });
        }
        if geometry.check_requested_size(saved.requested_size).is_err() {
            return Err(SavedStateError::RequestedSize(saved.requested_size));
        }
        if geometry
            .check_requested_size(saved.usable_region_size)
            .is_err()
        {
            return Err(SavedStateError::UsableRegion(saved.usable_region_size));
        }
        let usable_blocks = saved.usable_region_size / geometry.block_size();
        let mut bitmap = BlockBitmap::new(geometry.blocks());
        for &[first, count] in &saved.plugged {
            let bad = SavedStateError::Run {
                first,
                count,
                usable_blocks,
            };
            let inside = count > 0
                && first
                    .checked_add(count)
                    .is_some_and(|end| end <= usable_blocks);
            if !inside || !bitmap.all_clear(first, count) {
                return Err(bad);
            }
            bitmap.set_range(first, count).map_err(|_| bad)?;
        }
        Ok(VirtioMemState::with_bitmap(
            geometry,
            node_id,
            saved.requested_size,
            saved.usable_region_size,
            bitmap,
        ))
    }

    /// Has `backend` make every plugged block ready again (a state from
    /// [`from_saved`](Self::from_saved), over fresh host memory), then settle. On failure
    /// the backend may hold part of it; the device must not be used.
    pub fn replug<B: BlockBackend + ?Sized>(&self, backend: &mut B) -> std::io::Result<()> {
        for (offset, len) in self.plugged_ranges() {
            backend.plug(offset, len)?;
        }
        match backend.settle().failures.into_iter().next() {
            Some((_, _, e)) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::request::{Request, Response};
    use crate::mem::NoopBackend;

    const MIB: u64 = 1 << 20;

    fn geometry() -> MemGeometry {
        MemGeometry::new(1 << 32, 1 << 30, 2 * MIB).unwrap()
    }

    fn plugged_device() -> VirtioMemState {
        let mut state = VirtioMemState::new(geometry(), Some(1), 64 * MIB).unwrap();
        for (addr, blocks) in [(1 << 32, 3), ((1 << 32) + 10 * 2 * MIB, 2)] {
            let answer = state.handle(
                Request::Plug {
                    addr,
                    nb_blocks: blocks,
                },
                &mut NoopBackend,
            );
            assert_eq!(answer, Response::Ack(None));
        }
        state
    }

    #[test]
    fn a_saved_state_comes_back_whole() {
        let state = plugged_device();
        let saved = state.saved();
        assert_eq!(saved.plugged, vec![[0, 3], [10, 2]]);
        let back = VirtioMemState::from_saved(geometry(), Some(1), &saved).unwrap();
        assert_eq!(back.config(), state.config());
        assert_eq!(back.bitmap().words(), state.bitmap().words());
        assert_eq!(back.saved(), saved);
    }

    #[test]
    fn impossible_states_are_refused() {
        let saved = plugged_device().saved();
        let refused = |change: &dyn Fn(&mut MemDeviceState)| {
            let mut bad = saved.clone();
            change(&mut bad);
            VirtioMemState::from_saved(geometry(), Some(1), &bad).unwrap_err()
        };
        assert!(matches!(
            refused(&|s| s.addr += 2 * MIB),
            SavedStateError::Geometry { .. }
        ));
        assert!(matches!(
            refused(&|s| s.node_id = None),
            SavedStateError::Node { .. }
        ));
        assert!(matches!(
            refused(&|s| s.requested_size = 3),
            SavedStateError::RequestedSize(3)
        ));
        assert!(matches!(
            refused(&|s| s.usable_region_size = 2 << 30),
            SavedStateError::UsableRegion(_)
        ));
        assert!(matches!(
            refused(&|s| s.plugged.push([1, 1])),
            SavedStateError::Run { .. }
        ));
        assert!(matches!(
            refused(&|s| s.plugged.push([20, 0])),
            SavedStateError::Run { .. }
        ));
        assert!(matches!(
            refused(&|s| s.plugged.push([u64::MAX, 2])),
            SavedStateError::Run { .. }
        ));
        assert!(matches!(
            refused(&|s| s.plugged.push([s.usable_region_size / (2 * MIB), 1])),
            SavedStateError::Run { .. }
        ));
    }
}
