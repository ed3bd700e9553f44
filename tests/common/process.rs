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

/// Each thread of process `pid` (KVM's kernel workers left out) as `(name, seccomp mode)`,
/// the mode from the `Seccomp:` line of its `/proc` status: 0 none, 1 strict, 2 filter.
pub fn thread_seccomp_modes(pid: u32) -> Vec<(String, u32)> {
    let mut threads: Vec<(String, u32)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"))
        .filter_map(|task| {
            let task = task.ok()?.path();
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            let status = std::fs::read_to_string(task.join("status")).ok()?;
            let mode = status
                .lines()
                .find_map(|l| l.strip_prefix("Seccomp:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Seccomp: line for {}", task.display()));
            Some((name.trim().to_string(), mode))
        })
        .filter(|(name, _)| !name.starts_with("kvm-"))
        .collect();
    threads.sort();
    threads
}

/// Whether every vCPU thread (`vcpuN`) of process `pid` is parked: blocked in `futex`
/// (the pause gate), not in the `KVM_RUN` ioctl or running. From `/proc/PID/task/*/syscall`,
/// whose first field is the number of the system call a blocked thread is in.
pub fn vcpus_parked(pid: u32) -> bool {
    let mut vcpus = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/task: {e}"));
    for task in tasks.filter_map(|t| t.ok()) {
        let path = task.path();
        let is_vcpu = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|name| name.trim().starts_with("vcpu"));
        if !is_vcpu {
            continue;
        }
        vcpus += 1;
        let syscall = std::fs::read_to_string(path.join("syscall")).unwrap_or_default();
        if syscall.split_whitespace().next() != Some(&libc::SYS_futex.to_string()) {
            return false;
        }
    }
    assert!(vcpus > 0, "process {pid} has no vCPU thread");
    true
}

/// Waits (at most 10 s) until every vCPU thread of `pid` is parked: a thread counted as
/// parked is on its way into `futex` for a moment.
pub fn wait_vcpus_parked(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !vcpus_parked(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    true
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

/// One mapping of /proc/PID/smaps.
#[derive(Default)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// The path column: a file, `[heap]`, or empty for anonymous memory.
    pub name: String,
    /// Its protection, as `rw-p`.
    pub perms: String,
    /// `MAP_NORESERVE` (`nr` in VmFlags).
    pub noreserve: bool,
    /// The kB fields: `Rss:`, `Private_Hugetlb:` and so on.
    pub fields: Vec<(String, u64)>,
}

pub fn vmas(pid: u32) -> Vec<Vma> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut out: Vec<Vma> = Vec::new();
    for line in smaps.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let range = words
            .first()
            .and_then(|w| w.split_once('-'))
            .and_then(|(s, e)| {
                Some((
                    u64::from_str_radix(s, 16).ok()?,
                    u64::from_str_radix(e, 16).ok()?,
                ))
            });
        if let Some((start, end)) = range.filter(|_| !line.starts_with("VmFlags")) {
            let name = words.get(5..).map(|w| w.join(" ")).unwrap_or_default();
            out.push(Vma {
                start,
                end,
                name,
                perms: words.get(1).unwrap_or(&"").to_string(),
                ..Vma::default()
            });
        } else if let Some(vma) = out.last_mut() {
            match words.as_slice() {
                ["VmFlags:", flags @ ..] => vma.noreserve = flags.contains(&"nr"),
                [field, value, ..] => {
                    if let Ok(v) = value.parse() {
                        vma.fields.push((field.to_string(), v));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

impl Vma {
    /// The kB value of smaps field `name` (`Rss:`), 0 when absent.
    pub fn field(&self, name: &str) -> u64 {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map_or(0, |(_, v)| *v)
    }
}
