//! The `virtio-mem-<id>` device thread: an epoll loop over the queue notification, resize
//! and kill eventfds; it answers the guest's requests, interrupts it through an irqfd, and
//! gives unplugged memory back to the host; it adds and removes the region's memslots as
//! blocks are plugged and unplugged, and protects unplugged memory (`mprotect`, in the
//! runtime rules, never executable). It has no business opening files or sockets, or making
//! any other KVM call.

use super::kvm;
use super::rules::{any, arg_in, ioctl_in, madvise_in, thread_runtime, Result, Rules};

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.extend([
        // The loop waits for its eventfds (glibc may use either call).
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        // Draining the eventfds; writes (the irqfd, the resize-done event) are in the
        // runtime rules.
        any(libc::SYS_read),
        // Memslots follow plugging (a zero-sized region removes one).
        ioctl_in(&[kvm::KVM_SET_USER_MEMORY_REGION()])?,
        // Unplug of private memory drops the pages; plug with prefault populates them.
        madvise_in(&[libc::MADV_DONTNEED, libc::MADV_POPULATE_WRITE])?,
        // Unplug of memfd/hugetlbfs memory punches a hole in the file, keeping its size:
        // exactly that mode, nothing that could grow or shrink the file.
        arg_in(
            libc::SYS_fallocate,
            1,
            &[(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64],
        )?,
    ]);
    Ok(rules)
}
