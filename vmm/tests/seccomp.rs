//! Each thread kind's real filter stops forbidden system calls. A child process (this test
//! binary again, told what to do by an environment variable) applies the filter of one
//! thread kind the way the thread does (`ThreadFilter::new(kind, mode)?.apply(name)`, after
//! `install_sigsys_handler`), makes a call the thread needs, which must work, then a
//! forbidden one. The parent checks that the child died of SIGSYS with the one-line report
//! naming the thread and the call, or, with `--seccomp log`, that the call ran and the child
//! went on.
//!
//! No libtest harness (`harness = false`): the child is this same `main`, and with a harness
//! it would have to be a test that passes when run on its own.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use vmm::seccomp::{install_sigsys_handler, syscall_name, SeccompMode, ThreadFilter, ThreadKind};

const CHILD: &str = "ACCORDION_SECCOMP_CHILD";
const ALLOWED_OK: &str = "allowed call ok";
const SURVIVED: &str = "forbidden call returned";
/// The variable that gives the children the file `Forbidden::OpenatNew` tries to create.
const NEW_FILE_VAR: &str = "ACCORDION_SECCOMP_TEST_NEW_FILE";

/// The file `Forbidden::OpenatNew` tries to create: this test run's own (the parent's,
/// handed to the children).
fn new_file() -> std::path::PathBuf {
    std::env::var_os(NEW_FILE_VAR)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!(
                "accordion-seccomp-test-{}-new-file",
                std::process::id()
            ))
        })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Forbidden {
    /// `socket(AF_INET, SOCK_STREAM)`: no thread talks to the network, but the VMM thread
    /// (a migration's listener) and the migration thread.
    SocketInet,
    /// `socket(AF_NETLINK, SOCK_RAW)`: no thread configures the host.
    SocketNetlink,
    /// `execve("/bin/true")`.
    Execve,
    /// `ptrace(PTRACE_PEEKDATA, 1)`.
    Ptrace,
    /// `openat` of a new file.
    OpenatNew,
    /// `clone(SIGCHLD)`, which is fork: a new process, not a thread.
    Fork,
}

impl Forbidden {
    const ALL: [Forbidden; 6] = [
        Forbidden::SocketInet,
        Forbidden::SocketNetlink,
        Forbidden::Execve,
        Forbidden::Ptrace,
        Forbidden::OpenatNew,
        Forbidden::Fork,
    ];

    fn nr(self) -> i64 {
        match self {
            Forbidden::SocketInet | Forbidden::SocketNetlink => libc::SYS_socket,
            Forbidden::Execve => libc::SYS_execve,
            Forbidden::Ptrace => libc::SYS_ptrace,
            Forbidden::OpenatNew => libc::SYS_openat,
            Forbidden::Fork => libc::SYS_clone,
        }
    }

    fn parse(s: &str) -> Forbidden {
        *Forbidden::ALL
            .iter()
            .find(|f| format!("{f:?}") == s)
            .unwrap_or_else(|| panic!("unknown call {s}"))
    }

    /// Makes the call with raw syscall(2), so that libc adds nothing around it.
    fn call(self) -> i64 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(new_file().as_os_str().as_bytes()).unwrap_or_default();
        let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: each call gets valid pointers to NUL-terminated strings and
        // NULL-terminated arrays that outlive it; none writes to our memory.
        unsafe {
            match self {
                Forbidden::SocketInet => {
                    libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0)
                }
                Forbidden::SocketNetlink => {
                    libc::syscall(libc::SYS_socket, libc::AF_NETLINK, libc::SOCK_RAW, 0)
                }
                Forbidden::Execve => libc::syscall(
                    libc::SYS_execve,
                    c"/bin/true".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                ),
                Forbidden::Ptrace => {
                    libc::syscall(libc::SYS_ptrace, libc::PTRACE_PEEKDATA, 1, 0, 0)
                }
                Forbidden::OpenatNew => libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                ),
                // A child that got through would exit at once.
                Forbidden::Fork => {
                    match libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) {
                        0 => libc::_exit(0),
                        ret => ret,
                    }
                }
            }
        }
    }
}

/// The name a thread of `kind` applies its filter under.
fn thread_name(kind: ThreadKind) -> &'static str {
    match kind {
        ThreadKind::Vmm => "vmm",
        ThreadKind::Api => "api",
        ThreadKind::EventMonitor => "event-monitor",
        ThreadKind::Vcpu => "vcpu0",
        ThreadKind::VirtioMem => "virtio-mem-mem0",
        ThreadKind::SignalHandler => "signal_handler",
        ThreadKind::MemoryLoader => "memory-loader",
        ThreadKind::SerialOutput => "serial-output",
        ThreadKind::Migration => "migration",
    }
}

fn kind_named(name: &str) -> ThreadKind {
    *ThreadKind::ALL
        .iter()
        .find(|k| k.name() == name)
        .unwrap_or_else(|| panic!("unknown thread kind {name}"))
}

/// Writes `s` to fd `fd` with write(2), which every filter allows.
fn say(fd: i32, s: &str) {
    // SAFETY: `s` is valid for reads of its length.
    unsafe { libc::write(fd, s.as_ptr().cast(), s.len()) };
}

fn check(what: &str, ret: i64) {
    if ret < 0 {
        say(
            2,
            &format!("{what} failed: {}\n", std::io::Error::last_os_error()),
        );
        // SAFETY: ends the child; what it is refused shows in the parent's assertions.
        unsafe { libc::_exit(3) };
    }
}

/// Descriptors the allowed call of a kind needs, made before the filter.
struct Setup {
    fds: [i32; 2],
}

fn setup(kind: ThreadKind) -> Setup {
    let mut fds = [-1; 2];
    // SAFETY: the calls write at most two descriptors into `fds`, or a signal set we own.
    unsafe {
        match kind {
            ThreadKind::Api | ThreadKind::Migration => {
                check(
                    "socketpair",
                    i64::from(libc::socketpair(
                        libc::AF_UNIX,
                        libc::SOCK_STREAM,
                        0,
                        fds.as_mut_ptr(),
                    )),
                );
            }
            ThreadKind::EventMonitor | ThreadKind::SerialOutput => {
                check("pipe", i64::from(libc::pipe(fds.as_mut_ptr())))
            }
            ThreadKind::VirtioMem => {
                fds[0] = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                check("epoll_create1", i64::from(fds[0]));
            }
            ThreadKind::MemoryLoader => {
                // The memory file, opened before the thread starts.
                fds[0] = libc::openat(libc::AT_FDCWD, c"/dev/zero".as_ptr(), libc::O_RDONLY);
                check("openat /dev/zero", i64::from(fds[0]));
            }
            ThreadKind::SignalHandler => {
                // The thread waits for signals blocked in every thread.
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            ThreadKind::Vcpu => {
                fds[1] = libc::eventfd(0, libc::EFD_NONBLOCK);
                check("eventfd", i64::from(fds[1]));
            }
            ThreadKind::Vmm => {
                // The VMM starts its api and signal threads before its filter; glibc's
                // first thread sets up signal handlers (rt_sigaction), which the filter
                // does not allow.
                std::thread::spawn(|| ()).join().ok();
            }
        }
    }
    Setup { fds }
}

/// A call the thread of `kind` makes for its job; it must work under the filter.
fn allowed_call(kind: ThreadKind, s: &Setup) {
    // SAFETY: every pointer passed is to a live local buffer of the length given; the
    // descriptors were made by `setup`.
    unsafe {
        match kind {
            ThreadKind::Vmm => {
                // Opening a payload file.
                let fd = libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_RDONLY);
                check("openat /dev/null", i64::from(fd));
                libc::close(fd);
                // Starting a thread (a vCPU): clone3 answers ENOSYS, glibc falls back to
                // clone with thread flags.
                let ret = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize);
                if ret != -1 || *libc::__errno_location() != libc::ENOSYS {
                    say(2, "clone3 did not answer ENOSYS\n");
                    libc::_exit(4);
                }
                // pthread itself, as std::thread does underneath.
                extern "C" fn seven(_: *mut libc::c_void) -> *mut libc::c_void {
                    7 as *mut libc::c_void
                }
                let mut thread: libc::pthread_t = 0;
                let mut result: *mut libc::c_void = std::ptr::null_mut();
                if libc::pthread_create(&mut thread, std::ptr::null(), seven, std::ptr::null_mut())
                    != 0
                    || libc::pthread_join(thread, &mut result) != 0
                    || result as usize != 7
                {
                    say(2, "a thread could not be started\n");
                    libc::_exit(4);
                }
            }
            ThreadKind::Api => {
                // A request in, an answer out.
                let sent = libc::send(s.fds[1], b"GET".as_ptr().cast(), 3, 0);
                check("send", sent as i64);
                let mut buf = [0u8; 8];
                let got = libc::recv(s.fds[0], buf.as_mut_ptr().cast(), buf.len(), 0);
                check("recv", got as i64);
            }
            ThreadKind::Migration => {
                // A memory range out, its answer in: write(2) from guest memory, std's
                // send and recv for headers.
                let n = libc::write(s.fds[1], b"range".as_ptr().cast(), 5);
                check("write", n as i64);
                let sent = libc::send(s.fds[0], b"OK".as_ptr().cast(), 2, 0);
                check("send", sent as i64);
                let mut buf = [0u8; 8];
                let got = libc::recv(s.fds[1], buf.as_mut_ptr().cast(), buf.len(), 0);
                check("recv", got as i64);
            }
            ThreadKind::EventMonitor => {
                let n = libc::write(s.fds[1], b"{}\n".as_ptr().cast(), 3);
                check("write", n as i64);
            }
            ThreadKind::SerialOutput => {
                // A burst of the guest's output to the terminal or log file.
                let n = libc::write(s.fds[1], b"login: ".as_ptr().cast(), 7);
                check("write", n as i64);
            }
            ThreadKind::MemoryLoader => {
                // A chunk of the memory file.
                let mut buf = [0u8; 64];
                let n = libc::pread(s.fds[0], buf.as_mut_ptr().cast(), buf.len(), 4096);
                check("pread", n as i64);
            }
            ThreadKind::Vcpu => {
                // Handing a driver's DRIVER_OK to the VMM thread: an eventfd write.
                let one = 1u64.to_ne_bytes();
                let n = libc::write(s.fds[1], one.as_ptr().cast(), one.len());
                check("write", n as i64);
            }
            ThreadKind::VirtioMem => {
                // Waiting for the queue, then discarding an unplugged page.
                let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
                check(
                    "epoll_wait",
                    i64::from(libc::epoll_wait(s.fds[0], ev.as_mut_ptr(), 1, 0)),
                );
                let len = 4096;
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    check("mmap", -1);
                }
                *(p as *mut u8) = 7;
                check(
                    "madvise",
                    i64::from(libc::madvise(p, len, libc::MADV_DONTNEED)),
                );
                if *(p as *const u8) != 0 {
                    say(2, "the discarded page did not read back as zero\n");
                    libc::_exit(4);
                }
            }
            ThreadKind::SignalHandler => {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // Nothing is pending: EAGAIN, from the kernel rather than from the filter.
                let r = libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
                let errno = std::io::Error::last_os_error().raw_os_error();
                if r != -1 || errno != Some(libc::EAGAIN) {
                    say(2, &format!("sigtimedwait: {r} {errno:?}\n"));
                    libc::_exit(3);
                }
            }
        }
    }
}

/// The child: `kind:mode:call`.
fn child(spec: &str) -> ! {
    let parts: Vec<&str> = spec.split(':').collect();
    let (kind, mode, call) = (
        kind_named(parts[0]),
        SeccompMode::parse(parts[1]).unwrap(),
        Forbidden::parse(parts[2]),
    );
    if mode == SeccompMode::Trap {
        install_sigsys_handler().unwrap();
    }
    let s = setup(kind);
    let filter = ThreadFilter::new(kind, mode).unwrap();
    filter.apply(thread_name(kind)).unwrap();
    allowed_call(kind, &s);
    say(1, &format!("{ALLOWED_OK}\n"));
    let ret = call.call();
    say(1, &format!("{SURVIVED} {ret}\n"));
    // exit_group: refused by most filters; with `log` it is logged and runs.
    // SAFETY: ends the child.
    unsafe { libc::_exit(0) }
}

struct Outcome {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

fn run_child(kind: ThreadKind, mode: &str, call: Forbidden) -> Outcome {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, format!("{}:{mode}:{call:?}", kind.name()))
        .env(NEW_FILE_VAR, new_file())
        .output()
        .unwrap();
    Outcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `true`: the forbidden call is stopped, and the report names the thread and the call.
fn forbidden_call_is_stopped(kind: ThreadKind, call: Forbidden) -> Result<(), String> {
    let o = run_child(kind, "true", call);
    let expected = format!(
        "accordion: seccomp: thread '{}' made a forbidden system call {} ({}); the process stops\n",
        thread_name(kind),
        syscall_name(call.nr()).unwrap(),
        call.nr()
    );
    let fail = |why: &str| {
        Err(format!(
            "{why}\n  status: {:?}\n  stdout: {}\n  stderr: {}",
            o.status, o.stdout, o.stderr
        ))
    };
    if !o.stdout.contains(ALLOWED_OK) {
        return fail("the thread's own call did not work under its filter");
    }
    if o.stdout.contains(SURVIVED) {
        return fail("the forbidden call returned");
    }
    if o.status.signal() != Some(libc::SIGSYS) {
        return fail("the child did not die of SIGSYS");
    }
    if o.stderr != expected {
        return fail(&format!("stderr is not the one report line {expected:?}"));
    }
    if call == Forbidden::OpenatNew && new_file().exists() {
        return fail("the new file was created");
    }
    Ok(())
}

/// `log`: the call is logged by the kernel and runs; the child goes on and exits 0.
fn forbidden_call_is_logged(kind: ThreadKind) -> Result<(), String> {
    let o = run_child(kind, "log", Forbidden::SocketNetlink);
    let ran = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(SURVIVED))
        .and_then(|r| r.trim().parse::<i64>().ok());
    match (o.status.code(), ran) {
        (Some(0), Some(fd)) if fd >= 0 && o.stdout.contains(ALLOWED_OK) && o.stderr.is_empty() => {
            Ok(())
        }
        _ => Err(format!(
            "status {:?}, stdout {}, stderr {}",
            o.status, o.stdout, o.stderr
        )),
    }
}

/// `false`: no filter; the call runs.
fn no_filter_with_false() -> Result<(), String> {
    let o = run_child(ThreadKind::VirtioMem, "false", Forbidden::SocketInet);
    if o.status.code() == Some(0) && o.stdout.contains(SURVIVED) {
        Ok(())
    } else {
        Err(format!(
            "status {:?}, stdout {}, stderr {}",
            o.status, o.stdout, o.stderr
        ))
    }
}

/// A named check.
type Case = (String, Box<dyn Fn() -> Result<(), String>>);

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
    }
    let mut cases: Vec<Case> = Vec::new();
    for kind in ThreadKind::ALL {
        for call in Forbidden::ALL {
            // The VMM thread opens payload files; every other thread is refused openat.
            if kind == ThreadKind::Vmm && call == Forbidden::OpenatNew {
                continue;
            }
            // A migration connects or listens over TCP.
            if matches!(kind, ThreadKind::Vmm | ThreadKind::Migration)
                && call == Forbidden::SocketInet
            {
                continue;
            }
            cases.push((
                format!("{} thread: {call:?} is stopped with a report", kind.name()),
                Box::new(move || forbidden_call_is_stopped(kind, call)),
            ));
        }
        cases.push((
            format!("{} thread: with log, a forbidden call runs", kind.name()),
            Box::new(move || forbidden_call_is_logged(kind)),
        ));
    }
    cases.push(("false: no filter".into(), Box::new(no_filter_with_false)));
    let _ = std::fs::remove_file(new_file());
    let mut failed = 0;
    for (name, case) in &cases {
        match case() {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}");
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
