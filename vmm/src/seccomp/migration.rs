//! The `migration` thread, on either side of a live migration. The source's connects to
//! the destination (a unix socket, or TCP to an IP address: no name lookup), reads KVM's
//! dirty log of the guest's memory slots and writes memory, headers and payloads to the
//! stream; the destination's accepts on the socket its VMM thread bound, reads the stream
//! into guest memory and removes the socket file when it is done. Both talk to their VMM
//! thread over a channel and an eventfd. Neither opens a file, maps memory for the guest or
//! changes a memslot.

use super::kvm;
use super::rules::{any, arg_in, as_u64, ioctl_in, thread_runtime, Result, Rules};

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.extend([
        // The stream: std's connect (with a timeout: non-blocking, poll, SO_ERROR), accept,
        // socket options (TCP_NODELAY, timeouts), send and receive.
        arg_in(
            libc::SYS_socket,
            0,
            &as_u64(&[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6]),
        )?,
        any(libc::SYS_connect),
        any(libc::SYS_accept4),
        any(libc::SYS_setsockopt),
        any(libc::SYS_getsockopt),
        any(libc::SYS_poll),
        any(libc::SYS_ppoll),
        any(libc::SYS_read),
        any(libc::SYS_recvfrom),
        any(libc::SYS_sendto),
        // A local migration's memory files, passed with SCM_RIGHTS.
        any(libc::SYS_sendmsg),
        any(libc::SYS_recvmsg),
        ioctl_in(&[libc::FIONBIO, kvm::KVM_GET_DIRTY_LOG()])?,
        // The destination's unix socket file, once accepted.
        any(libc::SYS_unlink),
    ]);
    Ok(rules)
}
