//! [`ProtectedRegion`]: the virtio-mem backend of a device region in dynamic memslots with
//! unplugged memory protected (docs/design.md, "Slots and protection").
//!
//! - A slot is in KVM only while it holds a plugged block (or one unplugged in the batch
//!   being answered).
//! - Host memory that is not plugged is `PROT_NONE`, block by block, so a guest that touches
//!   it gets nothing: where no slot is mapped KVM exits to the VMM (reads see zeros, writes
//!   are dropped, the access is counted); inside a mapped slot KVM cannot fault the page in.
//! - Plug: discard blocks unplugged earlier in the same batch (the guest gets zeros), make
//!   the rest accessible, populate (prefault, huge pages), then add the slots that were
//!   empty. Any failure undoes what was done and the request is answered BUSY.
//! - Unplug only marks blocks. [`BlockBackend::settle`], after the answers: remove the slots
//!   that emptied, take the blocks out of the VMM's guest memory view (waiting for readers
//!   of older views), protect, then discard.
//!
//! With `unplugged_inaccessible=off` every slot is mapped and the region stays read-write
//! (for guests older than Linux 5.16); unplug still gives memory back.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use virtio_devices::mem::{BlockBackend, BlockBitmap, Discarded};

use super::slots::SlotLayout;

/// What a [`ProtectedRegion`] does to the host and to KVM; offsets and lengths are bytes in
/// the region. The VMM's is [`super::host_ops::HostRegionOps`]; tests record the calls.
pub trait RegionOps {
    /// Makes `[offset, offset + len)` read-write (`true`) or `PROT_NONE` (`false`).
    fn protect(&mut self, offset: u64, len: u64, accessible: bool) -> io::Result<()>;
    /// Faults `[offset, offset + len)` in for writing.
    fn populate(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Gives `[offset, offset + len)` back to the host; it reads back as zeros.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// Adds slot `index` (region bytes `[offset, offset + len)`) to KVM.
    fn map_slot(&mut self, index: usize, offset: u64, len: u64) -> io::Result<()>;
    /// Removes slot `index` from KVM.
    fn unmap_slot(&mut self, index: usize, offset: u64, len: u64) -> io::Result<()>;
    /// From now on the VMM may access exactly `runs` of the region; returns once no thread
    /// holds a view with more.
    fn publish_view(&mut self, runs: Vec<(u64, u64)>) -> io::Result<()>;
}

/// Slot counts `vm.info` shows, updated by the backend.
#[derive(Debug, Default)]
pub struct SlotStatus {
    /// Slots in KVM now.
    pub mapped: AtomicU64,
}

/// See the module doc.
pub struct ProtectedRegion<O: RegionOps> {
    ops: O,
    layout: SlotLayout,
    block_size: u64,
    protect: bool,
    prefault: bool,
    /// Blocks the guest has plugged, as this backend was told.
    plugged: BlockBitmap,
    /// Blocks unplugged since the last settle: still accessible and in their slots.
    pending: BlockBitmap,
    /// Whether `pending` has any block (saves a scan of the bitmap per batch).
    any_pending: bool,
    /// Plugged and pending blocks per slot.
    slot_blocks: Vec<u64>,
    /// The view lacks blocks plugged since the last settle.
    view_stale: bool,
    status: Arc<SlotStatus>,
}

/// `(first, count)` runs of blocks, as byte `(offset, len)`.
fn bytes(runs: impl Iterator<Item = (u64, u64)>, block_size: u64) -> Vec<(u64, u64)> {
    runs.map(|(first, count)| (first * block_size, count * block_size))
        .collect()
}

/// The runs of blocks in `[first, first + count)` that are set (`set`) or clear in `bitmap`.
fn runs_within(bitmap: &BlockBitmap, first: u64, count: u64, set: bool) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    let end = first + count;
    let mut pos = first;
    while pos < end {
        let next = if set {
            bitmap.next_set(pos)
        } else {
            bitmap.next_clear(pos)
        };
        let Some(start) = next.filter(|&s| s < end) else {
            break;
        };
        let stop = if set {
            bitmap.next_clear(start)
        } else {
            bitmap.next_set(start)
        }
        .unwrap_or(end)
        .min(end);
        runs.push((start, stop - start));
        pos = stop;
    }
    runs
}

impl<O: RegionOps> ProtectedRegion<O> {
    /// A region of `layout`'s size in blocks of `block_size`, nothing plugged. With
    /// `protect`, the caller mapped it `PROT_NONE` and no slot is in KVM; without, every slot
    /// is added now and the whole region is in the view.
    pub fn new(
        mut ops: O,
        layout: SlotLayout,
        region_size: u64,
        block_size: u64,
        protect: bool,
        prefault: bool,
    ) -> io::Result<Self> {
        let blocks = region_size / block_size;
        let status = Arc::new(SlotStatus::default());
        if !protect {
            for index in 0..layout.count() {
                let (offset, len) = layout.range(index);
                ops.map_slot(index, offset, len)?;
            }
            ops.publish_view(vec![(0, region_size)])?;
            status
                .mapped
                .store(layout.count() as u64, Ordering::Relaxed);
        }
        Ok(ProtectedRegion {
            ops,
            layout,
            block_size,
            protect,
            prefault,
            plugged: BlockBitmap::new(blocks),
            pending: BlockBitmap::new(blocks),
            any_pending: false,
            slot_blocks: vec![0; layout.count()],
            view_stale: false,
            status,
        })
    }

    /// The counts for `vm.info`.
    pub fn status(&self) -> Arc<SlotStatus> {
        self.status.clone()
    }

    /// Blocks per slot that `runs` (block runs) add, as (slot, blocks).
    fn per_slot(&self, runs: &[(u64, u64)]) -> Vec<(usize, u64)> {
        let per_slot = self.layout.slot_size() / self.block_size;
        let mut out: Vec<(usize, u64)> = Vec::new();
        for &(first, count) in runs {
            let mut block = first;
            let end = first + count;
            while block < end {
                let slot = (block / per_slot) as usize;
                let slot_end = ((slot as u64 + 1) * per_slot).min(end);
                match out.last_mut() {
                    Some((s, n)) if *s == slot => *n += slot_end - block,
                    _ => out.push((slot, slot_end - block)),
                }
                block = slot_end;
            }
        }
        out
    }

    fn set_mapped_count(&self) {
        let mapped = self.slot_blocks.iter().filter(|&&n| n > 0).count();
        self.status.mapped.store(mapped as u64, Ordering::Relaxed);
    }

    /// Undoes the protection change of a failed plug.
    fn reclose(&mut self, runs: &[(u64, u64)]) {
        for &(offset, len) in runs {
            if let Err(e) = self.ops.protect(offset, len, false) {
                log::error!("virtio-mem: protecting [{offset:#x}, +{len:#x}) again failed: {e}");
            }
        }
    }

    fn plug_protected(&mut self, first: u64, count: u64) -> io::Result<()> {
        let bs = self.block_size;
        let closed_blocks = runs_within(&self.pending, first, count, false);
        let closed = bytes(closed_blocks.iter().copied(), bs);
        let mut opened = Vec::new();
        for &(offset, len) in &closed {
            if let Err(e) = self.ops.protect(offset, len, true) {
                self.reclose(&opened);
                return Err(e);
            }
            opened.push((offset, len));
        }
        if self.prefault {
            if let Err(e) = self.ops.populate(first * bs, count * bs) {
                self.reclose(&opened);
                return Err(e);
            }
        }
        let added = self.per_slot(&closed_blocks);
        let mut mapped_now = Vec::new();
        for &(slot, _) in &added {
            if self.slot_blocks[slot] == 0 {
                let (offset, len) = self.layout.range(slot);
                if let Err(e) = self.ops.map_slot(slot, offset, len) {
                    for &undo in &mapped_now {
                        let (o, l) = self.layout.range(undo);
                        if let Err(e) = self.ops.unmap_slot(undo, o, l) {
                            log::error!("virtio-mem: removing slot {undo} again failed: {e}");
                        }
                    }
                    self.reclose(&opened);
                    return Err(e);
                }
                mapped_now.push(slot);
            }
        }
        for (slot, n) in added {
            self.slot_blocks[slot] += n;
        }
        Ok(())
    }
}

impl<O: RegionOps> BlockBackend for ProtectedRegion<O> {
    fn settles_unplugs(&self) -> bool {
        true
    }

    fn plug(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let (first, count) = (offset / self.block_size, len / self.block_size);
        // Unplugged earlier in this batch: still accessible (and mapped); discard them so
        // the guest gets zeros.
        for (o, l) in bytes(
            runs_within(&self.pending, first, count, true).into_iter(),
            self.block_size,
        ) {
            self.ops.discard(o, l)?;
        }
        if self.protect {
            self.plug_protected(first, count)?;
        } else if self.prefault {
            self.ops.populate(offset, len)?;
        }
        // In range: the state checked the request against its own bitmap.
        let _ = self.plugged.set_range(first, count);
        let _ = self.pending.clear_range(first, count);
        if self.protect {
            self.view_stale = true;
            self.set_mapped_count();
        }
        Ok(())
    }

    fn unplug(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let (first, count) = (offset / self.block_size, len / self.block_size);
        // Only what is plugged here (a failed plug is unplugged again by the state; a system
        // reset unplugs the whole region).
        for (start, n) in runs_within(&self.plugged, first, count, true) {
            let _ = self.plugged.clear_range(start, n);
            let _ = self.pending.set_range(start, n);
            self.any_pending = true;
        }
        Ok(())
    }

    fn settle(&mut self) -> Discarded {
        let mut done = Discarded::default();
        if !self.any_pending && !self.view_stale {
            return done;
        }
        let pending: Vec<(u64, u64)> = self.pending.set_runs().collect();
        let bs = self.block_size;
        let mut protect = self.protect;
        if self.protect {
            for (slot, n) in self.per_slot(&pending) {
                self.slot_blocks[slot] -= n;
                if self.slot_blocks[slot] == 0 {
                    let (offset, len) = self.layout.range(slot);
                    if let Err(e) = self.ops.unmap_slot(slot, offset, len) {
                        log::error!("virtio-mem: removing emptied slot {slot} failed: {e}");
                    }
                }
            }
            self.set_mapped_count();
            let runs = bytes(self.plugged.set_runs(), bs);
            if let Err(e) = self.ops.publish_view(runs) {
                // The VMM may still reach these blocks: leave them accessible, discard only.
                log::error!("virtio-mem: updating the VMM's view of guest memory failed: {e}");
                protect = false;
            }
        }
        for (offset, len) in bytes(pending.into_iter(), bs) {
            let start = Instant::now();
            let mut result = Ok(());
            if protect {
                result = self.ops.protect(offset, len, false);
            }
            let result = result.and_then(|()| self.ops.discard(offset, len));
            done.times_ns
                .push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            if let Err(e) = result {
                done.failures.push((offset, len, e));
            }
        }
        self.pending.clear_all();
        self.any_pending = false;
        self.view_stale = false;
        done
    }
}

#[cfg(test)]
#[path = "protected_tests.rs"]
mod tests;
