//! The `memory-loader` thread of an `OnDemand` restore: an epoll loop over the userfaultfd
//! and a stop eventfd; it reads each fault, reads the chunk from the snapshot's memory file
//! (opened before the thread started) and copies it in with `UFFDIO_COPY`. It opens
//! nothing, maps nothing, and makes no KVM call.

use super::rules::{any, ioctl_in, thread_runtime, Result, Rules};
use crate::snapshot::on_demand::loader_ioctls;

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.extend([
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        // Fault messages from the userfaultfd, and the stop eventfd.
        any(libc::SYS_read),
        // The memory file, at the faulting chunk's offset.
        any(libc::SYS_pread64),
        ioctl_in(&loader_ioctls())?,
    ]);
    Ok(rules)
}
