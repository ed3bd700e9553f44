//! The SIGSYS report of `--seccomp true`: a system call outside a thread's filter raises
//! SIGSYS; the handler writes one line naming the thread and the call to stderr, then the
//! process dies of SIGSYS.
//!
//! The handler runs on the offending thread, under its filter, so it makes only calls every
//! filter allows (`write`, `getpid`, `gettid`, `tgkill` with SIGSYS, `rt_sigreturn`), and it
//! is async-signal-safe: no allocation, no locks; the thread's name is in a thread-local
//! byte array filled when the filter was installed, and the call's name comes from a static
//! table. It is installed with `SA_RESETHAND`, so raising SIGSYS again from the handler
//! finds the default action (terminate, core) once the handler returns. A call the handler
//! itself were refused would kill the process too: the kernel forces the default action for
//! a blocked SIGSYS from seccomp.

use std::cell::Cell;

use super::{syscall_names, SeccompError};

/// Longest thread name kept for the report (Rust names can be longer than the kernel's 15
/// bytes, as `virtio-mem-<id>` can).
const NAME_MAX: usize = 64;

thread_local! {
    /// The thread's name for the report and its length; empty before a filter is applied.
    static THREAD_NAME: Cell<([u8; NAME_MAX], usize)> = const { Cell::new(([0; NAME_MAX], 0)) };
}

/// Remembers the calling thread's name for the report.
pub(super) fn set_thread_name(name: &str) {
    let mut buf = [0u8; NAME_MAX];
    let len = name.len().min(NAME_MAX);
    buf[..len].copy_from_slice(&name.as_bytes()[..len]);
    THREAD_NAME.with(|n| n.set((buf, len)));
}

/// The x86-64 name of system call `nr`.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    usize::try_from(nr)
        .ok()
        .and_then(|i| syscall_names::NAMES.get(i))
        .copied()
        .filter(|name| !name.is_empty())
}

/// `si_code` of a SIGSYS raised by a seccomp filter.
const SYS_SECCOMP: i32 = 1;

/// The head of `siginfo_t` for SIGSYS on x86-64 (`_sigsys` in the kernel's
/// `include/uapi/asm-generic/siginfo.h`): the three ints, padding to 8 bytes, then the union.
#[repr(C)]
#[allow(dead_code)] // Only `code` and `syscall` are read; the others give the layout.
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// A line built on the stack; what does not fit is cut.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, value: i64) {
        if value < 0 {
            self.push(b"-");
        }
        let mut v = value.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

/// The report line for a SIGSYS with `si_code` `code` and system call `nr` on the thread
/// named `thread`.
fn report(line: &mut Line, thread: &[u8], code: i32, nr: i64) {
    line.push(b"accordion: seccomp: thread '");
    line.push(if thread.is_empty() { b"?" } else { thread });
    if code == SYS_SECCOMP {
        line.push(b"' made a forbidden system call ");
        line.push(syscall_name(nr).unwrap_or("unknown").as_bytes());
        line.push(b" (");
        line.push_number(nr);
        line.push(b"); the process stops\n");
    } else {
        line.push(b"' received SIGSYS from outside seccomp; the process stops\n");
    }
}

extern "C" fn handle_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let (code, nr) = if info.is_null() {
        (0, -1)
    } else {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; for SIGSYS
        // its head has the layout of `SigsysInfo`, and siginfo_t is larger than that.
        let info = unsafe { &*(info as *const SigsysInfo) };
        (info.code, i64::from(info.syscall))
    };
    let (name, len) = THREAD_NAME
        .try_with(Cell::get)
        .unwrap_or(([0; NAME_MAX], 0));
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    report(&mut line, &name[..len], code, nr);
    // SAFETY: write(2) from a buffer on our stack; getpid, gettid and tgkill take no
    // pointers. The handler was installed with SA_RESETHAND, so SIGSYS (blocked while the
    // handler runs) is delivered with its default action as soon as the handler returns.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.buf.as_ptr().cast(), line.len);
        libc::syscall(
            libc::SYS_tgkill,
            libc::syscall(libc::SYS_getpid),
            libc::syscall(libc::SYS_gettid),
            libc::SIGSYS,
        );
    }
}

/// Installs the SIGSYS handler for the whole process; do it before any thread applies a
/// filter with `--seccomp true`.
pub fn install_sigsys_handler() -> Result<(), SeccompError> {
    // SAFETY: a zeroed sigaction is a valid starting point (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
        handle_sigsys;
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
    // SAFETY: `action` is initialised and the handler is async-signal-safe (module doc);
    // the old action is not asked for.
    let ret = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(SeccompError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(thread: &str, code: i32, nr: i64) -> String {
        let mut l = Line {
            buf: [0; 256],
            len: 0,
        };
        report(&mut l, thread.as_bytes(), code, nr);
        String::from_utf8(l.buf[..l.len].to_vec()).unwrap()
    }

    #[test]
    fn report_names_the_thread_and_the_call() {
        assert_eq!(
            line("virtio-mem-mem0", SYS_SECCOMP, 41),
            "accordion: seccomp: thread 'virtio-mem-mem0' made a forbidden system call socket (41); the process stops\n"
        );
        assert!(line("api", SYS_SECCOMP, 99_999).contains("call unknown (99999)"));
        assert!(
            line("", SYS_SECCOMP, 0).contains("thread '?' made a forbidden system call read (0)")
        );
        assert!(line("vcpu0", 0, 0).contains("received SIGSYS from outside seccomp"));
    }

    #[test]
    fn a_long_line_is_cut_not_overflowed() {
        let long = "x".repeat(NAME_MAX);
        let mut l = Line {
            buf: [0; 256],
            len: 0,
        };
        for _ in 0..10 {
            report(&mut l, long.as_bytes(), SYS_SECCOMP, 59);
        }
        assert_eq!(l.len, 256);
    }

    #[test]
    fn names_come_from_the_x86_64_table() {
        assert_eq!(syscall_name(0), Some("read"));
        assert_eq!(syscall_name(libc::SYS_socket), Some("socket"));
        assert_eq!(syscall_name(libc::SYS_execve), Some("execve"));
        assert_eq!(syscall_name(libc::SYS_ptrace), Some("ptrace"));
        assert_eq!(syscall_name(-1), None);
        assert_eq!(syscall_name(100_000), None);
    }
}
