//! `memory_restore_mode: OnDemand`: guest memory is not read before the guest runs. Each
//! range of the memory file is registered with a userfaultfd, and the `memory-loader`
//! thread fills a chunk from the file the first time anything (the guest through KVM, or a
//! VMM thread) touches it. A chunk filled once and later given back (a virtio-mem unplug)
//! comes back as zeros, as fresh memory does.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::{ioctl_ior_nr, ioctl_iowr_nr};

use super::memory_file::SavedRange;
use crate::seccomp::ThreadFilter;

/// `<linux/userfaultfd.h>`.
const UFFDIO: u32 = 0xAA;
const UFFD_API: u64 = 0xAA;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// One message read from the userfaultfd: the event, then (for a page fault) flags,
/// address and thread id.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    ptid: u64,
}

ioctl_iowr_nr!(UFFDIO_API_IOCTL, UFFDIO, 0x3F, UffdioApi);
ioctl_iowr_nr!(UFFDIO_REGISTER_IOCTL, UFFDIO, 0x00, UffdioRegister);
ioctl_ior_nr!(UFFDIO_WAKE_IOCTL, UFFDIO, 0x02, UffdioRange);
ioctl_iowr_nr!(UFFDIO_COPY_IOCTL, UFFDIO, 0x03, UffdioCopy);

/// The userfaultfd requests the loader makes (its seccomp filter allows these).
pub fn loader_ioctls() -> Vec<u64> {
    vec![UFFDIO_COPY_IOCTL(), UFFDIO_WAKE_IOCTL()]
}

/// The userfaultfd requests setting it up takes (on the VMM thread).
pub fn setup_ioctls() -> Vec<u64> {
    vec![UFFDIO_API_IOCTL(), UFFDIO_REGISTER_IOCTL()]
}

/// How much is filled per fault: a multiple of every page size it is used with up to this,
/// and a divisor of every virtio-mem block (2 MiB at least), so that a chunk is never half
/// plugged.
const CHUNK: u64 = 64 << 10;

/// A range of the memory file and where it goes in this process.
#[derive(Clone, Copy, Debug)]
pub struct LazyRange {
    pub saved: SavedRange,
    pub host: u64,
}

/// The running loader. Dropping it stops the thread (before guest memory is unmapped: the
/// VM drops it first).
pub struct OnDemandMemory {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Drop for OnDemandMemory {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("stopping the memory-loader thread: {e}");
            return;
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the memory-loader thread panicked");
            }
        }
    }
}

/// Registers `ranges` (host memory mapped and untouched since it was mapped) with a new
/// userfaultfd and starts the `memory-loader` thread that fills them from `file`, in
/// chunks of `page_size` at least.
pub fn start(
    file: File,
    ranges: Vec<LazyRange>,
    page_size: u64,
    seccomp: ThreadFilter,
) -> io::Result<OnDemandMemory> {
    // SAFETY: a plain system call; the result is checked and owned below.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("userfaultfd: {e} (OnDemand needs userfaultfd for kernel faults: root, or vm.unprivileged_userfaultfd=1)"),
        ));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API on a userfaultfd with a properly sized, initialized struct.
    if unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(&uffd, UFFDIO_API_IOCTL(), &mut api) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for r in &ranges {
        let mut register = UffdioRegister {
            range: UffdioRange {
                start: r.host,
                len: r.saved.len,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER with a struct of the right size; the range is guest
        // memory this process mapped and keeps mapped while the loader runs.
        if unsafe {
            vmm_sys_util::ioctl::ioctl_with_mut_ref(&uffd, UFFDIO_REGISTER_IOCTL(), &mut register)
        } < 0
        {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "registering {:#x}+{:#x} with userfaultfd: {e}",
                    r.saved.gpa, r.saved.len
                ),
            ));
        }
    }
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    // Made here: the thread's filter has no epoll_create1.
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        uffd.as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_FAULT),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, TOKEN_STOP),
    )?;
    let loader = Loader {
        uffd,
        file,
        chunk: CHUNK.max(page_size),
        filled: ranges
            .iter()
            .map(|r| vec![false; r.saved.len.div_ceil(CHUNK.max(page_size)) as usize])
            .collect(),
        ranges,
    };
    let thread = std::thread::Builder::new()
        .name("memory-loader".into())
        .spawn(move || {
            if let Err(e) = seccomp.apply_to_current() {
                log::error!("memory-loader cannot start: {e}");
                return;
            }
            if let Err(e) = loader.run(&epoll) {
                log::error!(
                    "memory-loader: {e}; guest accesses to memory not yet loaded will hang"
                );
            }
        })?;
    Ok(OnDemandMemory {
        stop,
        thread: Some(thread),
    })
}

struct Loader {
    uffd: OwnedFd,
    file: File,
    chunk: u64,
    ranges: Vec<LazyRange>,
    /// Per range, which chunks were filled from the file already.
    filled: Vec<Vec<bool>>,
}

const TOKEN_FAULT: u64 = 0;
const TOKEN_STOP: u64 = 1;

impl Loader {
    /// Serves faults until the stop eventfd is written; `epoll` watches both.
    fn run(mut self, epoll: &Epoll) -> io::Result<()> {
        let mut buffer = vec![0u8; self.chunk as usize];
        let mut events = [EpollEvent::default(); 2];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if events[..n].iter().any(|e| e.data() == TOKEN_STOP) {
                return Ok(());
            }
            while let Some(address) = self.next_fault()? {
                self.serve(address, &mut buffer)?;
            }
        }
    }

    /// The address of the next page fault, if one is waiting.
    fn next_fault(&self) -> io::Result<Option<u64>> {
        loop {
            let mut msg = UffdMsg::default();
            // SAFETY: reads at most one message into a buffer of its size.
            let n = unsafe {
                libc::read(
                    self.uffd.as_raw_fd(),
                    (&mut msg as *mut UffdMsg).cast(),
                    std::mem::size_of::<UffdMsg>(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if msg.event == UFFD_EVENT_PAGEFAULT {
                return Ok(Some(msg.address));
            }
        }
    }

    /// Fills the chunk holding `address`: from the file the first time, with zeros after.
    fn serve(&mut self, address: u64, buffer: &mut [u8]) -> io::Result<()> {
        let Some(index) = self
            .ranges
            .iter()
            .position(|r| address >= r.host && address < r.host + r.saved.len)
        else {
            log::error!("memory-loader: a fault at {address:#x} outside every range");
            return Ok(());
        };
        let range = self.ranges[index];
        let chunk = (address - range.host) / self.chunk;
        let start = chunk * self.chunk;
        let len = self.chunk.min(range.saved.len - start);
        let data = &mut buffer[..len as usize];
        let seen = &mut self.filled[index][chunk as usize];
        if *seen {
            data.fill(0);
        } else {
            self.file.read_exact_at(data, range.saved.offset + start)?;
            *seen = true;
        }
        let mut copy = UffdioCopy {
            dst: range.host + start,
            src: data.as_ptr() as u64,
            len,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY from a buffer of `len` bytes into a registered range of this
        // process; the kernel checks the destination.
        let done = unsafe {
            vmm_sys_util::ioctl::ioctl_with_mut_ref(&self.uffd, UFFDIO_COPY_IOCTL(), &mut copy)
        };
        if done < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Part of the chunk is there already (a racing fault on another page of
                // it was served): wake whoever waits on the rest.
                Some(libc::EEXIST) => self.wake(range.host + start, len)?,
                // The mapping changed under us (an unplug): the faulting thread retries.
                Some(libc::EAGAIN) | Some(libc::ENOENT) => {}
                _ => return Err(e),
            }
        }
        Ok(())
    }

    fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let range = UffdioRange { start, len };
        // SAFETY: UFFDIO_WAKE with a struct of the right size.
        if unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.uffd, UFFDIO_WAKE_IOCTL(), &range) }
            < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
