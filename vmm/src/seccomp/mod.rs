//! Seccomp: every thread of the VMM runs under a filter of its own that allows only the
//! system calls its job needs (see docs/seccomp.md). The filter of each thread kind is in a
//! file of its own; [`ThreadFilter`] compiles one, and the thread applies it as its first
//! action, before it handles guest or client input.
//!
//! Filters stack: a thread inherits the filters of the thread that spawned it, and a system
//! call must pass all of them. The vCPU threads and the virtio-mem threads (started when a
//! driver sets DRIVER_OK, which a vCPU hands to the VMM thread) start under the `vmm`
//! filter, so it also allows what a new thread does before it installs its own filter, and
//! what those threads need.
//!
//! The thread that spawns threads (`vmm`) may `clone` only with `CLONE_VM | CLONE_THREAD`,
//! which creates a thread, never a process. `clone3` passes its flags in memory, where a
//! filter cannot see them, so a second filter answers it `ENOSYS`, and glibc falls back to
//! `clone`.

mod api;
mod event_monitor;
mod kvm;
mod memory_loader;
mod migration;
mod rules;
mod serial_output;
mod signal;
mod sigsys;
mod syscall_names;
mod vcpu;
mod virtio_mem;
mod vmm;

use std::collections::BTreeMap;
use std::sync::Arc;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::config::ConfigError;
pub use sigsys::{install_sigsys_handler, syscall_name};

/// `--seccomp`: what a system call outside a thread's filter does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompMode {
    /// `true`: the call raises SIGSYS; the handler reports the thread and the call, and the
    /// process dies.
    #[default]
    Trap,
    /// `log`: the kernel logs the call (audit, `type=1326`) and lets it run.
    Log,
    /// `false`: no filter at all.
    Off,
}

impl SeccompMode {
    /// Parses the value of `--seccomp`: `true`, `false` or `log`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "true" => Ok(SeccompMode::Trap),
            "log" => Ok(SeccompMode::Log),
            "false" => Ok(SeccompMode::Off),
            _ => Err(ConfigError::new(
                "--seccomp",
                format!("'{value}' is not one of true, false, log"),
            )),
        }
    }

    fn mismatch_action(self) -> Option<SeccompAction> {
        match self {
            SeccompMode::Trap => Some(SeccompAction::Trap),
            SeccompMode::Log => Some(SeccompAction::Log),
            SeccompMode::Off => None,
        }
    }
}

/// The kinds of threads, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: argument parsing, then the control loop.
    Vmm,
    /// The REST API server.
    Api,
    /// The `--event-monitor` writer.
    EventMonitor,
    /// A vCPU thread (`vcpu<N>`).
    Vcpu,
    /// A virtio-mem device thread (`virtio-mem-<id>`).
    VirtioMem,
    /// The thread that waits for SIGTERM and SIGINT (`signal_handler`).
    SignalHandler,
    /// The thread that fills guest memory from a snapshot as it is touched
    /// (`memory-loader`, `OnDemand` restores only).
    MemoryLoader,
    /// The thread that writes the guest's serial output (`serial-output`).
    SerialOutput,
    /// Either side of a live migration (`migration`).
    Migration,
}

impl ThreadKind {
    /// Whether threads of this kind start other threads (after applying their filter).
    pub fn spawns_threads(self) -> bool {
        self == ThreadKind::Vmm
    }

    /// Every kind, for tests and reports.
    pub const ALL: [ThreadKind; 9] = [
        ThreadKind::Vmm,
        ThreadKind::Api,
        ThreadKind::EventMonitor,
        ThreadKind::Vcpu,
        ThreadKind::VirtioMem,
        ThreadKind::SignalHandler,
        ThreadKind::MemoryLoader,
        ThreadKind::SerialOutput,
        ThreadKind::Migration,
    ];

    /// The kind's name, as docs/seccomp.md lists it.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::EventMonitor => "event-monitor",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::VirtioMem => "virtio-mem",
            ThreadKind::SignalHandler => "signal_handler",
            ThreadKind::MemoryLoader => "memory-loader",
            ThreadKind::SerialOutput => "serial-output",
            ThreadKind::Migration => "migration",
        }
    }

    /// The allowed system calls, each with its argument conditions (none: any arguments).
    fn rules(self) -> Result<rules::Rules, seccompiler::BackendError> {
        match self {
            ThreadKind::Vmm => vmm::rules(),
            ThreadKind::Api => api::rules(),
            ThreadKind::EventMonitor => event_monitor::rules(),
            ThreadKind::Vcpu => vcpu::rules(),
            ThreadKind::VirtioMem => virtio_mem::rules(),
            ThreadKind::SignalHandler => signal::rules(),
            ThreadKind::MemoryLoader => memory_loader::rules(),
            ThreadKind::SerialOutput => serial_output::rules(),
            ThreadKind::Migration => migration::rules(),
        }
    }

    /// How many distinct system calls the kind's filter allows (with or without argument
    /// conditions).
    pub fn allowed_syscall_count(self) -> Result<usize, SeccompError> {
        Ok(self.rule_map()?.len())
    }

    /// The rules by system call number. A call listed more than once (by the shared
    /// runtime rules and by the kind's own) is allowed when any entry allows it; an entry
    /// without conditions allows every use.
    fn rule_map(self) -> Result<BTreeMap<i64, Vec<seccompiler::SeccompRule>>, SeccompError> {
        let rules = self.rules().map_err(|source| SeccompError::Build {
            kind: self.name(),
            source: source.into(),
        })?;
        let mut map: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = BTreeMap::new();
        for (nr, chain) in rules {
            match map.get_mut(&nr) {
                None => {
                    map.insert(nr, chain);
                }
                Some(existing) if existing.is_empty() => {}
                Some(existing) if chain.is_empty() => existing.clear(),
                Some(existing) => existing.extend(chain),
            }
        }
        Ok(map)
    }

    /// The names of the system calls the kind's filter allows, sorted by number.
    pub fn allowed_syscalls(self) -> Result<Vec<&'static str>, SeccompError> {
        Ok(self
            .rule_map()?
            .keys()
            .map(|&nr| syscall_name(nr).unwrap_or("?"))
            .collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter of the {kind} thread: {source}")]
    Build {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("cannot install the seccomp filter of thread '{thread}': {source}")]
    Apply {
        thread: String,
        #[source]
        source: seccompiler::Error,
    },
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] std::io::Error),
    #[error("cannot limit glibc's malloc to one arena (mallopt M_ARENA_MAX)")]
    Malloc,
}

/// Keeps glibc's malloc from making calls no filter allows, before any thread starts: with
/// one arena, no thread gets a heap of its own. Such a heap, once it shrinks, makes glibc
/// open `/proc/sys/vm/overcommit_memory` on the shrinking thread (the `api` thread did after
/// a large request), and no thread but the VMM's may open files.
pub fn tune_malloc_for_filters() -> Result<(), SeccompError> {
    // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
    // exists, so no allocation runs concurrently.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } == 1 {
        Ok(())
    } else {
        Err(SeccompError::Malloc)
    }
}

/// The compiled filter for threads of one kind (nothing with `--seccomp false`). Compile it
/// in the spawning thread, so that a bad filter is an error there, and apply it in the new
/// thread.
#[derive(Clone, Debug)]
pub struct ThreadFilter {
    kind: ThreadKind,
    program: Option<Arc<BpfProgram>>,
    /// `clone3` answered `ENOSYS`, for kinds that spawn threads.
    clone3_enosys: Option<Arc<BpfProgram>>,
}

impl ThreadFilter {
    pub fn new(kind: ThreadKind, mode: SeccompMode) -> Result<Self, SeccompError> {
        let program = match mode.mismatch_action() {
            None => None,
            Some(mismatch) => Some(Arc::new(compile(kind, mismatch)?)),
        };
        let clone3_enosys = match program {
            Some(_) if kind.spawns_threads() => Some(Arc::new(compile_clone3_enosys()?)),
            _ => None,
        };
        Ok(ThreadFilter {
            kind,
            program,
            clone3_enosys,
        })
    }

    pub fn kind(&self) -> ThreadKind {
        self.kind
    }

    /// Installs the filter on the calling thread, which the SIGSYS report will call
    /// `thread_name`. Nothing to do with `--seccomp false`.
    pub fn apply(&self, thread_name: &str) -> Result<(), SeccompError> {
        let Some(program) = &self.program else {
            return Ok(());
        };
        sigsys::set_thread_name(thread_name);
        let fail = |source| SeccompError::Apply {
            thread: thread_name.to_string(),
            source,
        };
        if let Some(clone3) = &self.clone3_enosys {
            seccompiler::apply_filter(clone3).map_err(fail)?;
        }
        seccompiler::apply_filter(program).map_err(fail)
    }

    /// [`apply`](Self::apply) under the name the thread was spawned with (the kind's name
    /// for an unnamed thread or the main thread).
    pub fn apply_to_current(&self) -> Result<(), SeccompError> {
        let current = std::thread::current();
        match current.name() {
            Some(name) if name != "main" => self.apply(name),
            _ => self.apply(self.kind.name()),
        }
    }
}

/// Compiles the filter of `kind` for x86-64 with `mismatch` for calls it does not allow.
fn compile(kind: ThreadKind, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let build = |source: seccompiler::Error| SeccompError::Build {
        kind: kind.name(),
        source,
    };
    let filter = SeccompFilter::new(
        kind.rule_map()?,
        mismatch,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| build(e.into()))?;
    BpfProgram::try_from(filter).map_err(|e| build(e.into()))
}

/// A filter that allows everything but `clone3`, which fails with `ENOSYS` (stacked with the
/// thread's own, the more restrictive answer wins, so `clone3` fails and the rest is up to
/// the other filter).
fn compile_clone3_enosys() -> Result<BpfProgram, SeccompError> {
    let build = |source: seccompiler::Error| SeccompError::Build {
        kind: "clone3",
        source,
    };
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| build(e.into()))?;
    BpfProgram::try_from(filter).map_err(|e| build(e.into()))
}

#[cfg(test)]
mod tests;
