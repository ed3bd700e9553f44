//! Helpers shared by the integration tests: the test guest, an `accordion` process whose
//! serial console the test reads and types into, and tiny hand-made kernels.

#![allow(dead_code)]

pub mod api;
pub mod migration_tap;
pub mod process;
pub mod vmem;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCORDION: &str = env!("CARGO_BIN_EXE_accordion");

/// Boot timeouts are generous: in the nested test host a guest boot takes 10-30 s.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The test guest's console protocol (scripts/lib/guest-init.sh).
pub const READY: &str = "ACCORDION_GUEST_READY";
pub const CMD_DONE: &str = "ACCORDION_CMD_DONE";

/// The test guest built by scripts/build-guest.sh.
pub struct Guest {
    pub dir: PathBuf,
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    pub cmdline: String,
}

pub fn guest() -> Guest {
    let dir = std::env::var_os("ACCORDION_GUEST_DIR")
        .map(PathBuf::from)
        .expect("ACCORDION_GUEST_DIR is not set: run the guest tests through scripts/run-tests.sh");
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))
        .unwrap_or_else(|e| panic!("{}/cmdline: {e}", dir.display()))
        .trim()
        .to_string();
    Guest {
        vmlinux: dir.join("vmlinux"),
        bzimage: dir.join("bzImage"),
        initramfs: dir.join("initramfs.cpio.gz"),
        cmdline,
        dir,
    }
}

/// A scratch directory removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let base = std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("accordion-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `accordion` with its serial console on stdin/stdout.
pub struct Vmm {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
    /// Lines of the test host's KVM trace before this VMM started (see [`kvm_trace`]).
    trace_mark: usize,
}

impl Vmm {
    pub fn spawn(name: &str, args: &[&str]) -> Vmm {
        let mut child = Command::new(ACCORDION)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start accordion");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                eprintln!("[{tag}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Vmm {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            seen: Vec::new(),
            trace_mark: kvm_trace().len(),
        }
    }

    /// Boots the test guest with extra `accordion` arguments.
    pub fn boot_guest(name: &str, kernel: &Path, extra_cmdline: &str, args: &[&str]) -> Vmm {
        let g = guest();
        let cmdline = format!("{} {extra_cmdline}", g.cmdline);
        let mut all = vec![
            "--kernel",
            kernel.to_str().unwrap(),
            "--initramfs",
            g.initramfs.to_str().unwrap(),
            "--cmdline",
            &cmdline,
        ];
        all.extend_from_slice(args);
        Vmm::spawn(name, &all)
    }

    /// Waits for a serial line containing `needle` and returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no '{needle}' within {timeout:?}\n{}",
                        self.name,
                        self.report()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{}: accordion exited ({status:?}) before '{needle}'\n{}",
                        self.name,
                        self.report()
                    )
                }
            }
        }
    }

    /// Collects every serial line that arrives within `period` (into `serial_lines`).
    pub fn drain(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return,
            }
        }
    }

    /// Types a line on the guest's serial console.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// The accordion process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs `steps`; if they panic, prints accordion's stderr (a seccomp report, a guest
    /// failure) before passing the panic on.
    pub fn explain_failure<T>(&mut self, steps: impl FnOnce(&mut Vmm) -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| steps(self))) {
            Ok(value) => value,
            Err(panic) => {
                eprintln!("{}: the test failed; {}", self.name, self.report());
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Runs a shell command in the guest and returns its completion line (`rc=N`).
    pub fn run_command(&mut self, command: &str) -> String {
        self.send(command);
        self.wait_for(CMD_DONE, BOOT_TIMEOUT)
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain what is left.
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: accordion still running after {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn serial_lines(&self) -> &[String] {
        &self.seen
    }

    fn report(&self) -> String {
        let tail: Vec<&String> = self
            .seen
            .iter()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let stderr = self.stderr();
        format!(
            "--- last serial lines ---\n{}\n--- accordion stderr ---\n{}{}",
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            stderr,
            if stderr.contains("triple fault") {
                let trace = kvm_trace();
                let ours = trace.get(self.trace_mark..).unwrap_or_default();
                format!(
                    "\n--- KVM trace of the test host since this VMM started ---\n{}",
                    ours.join("\n")
                )
            } else {
                String::new()
            }
        )
    }
}

/// In the nested test host, KVM's record of shutdown exits (with the guest's RIP, which the
/// VMM cannot see on AMD) and of the exceptions it injected, as lines; scripts/lib/
/// test-host-init.sh turns the trace on. Empty elsewhere.
fn kvm_trace() -> Vec<String> {
    std::fs::read_to_string("/sys/kernel/tracing/trace")
        .map(|t| {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `accordion` to completion and returns (status, stderr).
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(ACCORDION)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start accordion");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses `key=value` out of a marker line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// A minimal ELF64 kernel: one PT_LOAD of `code` at 1 MiB (occupying `memsz` bytes), and
/// with `pvh` a Xen PVH entry note pointing at it.
/// Writes a PVH kernel that halts forever (`hlt; jmp back to the hlt`) into `dir` and
/// returns its path: a VM that runs on any KVM and costs no CPU.
pub fn halting_kernel(dir: &TempDir) -> String {
    let kernel = dir.path("kernel");
    std::fs::write(&kernel, tiny_elf_kernel(&[0xf4, 0xeb, 0xfd], 0x1000, true)).unwrap();
    kernel.to_str().unwrap().to_string()
}

pub fn tiny_elf_kernel(code: &[u8], memsz: u64, pvh: bool) -> Vec<u8> {
    const LOAD_ADDR: u64 = 0x10_0000;
    const CODE_OFFSET: u64 = 0x1000;
    let phnum: u16 = if pvh { 2 } else { 1 };
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf.extend_from_slice(&phnum.to_le_bytes());
    elf.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    elf.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    let note_offset: u64 = 64 + 56 * u64::from(phnum);
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD_ADDR as u32).to_le_bytes());
    let phdr = |elf: &mut Vec<u8>,
                kind: u32,
                flags: u32,
                off: u64,
                addr: u64,
                filesz: u64,
                memsz: u64,
                align: u64| {
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        elf.extend_from_slice(&off.to_le_bytes());
        elf.extend_from_slice(&addr.to_le_bytes());
        elf.extend_from_slice(&addr.to_le_bytes());
        elf.extend_from_slice(&filesz.to_le_bytes());
        elf.extend_from_slice(&memsz.to_le_bytes());
        elf.extend_from_slice(&align.to_le_bytes());
    };
    let code_len = code.len() as u64;
    phdr(
        &mut elf,
        1,
        5,
        CODE_OFFSET,
        LOAD_ADDR,
        code_len,
        memsz.max(code_len),
        0x1000,
    );
    if pvh {
        phdr(
            &mut elf,
            4,
            4,
            note_offset,
            0,
            note.len() as u64,
            note.len() as u64,
            4,
        );
        elf.extend_from_slice(&note);
    }
    elf.resize(CODE_OFFSET as usize, 0);
    elf.extend_from_slice(code);
    elf
}
