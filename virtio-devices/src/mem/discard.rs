//! A [`BlockBackend`] over real host memory: discards unplugged blocks so the host gets the
//! memory back, and optionally prefaults plugged ones (docs/virtio-mem.md §1.6, §3).
//!
//! | backing | unplug (discard) | plug |
//! |---|---|---|
//! | private anonymous (`MAP_PRIVATE \| MAP_ANONYMOUS`, with or without `MAP_HUGETLB`) | `madvise(MADV_DONTNEED)` | nothing, or `MADV_POPULATE_WRITE` with prefault |
//! | shared file (`MAP_SHARED` of a memfd, hugetlbfs or tmpfs file) | `fallocate(FALLOC_FL_PUNCH_HOLE \| FALLOC_FL_KEEP_SIZE)` at the file offset | same |
//! | private file (`MAP_PRIVATE` of such a file) | both: `MADV_DONTNEED` drops the private copies, the punch drops the file pages | same |
//!
//! A discarded range reads back as zeros (docs/virtio-mem.md §3: a plug of discarded blocks hands the
//! guest zero-filled pages). Hugetlb backings need offsets and lengths that are multiples of
//! the huge page size: pass it as `page_size`, and use a block size at least that large.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::state::BlockBackend;

/// What the host mapping of a device region is.
#[derive(Clone, Debug)]
pub enum Backing {
    /// `MAP_PRIVATE | MAP_ANONYMOUS` memory, huge pages or not.
    PrivateAnonymous,
    /// `MAP_SHARED` of `file`; the mapping starts at `file_offset` in the file.
    SharedFile {
        /// The memfd, hugetlbfs or tmpfs file behind the mapping.
        file: Arc<File>,
        /// Offset in the file of the mapping's first byte.
        file_offset: u64,
    },
    /// `MAP_PRIVATE` of `file`; the mapping starts at `file_offset` in the file.
    PrivateFile {
        /// The memfd, hugetlbfs or tmpfs file behind the mapping.
        file: Arc<File>,
        /// Offset in the file of the mapping's first byte.
        file_offset: u64,
    },
}

/// A host mapping that cannot back a [`HostMemoryBackend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscardError {
    /// The page size is not a power of two.
    #[error("page size {0} is not a power of two")]
    PageSize(u64),
    /// The mapping's address, size or file offset is not page-aligned, or it is empty.
    #[error("host mapping at {addr:#x} of size {size:#x} (file offset {file_offset:#x}) is empty or not aligned to the page size {page_size:#x}")]
    Unaligned {
        /// The mapping's host address.
        addr: usize,
        /// The mapping's size.
        size: u64,
        /// The file offset (0 for anonymous memory).
        file_offset: u64,
        /// The page size.
        page_size: u64,
    },
    /// The mapping or the file range would end past the top of the address space.
    #[error("host mapping at {addr:#x} of size {size:#x} overflows")]
    Overflow {
        /// The mapping's host address.
        addr: usize,
        /// The mapping's size.
        size: u64,
    },
}

/// Populates and discards host memory of one device region; see the module doc.
#[derive(Debug)]
pub struct HostMemoryBackend {
    host_addr: *mut u8,
    size: u64,
    backing: Backing,
    page_size: u64,
    prefault: bool,
}

// SAFETY: the backend holds a raw pointer only to pass it to madvise(2) on a mapping the
// caller of `new` promised stays valid for the backend's lifetime; it never dereferences it,
// and the syscalls it makes are safe from any thread.
unsafe impl Send for HostMemoryBackend {}

impl HostMemoryBackend {
    /// A backend for the host mapping `[host_addr, host_addr + size)` of the device region,
    /// whose first byte is the region's first byte. `page_size` is the mapping's page size
    /// (4 KiB, or the huge page size). With `prefault`, a plug populates the range with
    /// `MADV_POPULATE_WRITE` (Linux 5.14+) before it is acknowledged.
    ///
    /// # Safety
    ///
    /// `[host_addr, host_addr + size)` must be a mapping of the kind `backing` says, and must
    /// stay mapped for as long as the backend exists. Discarding zeroes its content, so the
    /// caller must call `unplug` only for memory nobody needs (the state machine does so only
    /// for blocks the guest unplugged).
    pub unsafe fn new(
        host_addr: *mut u8,
        size: u64,
        backing: Backing,
        page_size: u64,
        prefault: bool,
    ) -> Result<Self, DiscardError> {
        if !page_size.is_power_of_two() {
            return Err(DiscardError::PageSize(page_size));
        }
        let addr = host_addr as usize;
        let file_offset = match &backing {
            Backing::PrivateAnonymous => 0,
            Backing::SharedFile { file_offset, .. } | Backing::PrivateFile { file_offset, .. } => {
                *file_offset
            }
        };
        let aligned = |v: u64| v.is_multiple_of(page_size);
        if size == 0 || !aligned(addr as u64) || !aligned(size) || !aligned(file_offset) {
            return Err(DiscardError::Unaligned {
                addr,
                size,
                file_offset,
                page_size,
            });
        }
        let end_ok = usize::try_from(size)
            .ok()
            .and_then(|s| addr.checked_add(s))
            .is_some()
            && file_offset
                .checked_add(size)
                .is_some_and(|e| i64::try_from(e).is_ok());
        if !end_ok {
            return Err(DiscardError::Overflow { addr, size });
        }
        Ok(HostMemoryBackend {
            host_addr,
            size,
            backing,
            page_size,
            prefault,
        })
    }

    /// The host address and length of `[offset, offset + len)`, checked: inside the mapping,
    /// page-aligned, not empty.
    fn range(&self, offset: u64, len: u64) -> io::Result<(*mut libc::c_void, usize)> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.size);
        if len == 0
            || !inside
            || !offset.is_multiple_of(self.page_size)
            || !len.is_multiple_of(self.page_size)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range [{offset:#x}, +{len:#x}) is empty, unaligned to {:#x} or outside the {:#x}-byte mapping",
                    self.page_size, self.size
                ),
            ));
        }
        // Both fit a usize: `new` checked host_addr + size does.
        let (off, len) = (offset as usize, len as usize);
        // wrapping_add computes the address without claiming it is in bounds of an
        // allocation; it is inside the mapping, as just checked.
        Ok((self.host_addr.wrapping_add(off).cast(), len))
    }

    fn madvise(&self, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
        let (addr, len) = self.range(offset, len)?;
        // SAFETY: [addr, addr + len) lies inside the mapping that `new`'s caller promised is
        // mapped; MADV_DONTNEED only drops its pages (zeroing memory nobody needs, by the
        // contract of `unplug`) and MADV_POPULATE_WRITE only faults them in.
        let ret = unsafe { libc::madvise(addr, len, advice) };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn punch_hole(&self, file: &File, file_offset: u64, offset: u64, len: u64) -> io::Result<()> {
        self.range(offset, len)?;
        // Cannot overflow an i64: `new` checked file_offset + size does, and range() checked
        // offset + len <= size.
        let start = (file_offset + offset) as libc::off64_t;
        // SAFETY: fallocate takes no pointer; it frees the file's pages in the range, which
        // back only memory nobody needs (the contract of `unplug`).
        let ret = unsafe {
            libc::fallocate64(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                start,
                len as libc::off64_t,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Discards `[offset, offset + len)` of the region (offsets from its start): the host
    /// gets the memory back and the range reads back as zeros.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        match &self.backing {
            Backing::PrivateAnonymous => self.madvise(offset, len, libc::MADV_DONTNEED),
            Backing::SharedFile { file, file_offset } => {
                self.punch_hole(file, *file_offset, offset, len)
            }
            Backing::PrivateFile { file, file_offset } => {
                self.madvise(offset, len, libc::MADV_DONTNEED)?;
                self.punch_hole(file, *file_offset, offset, len)
            }
        }
    }

    /// Populates `[offset, offset + len)` for writing (`MADV_POPULATE_WRITE`), so the guest's
    /// first touches do not fault; fails with `ENOMEM` (or `EFAULT` for hugetlb) when the host
    /// cannot provide the memory.
    pub fn populate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.madvise(offset, len, libc::MADV_POPULATE_WRITE)
    }
}

impl BlockBackend for HostMemoryBackend {
    fn plug(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.prefault {
            self.populate(offset, len)
        } else {
            self.range(offset, len).map(|_| ())
        }
    }

    fn unplug(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.discard(offset, len)
    }
}

#[cfg(test)]
#[path = "discard_tests.rs"]
mod tests;
