//! The control loop: builds the VM, boots it, forwards serial input, and reacts to power-off,
//! reset (a new VM from the same configuration, in the same process) and guest failures.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use hypervisor::kvm::KvmHypervisor;
use vmm_sys_util::terminal::Terminal;

use crate::config::{ConsoleMode, VmConfig};
use crate::devices::SerialOutput;
use crate::vcpu_manager::install_kick_handler;
use crate::vm::{Vm, VmError};
use crate::vm_event::{VmEvent, VmEventSignal};

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Hypervisor(#[from] hypervisor::HypervisorError),
    #[error("{0}")]
    Vm(#[from] VmError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the VM ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest powered off.
    PowerOff,
    /// The guest could not go on; the text says why.
    GuestFailure(String),
}

const EPOLL_EVENTS: usize = 4;
const TOKEN_VM_EVENT: u64 = 0;
const TOKEN_STDIN: u64 = 1;
/// How long to hold host input back while the guest's receive FIFO is full.
const INPUT_BACKOFF_MS: i32 = 10;

/// Puts a terminal on stdin into raw mode for as long as it lives.
struct RawStdin;

impl RawStdin {
    fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return None;
        }
        match stdin.lock().set_raw_mode() {
            Ok(()) => Some(RawStdin),
            Err(e) => {
                log::warn!("cannot put the terminal in raw mode: {e}");
                None
            }
        }
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        if let Err(e) = std::io::stdin().lock().set_canon_mode() {
            log::warn!("cannot restore the terminal: {e}");
        }
    }
}

fn serial_output(config: &VmConfig, boot: u32) -> Result<SerialOutput, VmmError> {
    Ok(match config.serial.mode {
        ConsoleMode::Tty => SerialOutput::Stdout,
        ConsoleMode::Off => SerialOutput::Off,
        ConsoleMode::File => {
            let path = config.serial.file.as_ref().ok_or_else(|| {
                crate::config::ConfigError::new("--serial", "file mode needs a path")
            })?;
            // The first boot starts the file afresh; after a reboot the log continues.
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .append(boot > 0)
                .truncate(boot == 0)
                .open(path)
                .map_err(|source| VmmError::Io {
                    what: format!("--serial: {}", path.display()),
                    source,
                })?;
            SerialOutput::File(file)
        }
    })
}

/// Runs the VM `config` describes until the guest powers off or fails.
pub fn run_vm(config: VmConfig) -> Result<ExitStatus, VmmError> {
    config.validate()?;
    install_kick_handler().map_err(|source| VmmError::Io {
        what: "installing the vCPU kick signal handler".into(),
        source,
    })?;
    let hypervisor = KvmHypervisor::new()?;
    let events = Arc::new(VmEventSignal::new().map_err(|source| VmmError::Io {
        what: "eventfd".into(),
        source,
    })?);
    let forward_stdin = config.serial.mode == ConsoleMode::Tty;
    let _raw = forward_stdin.then(RawStdin::enable).flatten();
    let mut stdin_open = forward_stdin;

    for boot in 0u32.. {
        let mut vm = Vm::new(
            &hypervisor,
            &config,
            events.clone(),
            serial_output(&config, boot)?,
        )?;
        vm.boot()?;
        log::info!("VM booted (boot #{boot})");
        let event = wait_for_event(&events, &vm, &mut stdin_open)?;
        vm.shutdown();
        drop(vm);
        match event {
            VmEvent::PowerOff => return Ok(ExitStatus::PowerOff),
            VmEvent::GuestFailure(reason) => return Ok(ExitStatus::GuestFailure(reason)),
            VmEvent::Reset => log::info!("guest reset: booting again"),
        }
    }
    unreachable!("the boot counter does not run out")
}

fn epoll_err(source: std::io::Error) -> VmmError {
    VmmError::Io {
        what: "epoll".into(),
        source,
    }
}

/// Waits for a VM event, meanwhile moving host input from stdin to the guest's UART.
fn wait_for_event(
    events: &VmEventSignal,
    vm: &Vm,
    stdin_open: &mut bool,
) -> Result<VmEvent, VmmError> {
    let epoll_fd = epoll::create(true).map_err(epoll_err)?;
    let add = |fd: i32, token: u64| {
        epoll::ctl(
            epoll_fd,
            epoll::ControlOptions::EPOLL_CTL_ADD,
            fd,
            epoll::Event::new(epoll::Events::EPOLLIN, token),
        )
    };
    let remove = |fd: i32| {
        let _ = epoll::ctl(
            epoll_fd,
            epoll::ControlOptions::EPOLL_CTL_DEL,
            fd,
            epoll::Event::new(epoll::Events::empty(), 0),
        );
    };
    let result = (|| {
        add(events.eventfd().as_raw_fd(), TOKEN_VM_EVENT).map_err(epoll_err)?;
        let stdin_fd = std::io::stdin().as_raw_fd();
        let mut stdin_watched = *stdin_open && add(stdin_fd, TOKEN_STDIN).is_ok();
        let mut ready = [epoll::Event::new(epoll::Events::empty(), 0); EPOLL_EVENTS];
        loop {
            // Re-arm input once the guest has drained its FIFO.
            if *stdin_open
                && !stdin_watched
                && vm
                    .serial()
                    .lock()
                    .map(|s| s.input_room() > 0)
                    .unwrap_or(false)
            {
                stdin_watched = add(stdin_fd, TOKEN_STDIN).is_ok();
            }
            let timeout = if *stdin_open && !stdin_watched {
                INPUT_BACKOFF_MS
            } else {
                -1
            };
            let n = match epoll::wait(epoll_fd, timeout, &mut ready) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(epoll_err(e)),
            };
            for ev in &ready[..n] {
                match ev.data {
                    TOKEN_VM_EVENT => {
                        if let Some(event) = events.take() {
                            return Ok(event);
                        }
                    }
                    TOKEN_STDIN => {
                        let mut serial = vm.serial().lock().unwrap_or_else(|e| e.into_inner());
                        let room = serial.input_room();
                        if room == 0 {
                            // Hold input back until the guest reads; stop polling stdin.
                            remove(stdin_fd);
                            stdin_watched = false;
                            continue;
                        }
                        let mut buf = vec![0u8; room];
                        match std::io::stdin().lock().read(&mut buf) {
                            Ok(0) => {
                                // End of input: the guest keeps running without it.
                                remove(stdin_fd);
                                *stdin_open = false;
                                stdin_watched = false;
                            }
                            Ok(n) => {
                                serial.queue_input(&buf[..n]);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                log::warn!("stdin: {e}; no more serial input");
                                remove(stdin_fd);
                                *stdin_open = false;
                                stdin_watched = false;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    })();
    // SAFETY: epoll_fd was returned by epoll_create1 above and is closed exactly once here.
    unsafe { libc::close(epoll_fd) };
    result
}
