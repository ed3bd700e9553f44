//! The order of protection, slot and view changes, against a fake that records them.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;

const BS: u64 = 2 << 20;
const SLOT: u64 = 8 * BS;
const REGION: u64 = 4 * SLOT;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Open(u64, u64),
    Close(u64, u64),
    Populate(u64, u64),
    Discard(u64, u64),
    Map(usize),
    Unmap(usize),
    View(Vec<(u64, u64)>),
}
use Call::*;

#[derive(Default)]
struct Fake {
    calls: Rc<RefCell<Vec<Call>>>,
    fail_map: Rc<RefCell<Option<usize>>>,
    fail_populate: Rc<RefCell<bool>>,
}

impl RegionOps for Fake {
    fn protect(&mut self, offset: u64, len: u64, accessible: bool) -> io::Result<()> {
        let call = if accessible { Open } else { Close };
        self.calls.borrow_mut().push(call(offset, len));
        Ok(())
    }
    fn populate(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.calls.borrow_mut().push(Populate(offset, len));
        if *self.fail_populate.borrow() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        Ok(())
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.calls.borrow_mut().push(Discard(offset, len));
        Ok(())
    }
    fn map_slot(&mut self, index: usize, _offset: u64, _len: u64) -> io::Result<()> {
        self.calls.borrow_mut().push(Map(index));
        if *self.fail_map.borrow() == Some(index) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
    fn unmap_slot(&mut self, index: usize, _offset: u64, _len: u64) -> io::Result<()> {
        self.calls.borrow_mut().push(Unmap(index));
        Ok(())
    }
    fn publish_view(&mut self, runs: Vec<(u64, u64)>) -> io::Result<()> {
        self.calls.borrow_mut().push(View(runs));
        Ok(())
    }
}

struct Bed {
    region: ProtectedRegion<Fake>,
    calls: Rc<RefCell<Vec<Call>>>,
    fail_map: Rc<RefCell<Option<usize>>>,
    fail_populate: Rc<RefCell<bool>>,
}

impl Bed {
    fn new(protect: bool, prefault: bool) -> Self {
        let fake = Fake::default();
        let (calls, fail_map, fail_populate) = (
            fake.calls.clone(),
            fake.fail_map.clone(),
            fake.fail_populate.clone(),
        );
        let layout = SlotLayout::new(REGION, SLOT);
        let region = ProtectedRegion::new(fake, layout, REGION, BS, protect, prefault).unwrap();
        Bed {
            region,
            calls,
            fail_map,
            fail_populate,
        }
    }

    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    fn mapped(&self) -> u64 {
        self.region.status().mapped.load(Ordering::Relaxed)
    }
}

#[test]
fn plug_opens_populates_then_maps_and_the_view_follows_at_settle() {
    let mut bed = Bed::new(true, true);
    assert!(bed.take().is_empty(), "nothing mapped or opened up front");
    // Two blocks across the boundary of slots 0 and 1.
    bed.region.plug(7 * BS, 2 * BS).unwrap();
    assert_eq!(
        bed.take(),
        vec![
            Open(7 * BS, 2 * BS),
            Populate(7 * BS, 2 * BS),
            Map(0),
            Map(1)
        ]
    );
    assert_eq!(bed.mapped(), 2);
    let done = bed.region.settle();
    assert!(done.times_ns.is_empty());
    assert_eq!(bed.take(), vec![View(vec![(7 * BS, 2 * BS)])]);
    // Settling again has nothing to do.
    bed.region.settle();
    assert!(bed.take().is_empty());
}

#[test]
fn unplug_waits_for_settle_then_unmaps_hides_protects_and_discards_in_that_order() {
    let mut bed = Bed::new(true, false);
    bed.region.plug(0, 2 * BS).unwrap();
    bed.region.plug(8 * BS, BS).unwrap();
    bed.region.settle();
    bed.take();
    bed.region.unplug(8 * BS, BS).unwrap();
    bed.region.unplug(BS, BS).unwrap();
    assert!(
        bed.take().is_empty(),
        "nothing happens before the answers are out"
    );
    let done = bed.region.settle();
    assert_eq!(done.times_ns.len(), 2);
    assert_eq!(
        bed.take(),
        vec![
            Unmap(1),
            View(vec![(0, BS)]),
            Close(BS, BS),
            Discard(BS, BS),
            Close(8 * BS, BS),
            Discard(8 * BS, BS),
        ]
    );
    assert_eq!(bed.mapped(), 1, "slot 0 still holds a plugged block");
}

#[test]
fn a_block_unplugged_and_plugged_in_one_batch_is_zeroed_not_reprotected() {
    let mut bed = Bed::new(true, false);
    bed.region.plug(0, 2 * BS).unwrap();
    bed.region.settle();
    bed.take();
    bed.region.unplug(0, 2 * BS).unwrap();
    bed.region.plug(BS, 2 * BS).unwrap();
    assert_eq!(bed.take(), vec![Discard(BS, BS), Open(2 * BS, BS)]);
    bed.region.settle();
    assert_eq!(
        bed.take(),
        vec![View(vec![(BS, 2 * BS)]), Close(0, BS), Discard(0, BS)]
    );
    assert_eq!(bed.mapped(), 1);
}

#[test]
fn a_plug_that_cannot_map_its_slot_undoes_everything() {
    let mut bed = Bed::new(true, false);
    *bed.fail_map.borrow_mut() = Some(1);
    assert!(bed.region.plug(7 * BS, 2 * BS).is_err());
    assert_eq!(
        bed.take(),
        vec![
            Open(7 * BS, 2 * BS),
            Map(0),
            Map(1),
            Unmap(0),
            Close(7 * BS, 2 * BS)
        ]
    );
    assert_eq!(bed.mapped(), 0);
    // The state then unplugs the range again: nothing was plugged, nothing to do.
    bed.region.unplug(7 * BS, 2 * BS).unwrap();
    bed.region.settle();
    assert!(bed.take().is_empty());
    // And the next attempt works.
    *bed.fail_map.borrow_mut() = None;
    bed.region.plug(7 * BS, 2 * BS).unwrap();
    assert_eq!(bed.mapped(), 2);
}

#[test]
fn a_failed_populate_closes_the_blocks_again() {
    let mut bed = Bed::new(true, true);
    *bed.fail_populate.borrow_mut() = true;
    assert!(bed.region.plug(0, BS).is_err());
    assert_eq!(bed.take(), vec![Open(0, BS), Populate(0, BS), Close(0, BS)]);
    assert_eq!(bed.mapped(), 0);
}

#[test]
fn a_system_reset_unplugs_only_what_is_plugged_and_empties_every_slot() {
    let mut bed = Bed::new(true, false);
    bed.region.plug(0, BS).unwrap();
    bed.region.plug(3 * SLOT, BS).unwrap();
    bed.region.settle();
    bed.take();
    bed.region.unplug(0, REGION).unwrap();
    bed.region.settle();
    assert_eq!(
        bed.take(),
        vec![
            Unmap(0),
            Unmap(3),
            View(vec![]),
            Close(0, BS),
            Discard(0, BS),
            Close(3 * SLOT, BS),
            Discard(3 * SLOT, BS),
        ]
    );
    assert_eq!(bed.mapped(), 0);
}

#[test]
fn without_protection_every_slot_is_mapped_and_unplug_only_discards() {
    let mut bed = Bed::new(false, false);
    assert_eq!(
        bed.take(),
        vec![Map(0), Map(1), Map(2), Map(3), View(vec![(0, REGION)])]
    );
    assert_eq!(bed.mapped(), 4);
    bed.region.plug(0, BS).unwrap();
    bed.region.settle();
    assert!(bed.take().is_empty());
    bed.region.unplug(0, BS).unwrap();
    bed.region.settle();
    assert_eq!(bed.take(), vec![Discard(0, BS)]);
    assert_eq!(bed.mapped(), 4);
}
