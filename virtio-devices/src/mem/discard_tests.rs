//! Tests of [`HostMemoryBackend`] on real mappings: write a pattern, unplug, and check that the
//! range reads back as zeros and that its pages are gone (mincore for the mapping, st_blocks
//! for the file).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use super::*;
use crate::mem::request::{BlockState, Request, Response};
use crate::mem::state::{BlockBackend, MemGeometry, VirtioMemState};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

/// A mapping unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: u64, flags: libc::c_int, fd: libc::c_int, offset: u64) -> io::Result<Mapping> {
        let len = len as usize;
        // SAFETY: a fresh mapping at an address the kernel picks; no existing memory is
        // affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // No transparent huge pages: khugepaged could otherwise collapse a half-discarded
        // 2 MiB range and populate its holes while a test counts resident pages. (Hugetlb
        // mappings refuse the advice, which is fine.)
        // SAFETY: advice on the mapping just created; it changes no content.
        unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn anonymous(len: u64) -> Mapping {
        Mapping::new(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0).unwrap()
    }

    fn fill(&self, offset: u64, len: u64, byte: u8) {
        assert!(offset + len <= self.len as u64);
        // SAFETY: the range is inside this live, writable mapping.
        unsafe { std::ptr::write_bytes(self.ptr.add(offset as usize), byte, len as usize) };
    }

    /// Whether every byte of the range is `byte`.
    fn all(&self, offset: u64, len: u64, byte: u8) -> bool {
        assert!(offset + len <= self.len as u64);
        // SAFETY: the range is inside this live, readable mapping; nothing writes it while
        // the slice lives.
        let s = unsafe { std::slice::from_raw_parts(self.ptr.add(offset as usize), len as usize) };
        s.iter().all(|&b| b == byte)
    }

    /// Resident bytes of the range, by mincore(2).
    fn resident(&self, offset: u64, len: u64) -> u64 {
        let pages = (len / PAGE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: the range is inside this mapping and page-aligned; `vec` has one byte per
        // page of it.
        let ret = unsafe {
            libc::mincore(
                self.ptr.add(offset as usize).cast(),
                len as usize,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(ret, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().filter(|&&v| v & 1 != 0).count() as u64 * PAGE
    }

    /// A backend over the whole mapping.
    fn backend(&self, backing: Backing, page_size: u64, prefault: bool) -> HostMemoryBackend {
        // SAFETY: the mapping outlives the backend in every test (it is dropped after it),
        // and is of the kind `backing` says.
        unsafe { HostMemoryBackend::new(self.ptr, self.len as u64, backing, page_size, prefault) }
            .unwrap()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value created; no reference into it
        // outlives the value.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn memfd(name: &CStr, flags: libc::c_uint) -> io::Result<File> {
    // SAFETY: `name` is a valid C string; the returned fd is new and owned by the File.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Allocated bytes of a file.
fn allocated(file: &File) -> u64 {
    file.metadata().unwrap().blocks() * 512
}

fn read_at(file: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn private_anonymous_discard_zeroes_and_frees() {
    let m = Mapping::anonymous(4 * MIB);
    m.fill(0, 4 * MIB, 0xab);
    assert_eq!(m.resident(0, 4 * MIB), 4 * MIB);
    let mut b = m.backend(Backing::PrivateAnonymous, PAGE, false);
    b.unplug(MIB, 2 * MIB).unwrap();
    // Before any read: a read maps the zero page, which mincore counts as resident.
    assert_eq!(m.resident(MIB, 2 * MIB), 0, "discarded pages are gone");
    assert_eq!(m.resident(0, MIB), MIB);
    assert_eq!(m.resident(3 * MIB, MIB), MIB);
    assert!(m.all(MIB, 2 * MIB, 0), "discarded memory reads as zero");
    assert!(
        m.all(0, MIB, 0xab) && m.all(3 * MIB, MIB, 0xab),
        "the rest is untouched"
    );
    // Plugging again hands out zero pages (docs/virtio-mem.md §3).
    b.plug(MIB, 2 * MIB).unwrap();
    assert!(m.all(MIB, 2 * MIB, 0));
}

#[test]
fn shared_memfd_discard_punches_a_hole_at_the_file_offset() {
    let file = Arc::new(memfd(c"accordion-test-shared", 0).unwrap());
    file.set_len(5 * MIB).unwrap();
    // The region is mapped from file offset 1 MiB.
    let m = Mapping::new(4 * MIB, libc::MAP_SHARED, raw_fd(&file), MIB).unwrap();
    m.fill(0, 4 * MIB, 0x5a);
    assert_eq!(allocated(&file), 4 * MIB);
    let mut b = m.backend(
        Backing::SharedFile {
            file: file.clone(),
            file_offset: MIB,
        },
        PAGE,
        false,
    );
    b.unplug(MIB, 2 * MIB).unwrap();
    assert_eq!(allocated(&file), 2 * MIB, "the file gave back its pages");
    assert_eq!(m.resident(MIB, 2 * MIB), 0);
    assert_eq!(m.resident(0, MIB), MIB);
    // Region offset 1 MiB is file offset 2 MiB.
    assert!(read_at(&file, 2 * MIB, 2 * MIB).iter().all(|&x| x == 0));
    assert!(read_at(&file, MIB, MIB).iter().all(|&x| x == 0x5a));
    assert!(read_at(&file, 4 * MIB, MIB).iter().all(|&x| x == 0x5a));
    assert!(m.all(MIB, 2 * MIB, 0));
    assert!(m.all(0, MIB, 0x5a) && m.all(3 * MIB, MIB, 0x5a));
    assert_eq!(file.metadata().unwrap().len(), 5 * MIB, "KEEP_SIZE");
}

#[test]
fn private_file_discard_drops_private_copies_and_file_pages() {
    let file = Arc::new(memfd(c"accordion-test-private", 0).unwrap());
    file.set_len(4 * MIB).unwrap();
    file.write_all_at(&vec![0x11u8; 4 * MIB as usize], 0)
        .unwrap();
    let m = Mapping::new(4 * MIB, libc::MAP_PRIVATE, raw_fd(&file), 0).unwrap();
    // Copy-on-write: the mapping now has private copies over the file's pages.
    m.fill(0, 4 * MIB, 0x22);
    let mut b = m.backend(
        Backing::PrivateFile {
            file: file.clone(),
            file_offset: 0,
        },
        PAGE,
        false,
    );
    b.unplug(0, 2 * MIB).unwrap();
    assert_eq!(allocated(&file), 2 * MIB);
    assert_eq!(m.resident(0, 2 * MIB), 0);
    assert!(
        m.all(0, 2 * MIB, 0),
        "neither the private copy nor the file's data"
    );
    assert!(m.all(2 * MIB, 2 * MIB, 0x22));
}

#[test]
fn hugetlb_memfd_discard_if_the_host_has_huge_pages() {
    const HUGE: u64 = 2 * MIB;
    let Ok(file) = memfd(c"accordion-test-huge", libc::MFD_HUGETLB) else {
        eprintln!("skipped: memfd_create(MFD_HUGETLB) is not available");
        return;
    };
    let file = Arc::new(file);
    if file.set_len(2 * HUGE).is_err() {
        eprintln!("skipped: cannot size a hugetlb memfd");
        return;
    }
    // Without MAP_NORESERVE, a shared hugetlb mmap reserves its pages or fails, so touching
    // it cannot SIGBUS.
    let Ok(m) = Mapping::new(2 * HUGE, libc::MAP_SHARED, raw_fd(&file), 0) else {
        eprintln!("skipped: no free 2 MiB huge pages (HugePages_Free)");
        return;
    };
    m.fill(0, 2 * HUGE, 0x77);
    let mut b = m.backend(
        Backing::SharedFile {
            file: file.clone(),
            file_offset: 0,
        },
        HUGE,
        false,
    );
    assert!(b.unplug(0, PAGE).is_err(), "less than a huge page");
    b.unplug(HUGE, HUGE).unwrap();
    assert_eq!(allocated(&file), HUGE);
    assert!(m.all(HUGE, HUGE, 0) && m.all(0, HUGE, 0x77));
}

#[test]
fn prefault_populates_on_plug() {
    let m = Mapping::anonymous(4 * MIB);
    assert_eq!(m.resident(0, 4 * MIB), 0);
    let mut lazy = m.backend(Backing::PrivateAnonymous, PAGE, false);
    lazy.plug(0, 2 * MIB).unwrap();
    assert_eq!(m.resident(0, 4 * MIB), 0, "no prefault: nothing populated");
    let mut eager = m.backend(Backing::PrivateAnonymous, PAGE, true);
    eager.plug(2 * MIB, MIB).unwrap();
    assert_eq!(m.resident(2 * MIB, MIB), MIB);
    assert!(m.all(2 * MIB, MIB, 0));
}

#[test]
fn bad_mappings_and_ranges_are_refused() {
    let m = Mapping::anonymous(MIB);
    let new = |addr: *mut u8, size, page| {
        // SAFETY: these calls are all refused before the backend could touch anything.
        unsafe { HostMemoryBackend::new(addr, size, Backing::PrivateAnonymous, page, false) }
    };
    assert_eq!(
        new(m.ptr, MIB, 3000).unwrap_err(),
        DiscardError::PageSize(3000)
    );
    assert!(matches!(
        new(m.ptr.wrapping_add(1), PAGE, PAGE),
        Err(DiscardError::Unaligned { .. })
    ));
    assert!(matches!(
        new(m.ptr, 100, PAGE),
        Err(DiscardError::Unaligned { .. })
    ));
    assert!(matches!(
        new(m.ptr, 0, PAGE),
        Err(DiscardError::Unaligned { .. })
    ));
    assert!(matches!(
        new(m.ptr, u64::MAX - PAGE + 1, PAGE),
        Err(DiscardError::Overflow { .. })
    ));

    m.fill(0, MIB, 0xcd);
    let mut b = m.backend(Backing::PrivateAnonymous, PAGE, false);
    for (off, len) in [
        (0, 0),
        (1, PAGE),
        (0, PAGE + 1),
        (MIB, PAGE),
        (MIB - PAGE, 2 * PAGE),
        (u64::MAX - PAGE + 1, PAGE),
    ] {
        let e = b.unplug(off, len).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::InvalidInput,
            "({off:#x}, {len:#x})"
        );
        assert!(b.plug(off, len).is_err());
    }
    assert!(m.all(0, MIB, 0xcd), "refused ranges are not touched");
}

#[test]
fn state_machine_over_real_memory() {
    const BS: u64 = 2 * MIB;
    let m = Mapping::anonymous(16 * BS);
    let g = MemGeometry::new(1 << 32, 16 * BS, BS).unwrap();
    let mut s = VirtioMemState::new(g, None, 8 * BS).unwrap();
    let mut b = m.backend(Backing::PrivateAnonymous, PAGE, true);
    let addr = |block: u64| (1u64 << 32) + block * BS;
    let plug = Request::Plug {
        addr: addr(0),
        nb_blocks: 8,
    };
    assert_eq!(s.handle(plug, &mut b), Response::Ack(None));
    assert_eq!(m.resident(0, 8 * BS), 8 * BS, "prefaulted on plug");
    m.fill(0, 8 * BS, 0xee);
    let unplug = Request::Unplug {
        addr: addr(2),
        nb_blocks: 3,
    };
    assert_eq!(s.handle(unplug, &mut b), Response::Ack(None));
    assert_eq!(
        m.resident(2 * BS, 3 * BS),
        0,
        "the host got the memory back"
    );
    assert_eq!(m.resident(0, 2 * BS), 2 * BS);
    assert!(m.all(2 * BS, 3 * BS, 0));
    let state = Request::State {
        addr: addr(0),
        nb_blocks: 8,
    };
    assert_eq!(
        s.handle(state, &mut b),
        Response::Ack(Some(BlockState::Mixed))
    );
    assert_eq!(s.handle(Request::UnplugAll, &mut b), Response::Ack(None));
    // Blocks 2..5 were read back above, which mapped the shared zero page there (mincore
    // counts it); UNPLUG_ALL discards the plugged runs.
    assert_eq!(m.resident(0, 2 * BS), 0);
    assert_eq!(m.resident(5 * BS, 11 * BS), 0);
    m.fill(0, BS, 1);
    s.system_reset(&mut b).unwrap();
    assert_eq!(
        m.resident(0, 16 * BS),
        0,
        "system reset discards the whole region"
    );
}

fn raw_fd(file: &File) -> libc::c_int {
    use std::os::fd::AsRawFd;
    file.as_raw_fd()
}
