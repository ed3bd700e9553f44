//! What a running `accordion` holds (descriptors, threads, memory), read from `/proc`, and
//! the kernel's audit records of the system calls its seccomp filters let through in
//! `--seccomp log` mode.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;

/// A process's resources at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// Open file descriptors.
    pub fds: usize,
    /// Threads of the process's own: KVM's per-VM kernel workers (`kvm-nx-lpage-recovery`),
    /// which the kernel starts and ends on its own schedule, are not counted (a VM that
    /// is not released still shows in `fds` and in memory).
    pub threads: usize,
    /// Mapped virtual memory (`VmSize`), kB.
    pub vm_size_kb: u64,
    /// Resident memory (`VmRSS`), kB.
    pub rss_kb: u64,
}

/// The resources of process `pid` now.
pub fn resources(pid: u32) -> Resources {
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e}"))
            .count()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"))
        .filter_map(|task| task.ok())
        .filter(|task| {
            // A thread that ends between the listing and this read is not counted.
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| !name.starts_with("kvm-"))
        })
        .count();
    Resources {
        fds: count("fd"),
        threads,
        vm_size_kb: kb("VmSize:"),
        rss_kb: kb("VmRSS:"),
    }
}

/// The kernel log from the moment it was opened: seccomp's audit records (`type=1326`,
/// written for every call a `log` filter lets through) show up in it.
pub struct KernelLog(File);

impl KernelLog {
    /// Opens `/dev/kmsg` past the records already there; `None` (with the reason printed)
    /// where it cannot be read (not root, or `dmesg_restrict`).
    pub fn from_now() -> Option<KernelLog> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg");
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                eprintln!("SKIPPED: the kernel log (/dev/kmsg) cannot be read here: {e}");
                return None;
            }
        };
        // SAFETY: lseek on a descriptor we own; SEEK_END on /dev/kmsg moves past the
        // records logged so far, and its result is checked.
        if unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&file), 0, libc::SEEK_END) } < 0 {
            eprintln!("SKIPPED: /dev/kmsg: {}", std::io::Error::last_os_error());
            return None;
        }
        Some(KernelLog(file))
    }

    /// The seccomp audit records of process `pid` logged since [`KernelLog::from_now`],
    /// each with the system call's name.
    pub fn seccomp_records(&mut self, pid: u32) -> Vec<String> {
        let needle = format!(" pid={pid} ");
        let mut found = Vec::new();
        let mut record = vec![0u8; 8192];
        loop {
            // One read is one record; EAGAIN once every record has been read.
            let n = match self.0.read(&mut record) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // EPIPE: older records were overwritten while we were away; go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => panic!("reading /dev/kmsg: {e}"),
            };
            let text = String::from_utf8_lossy(&record[..n]);
            if text.contains("type=1326") && text.contains(&needle) {
                let name = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("syscall="))
                    .and_then(|nr| nr.parse().ok())
                    .and_then(vmm::seccomp::syscall_name)
                    .unwrap_or("?");
                found.push(format!("{name}: {}", text.trim_end()));
            }
        }
        found
    }
}
