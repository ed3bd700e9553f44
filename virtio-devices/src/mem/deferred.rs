//! Discards after the answer: a [`BlockBackend`] that holds the discards of UNPLUG and
//! UNPLUG_ALL until the device thread has answered the guest, so that the guest's wait for
//! an unplug does not include giving the memory back to the host (a `madvise` or
//! `fallocate` over up to a whole memory block, milliseconds where the answer takes
//! microseconds).
//!
//! Safe because the device thread does the held discards itself, before it takes the next
//! batch of requests, and because a PLUG in the same batch first does every held discard:
//! a block is never discarded after it was plugged again. Between the answer and the
//! discard the guest does not touch the unplugged blocks (docs/virtio-mem.md §1.6: unplugged memory
//! must not be accessed; `VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`).
//!
//! The cost: a discard that fails can no longer be answered BUSY. The blocks are unplugged as
//! the guest was told; their host memory is not given back, which is logged and counted
//! ([`Counters::discard_errors`](super::state::Counters::discard_errors)). Populating (PLUG)
//! is not held: a failed populate is still answered BUSY.

use std::io;
use std::time::Instant;

use super::state::{BlockBackend, Discarded};

/// See the module doc. Borrowed around one batch of requests.
pub struct DeferredDiscard<'a, B: BlockBackend + ?Sized> {
    backend: &'a mut B,
    /// Held discards `(offset, len)`, adjacent ones merged.
    held: Vec<(u64, u64)>,
    done: Discarded,
}

impl<'a, B: BlockBackend + ?Sized> DeferredDiscard<'a, B> {
    /// Holds the discards for `backend`.
    pub fn new(backend: &'a mut B) -> Self {
        DeferredDiscard {
            backend,
            held: Vec::new(),
            done: Discarded::default(),
        }
    }

    /// Does the held discards now.
    fn discard_held(&mut self) {
        for (offset, len) in std::mem::take(&mut self.held) {
            let start = Instant::now();
            let result = self.backend.unplug(offset, len);
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if !self.backend.settles_unplugs() {
                self.done.times_ns.push(ns);
            }
            if let Err(e) = result {
                self.done.failures.push((offset, len, e));
            }
        }
    }

    /// Does the held discards and reports what was done.
    pub fn finish(mut self) -> Discarded {
        self.discard_held();
        std::mem::take(&mut self.done)
    }
}

impl<B: BlockBackend + ?Sized> Drop for DeferredDiscard<'_, B> {
    /// Whatever happens to the batch, held memory is given back (unreported, which is why
    /// the device thread calls [`DeferredDiscard::finish`]).
    fn drop(&mut self) {
        self.discard_held();
    }
}

impl<B: BlockBackend + ?Sized> BlockBackend for DeferredDiscard<'_, B> {
    fn plug(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // A held discard may cover these blocks (unplugged earlier in this batch): it must
        // happen before they are plugged again.
        self.discard_held();
        self.backend.plug(offset, len)
    }

    fn unplug(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match self.held.last_mut() {
            Some((o, l)) if o.checked_add(*l) == Some(offset) => *l += len,
            _ => self.held.push((offset, len)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    type Log = Rc<RefCell<Vec<(&'static str, u64, u64)>>>;

    /// Records the calls made to the real backend; fails discards at `fail_at`.
    #[derive(Default)]
    struct Calls {
        log: Log,
        fail_at: Option<u64>,
    }

    impl BlockBackend for Calls {
        fn plug(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.log.borrow_mut().push(("plug", offset, len));
            Ok(())
        }
        fn unplug(&mut self, offset: u64, len: u64) -> io::Result<()> {
            self.log.borrow_mut().push(("unplug", offset, len));
            if self.fail_at == Some(offset) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            Ok(())
        }
    }

    #[test]
    fn discards_wait_for_finish_and_adjacent_ones_merge() {
        let mut calls = Calls::default();
        let log = calls.log.clone();
        let mut d = DeferredDiscard::new(&mut calls);
        d.unplug(0, 10).unwrap();
        d.unplug(10, 10).unwrap();
        d.unplug(40, 10).unwrap();
        assert!(log.borrow().is_empty(), "held until finish");
        let done = d.finish();
        assert_eq!(done.times_ns.len(), 2);
        assert!(done.failures.is_empty());
        assert_eq!(*log.borrow(), vec![("unplug", 0, 20), ("unplug", 40, 10)]);
    }

    #[test]
    fn a_dropped_batch_still_discards() {
        let mut calls = Calls::default();
        let log = calls.log.clone();
        let mut d = DeferredDiscard::new(&mut calls);
        d.unplug(0, 10).unwrap();
        drop(d);
        assert_eq!(*log.borrow(), vec![("unplug", 0, 10)]);
    }

    #[test]
    fn a_plug_first_does_the_held_discards() {
        let mut calls = Calls::default();
        let log = calls.log.clone();
        let mut d = DeferredDiscard::new(&mut calls);
        d.unplug(0, 10).unwrap();
        d.plug(0, 10).unwrap();
        assert_eq!(*log.borrow(), vec![("unplug", 0, 10), ("plug", 0, 10)]);
        let done = d.finish();
        assert_eq!(done.times_ns.len(), 1);
    }

    #[test]
    fn failures_are_reported_with_their_range() {
        let mut calls = Calls {
            fail_at: Some(40),
            ..Calls::default()
        };
        let mut d = DeferredDiscard::new(&mut calls);
        d.unplug(0, 10).unwrap();
        d.unplug(40, 10).unwrap();
        let done = d.finish();
        assert_eq!(done.times_ns.len(), 2);
        assert_eq!(done.failures.len(), 1);
        assert_eq!((done.failures[0].0, done.failures[0].1), (40, 10));
    }
}
