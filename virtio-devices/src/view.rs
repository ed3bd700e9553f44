//! [`GuestMemoryView`]: the guest memory the VMM itself may read and write, which changes at
//! run time.
//!
//! Guest memory that the guest has not plugged is `PROT_NONE` on the host (docs/design.md,
//! "Slots and protection"): a device that followed a guest-supplied address into it would
//! fault and take the VMM down. So devices never hold guest memory for long: they take the
//! current view with [`GuestMemoryView::load`] around one piece of work (a batch of
//! requests), and whoever is about to protect memory first replaces the view with one
//! without it and waits, in [`GuestMemoryView::replace`], until every older view is put
//! down. An address outside the view is an ordinary "not in guest memory" error.

use std::any::Any;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use vm_memory::GuestMemoryMmap;

struct Current {
    mem: Arc<GuestMemoryMmap>,
    generation: u64,
    /// Views taken and not yet put down, by generation.
    readers: BTreeMap<u64, usize>,
}

/// See the module doc. Shared by every device and vCPU thread of a VM.
pub struct GuestMemoryView {
    current: Mutex<Current>,
    put_down: Condvar,
    /// What must outlive every view: the mappings the views' regions point into.
    _keep_alive: Vec<Arc<dyn Any + Send + Sync>>,
}

impl GuestMemoryView {
    /// A view of `mem` that never changes unless replaced.
    pub fn new(mem: GuestMemoryMmap) -> Self {
        Self::with_owners(mem, Vec::new())
    }

    /// A view of `mem`, holding `owners` (the host mappings its regions, and those of later
    /// views, point into) for as long as the view exists.
    pub fn with_owners(mem: GuestMemoryMmap, owners: Vec<Arc<dyn Any + Send + Sync>>) -> Self {
        GuestMemoryView {
            current: Mutex::new(Current {
                mem: Arc::new(mem),
                generation: 0,
                readers: BTreeMap::new(),
            }),
            put_down: Condvar::new(),
            _keep_alive: owners,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current view, valid until the guard is dropped. Hold it around one piece of work,
    /// never while waiting for something else.
    pub fn load(&self) -> ViewGuard<'_> {
        let mut current = self.lock();
        let generation = current.generation;
        *current.readers.entry(generation).or_insert(0) += 1;
        ViewGuard {
            view: self,
            mem: current.mem.clone(),
            generation,
        }
    }

    /// Makes `mem` the view, then waits until no thread holds an older one. The caller must
    /// not hold a guard itself (it would wait for itself).
    pub fn replace(&self, mem: GuestMemoryMmap) {
        let mut current = self.lock();
        current.generation += 1;
        current.mem = Arc::new(mem);
        let newest = current.generation;
        while current.readers.range(..newest).next().is_some() {
            current = self
                .put_down
                .wait(current)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put(&self, generation: u64) {
        let mut current = self.lock();
        if let Some(count) = current.readers.get_mut(&generation) {
            *count -= 1;
            if *count == 0 {
                current.readers.remove(&generation);
                self.put_down.notify_all();
            }
        }
    }
}

/// One thread's hold on a view; see [`GuestMemoryView::load`].
pub struct ViewGuard<'a> {
    view: &'a GuestMemoryView,
    mem: Arc<GuestMemoryMmap>,
    generation: u64,
}

impl Deref for ViewGuard<'_> {
    type Target = GuestMemoryMmap;

    fn deref(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

impl Drop for ViewGuard<'_> {
    fn drop(&mut self) {
        self.view.put(self.generation);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use vm_memory::{GuestAddress, GuestMemoryBackend};

    use super::*;

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn replace_waits_for_older_views_and_new_loads_see_the_new_one() {
        let view = Arc::new(GuestMemoryView::new(mem(0x2000)));
        let held = view.load();
        assert_eq!(held.last_addr(), GuestAddress(0x1fff));
        let replaced = Arc::new(AtomicBool::new(false));
        let (v, r) = (view.clone(), replaced.clone());
        let replacer = std::thread::spawn(move || {
            v.replace(mem(0x1000));
            r.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !replaced.load(Ordering::SeqCst),
            "replace returned while an older view was held"
        );
        // The holder still sees the old memory.
        assert_eq!(held.last_addr(), GuestAddress(0x1fff));
        drop(held);
        replacer.join().unwrap();
        assert!(replaced.load(Ordering::SeqCst));
        assert_eq!(view.load().last_addr(), GuestAddress(0xfff));
    }

    #[test]
    fn views_of_the_current_generation_do_not_hold_up_a_replace() {
        let view = GuestMemoryView::new(mem(0x1000));
        view.replace(mem(0x2000));
        let current = view.load();
        // A later replace waits only for generations older than its own; `current` is older
        // than the next one, so drop it first, as the contract says.
        drop(current);
        view.replace(mem(0x3000));
        assert_eq!(view.load().last_addr(), GuestAddress(0x2fff));
    }
}
