//! The `api` thread: an HTTP server on the API socket (bound before the thread starts). It
//! accepts connections, reads requests, passes each to the VMM thread over a channel and an
//! eventfd, and writes the answer back. No files, no new sockets, no KVM.

use super::rules::{any, arg_in, as_u64, ioctl_in, thread_runtime, Result, Rules};

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.extend([
        // The server loop over the listener, the connections and the stop eventfd.
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_epoll_ctl),
        // New connections on the listening socket (it was bound before the filter).
        any(libc::SYS_accept4),
        // Each connection is made non-blocking (UnixStream::set_nonblocking).
        ioctl_in(&[libc::FIONBIO])?,
        // Requests in, answers out (UnixStream read is recvfrom, micro_http sends with
        // send, which is sendto); eventfds are read and written.
        any(libc::SYS_recvfrom),
        any(libc::SYS_sendto),
        any(libc::SYS_read),
        // A connection the server closes while the client may still be sending (a 413)
        // shuts its write side first and lingers, so the client reads the answer.
        arg_in(libc::SYS_shutdown, 1, &as_u64(&[libc::SHUT_WR]))?,
    ]);
    Ok(rules)
}
