//! The VMM thread: owns the VM and runs the control loop. It builds and boots the VM from
//! the command line or from `vm.create`/`vm.boot`, answers API requests, forwards serial
//! input, and reacts to power-off, reset (a new VM from the same configuration, in the same
//! process) and guest failures.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use hypervisor::kvm::KvmHypervisor;
use serde_json::json;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::api::server::ApiChannel;
use crate::api::socket::{ApiSocket, ApiSocketConfig, ApiSocketError};
use crate::api::{ApiAction, ApiError, ApiRequest, ApiResult};
use crate::config::{ConsoleMode, VmConfig};
use crate::devices::SerialOutput;
use crate::event_monitor::{event, event_with};
use crate::memory::resize::{resize_target, VmResize};
use crate::seccomp::{SeccompError, SeccompMode, ThreadFilter, ThreadKind};
use crate::signal_handler::ExitSignal;
use crate::stdin_forwarder::{RawStdin, StdinForwarder};
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
    #[error("{0}")]
    ApiSocket(#[from] ApiSocketError),
    #[error("{0}")]
    Seccomp(#[from] SeccompError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--restore: {0}")]
    Restore(String),
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> VmmError + '_ {
    move |source| VmmError::Io {
        what: what.to_string(),
        source,
    }
}

/// How the VMM ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest powered off.
    PowerOff,
    /// `vmm.shutdown` asked the VMM to exit.
    VmmShutdown,
    /// The guest could not go on; the text says why.
    GuestFailure(String),
    /// SIGTERM or SIGINT (the number) asked the VMM to exit.
    Signal(i32),
    /// The VM was migrated to another VMM, which runs it now.
    Migrated,
}

/// What the VMM process is told at start.
pub struct VmmOptions {
    /// A VM to create and boot at once (`--kernel` and friends).
    pub vm: Option<VmConfig>,
    pub api_socket: Option<ApiSocketConfig>,
    /// Where lifecycle events go, one JSON object a line.
    pub event_monitor: Option<File>,
    /// `--seccomp`.
    pub seccomp: SeccompMode,
    /// `--restore`: a snapshot to bring back at once, instead of `vm`.
    pub restore: Option<crate::snapshot::request::RestoreConfig>,
}

const EPOLL_EVENTS: usize = 8;
const TOKEN_VM_EVENT: u64 = 0;
const TOKEN_API: u64 = 1;
const TOKEN_STDIN: u64 = 2;
const TOKEN_SIGNAL: u64 = 3;
const TOKEN_DEVICE_WORK: u64 = 4;
const TOKEN_RESIZE_WATCH: u64 = 5;
const TOKEN_MIGRATION: u64 = 6;

#[path = "vmm_migration.rs"]
mod migration;

fn serial_output(config: &VmConfig, boot: u32) -> Result<SerialOutput, VmmError> {
    Ok(match config.serial.mode {
        ConsoleMode::Tty => SerialOutput::Stdout,
        ConsoleMode::Off => SerialOutput::Off,
        ConsoleMode::File => {
            let path = config.serial.file.as_ref().ok_or_else(|| {
                crate::config::ConfigError::new("--serial", "file mode needs a path")
            })?;
            // The first boot starts the file afresh; after a reboot the log continues.
            SerialOutput::File {
                path: path.clone(),
                start_afresh: boot == 0,
            }
        }
    })
}

/// The `api` thread and what it takes to stop it.
struct ApiThread {
    /// Dropped before the thread is joined: a request waiting for the VMM thread then gets
    /// its 503 instead of waiting forever (and the join with it).
    requests: Option<Receiver<ApiRequest>>,
    notify: EventFd,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    /// Dropped after the thread has stopped, which removes the socket file.
    _socket: ApiSocket,
}

impl ApiThread {
    fn start(config: &ApiSocketConfig, seccomp: SeccompMode) -> Result<Self, VmmError> {
        let filter = ThreadFilter::new(ThreadKind::Api, seccomp)?;
        let socket = ApiSocket::open(config)?;
        let listener = socket.listener.try_clone().map_err(io_err("API socket"))?;
        let notify = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?;
        let (tx, rx) = channel();
        let api_channel = ApiChannel {
            requests: tx,
            notify: notify.try_clone().map_err(io_err("eventfd"))?,
            wake: None,
        };
        let thread = crate::api::server::start(
            listener,
            api_channel,
            stop.try_clone().map_err(io_err("eventfd"))?,
            filter,
        )
        .map_err(io_err("starting the api thread"))?;
        Ok(ApiThread {
            requests: Some(rx),
            notify,
            stop,
            thread: Some(thread),
            _socket: socket,
        })
    }
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        // Requests not yet taken are dropped with their reply channels: each is answered
        // 503, and a later one fails to send, so the thread never waits for this one.
        drop(self.requests.take());
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot stop the api thread: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the api thread panicked");
            }
        }
    }
}

/// The VMM's state: a configuration once created, a VM once booted.
struct Vmm {
    hypervisor: KvmHypervisor,
    events: Arc<VmEventSignal>,
    seccomp: SeccompMode,
    config: Option<VmConfig>,
    vm: Option<Vm>,
    /// Boots of the current configuration so far (reboots included).
    boots: u32,
    /// Why the last VM stopped, when the guest could not go on: `vm.info` reports it until
    /// the VM boots again or is deleted.
    failure: Option<String>,
    /// Ticks every second while a virtio-mem device is on its way to its requested size,
    /// to report stalls.
    resize_watch: TimerFd,
    /// A live migration under way, in or out.
    migration: Option<migration::Migration>,
    /// Written by the migration thread with each message.
    migration_event: EventFd,
    /// What the last migration did (`vm.counters`).
    last_migration: Option<crate::migration::MigrationReport>,
    /// The answer to a migration's Complete was lost: the destination may run the VM. Kept
    /// for `vm.info` until the VM is resumed or ends.
    migration_unknown: Option<String>,
}

impl Vmm {
    /// The running VM's UART when its serial port is the terminal (stdin feeds it).
    fn tty_serial(&self) -> Option<&Arc<std::sync::Mutex<crate::devices::SerialDevice>>> {
        self.vm
            .as_ref()
            .filter(|vm| vm.config().serial.mode == ConsoleMode::Tty)
            .map(Vm::serial)
    }

    fn state_name(&self) -> &'static str {
        match (&self.config, &self.vm) {
            (None, _) => "NotCreated",
            (Some(_), None) if self.failure.is_some() => "Failed",
            (Some(_), None) => "Created",
            (Some(_), Some(vm)) if vm.is_paused() => "Paused",
            (Some(_), Some(_)) => "Running",
        }
    }

    fn create(&mut self, config: VmConfig) -> Result<(), ApiError> {
        if self.config.is_some() {
            return Err(ApiError::conflict(
                "a VM already exists (PUT /api/v1/vm.delete first)",
            ));
        }
        config
            .validate()
            .map_err(|e| ApiError::bad_request(format!("invalid VM configuration: {e}")))?;
        event("vm", "creating");
        self.config = Some(config);
        self.boots = 0;
        event("vm", "created");
        Ok(())
    }

    /// Builds the VM from the configuration and starts it.
    fn boot(&mut self) -> Result<(), VmmError> {
        let config = self
            .config
            .as_ref()
            .ok_or(VmError::State("no VM has been created"))?;
        // An event the previous VM raised as it was being stopped is not this one's.
        let _ = self.events.take();
        self.failure = None;
        let mut vm = Vm::new(
            &self.hypervisor,
            config,
            self.events.clone(),
            serial_output(config, self.boots)?,
            self.seccomp,
        )?;
        vm.boot()?;
        log::info!("VM booted (boot #{})", self.boots);
        self.boots += 1;
        self.vm = Some(vm);
        self.watch_resizes();
        Ok(())
    }

    /// Stops and drops the VM, if one runs; returns whether one did.
    fn stop_vm(&mut self) -> bool {
        match self.vm.take() {
            Some(mut vm) => {
                vm.shutdown();
                true
            }
            None => false,
        }
    }

    /// `stop_vm`, with the `shutdown` event when a VM was running.
    fn shutdown_vm(&mut self) {
        if self.stop_vm() {
            event("vm", "shutdown");
        }
    }

    fn reboot(&mut self) -> Result<(), VmmError> {
        event("vm", "rebooting");
        self.stop_vm();
        self.boot()?;
        event("vm", "rebooted");
        Ok(())
    }

    fn running_vm(&mut self) -> Result<&mut Vm, ApiError> {
        match (&self.config, self.vm.as_mut()) {
            (None, _) => Err(no_vm()),
            (Some(_), None) => Err(ApiError::conflict(
                "the VM is not running (PUT /api/v1/vm.boot first)",
            )),
            (Some(_), Some(vm)) => Ok(vm),
        }
    }

    fn info(&self) -> ApiResult {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| match self.migration_info() {
                Some(m) => ApiError::not_found(format!(
                    "no VM yet: a migration is being received (phase: {}, {} bytes so far)",
                    m["phase"].as_str().unwrap_or(""),
                    m["bytes"]
                )),
                None => no_vm(),
            })?;
        let memory_actual_size = self
            .vm
            .as_ref()
            .map(Vm::memory_actual_size)
            .unwrap_or(config.memory.boot_ram());
        let devices: Vec<serde_json::Value> = self
            .vm
            .as_ref()
            .map(|vm| vm.memory().devices().map(|d| d.info()).collect())
            .unwrap_or_default();
        let mut info = json!({
            "config": config,
            "state": self.state_name(),
            "memory_actual_size": memory_actual_size,
            "memory": {
                "boot_ram": config.memory.boot_ram(),
                "devices": devices,
            },
        });
        if let Some(failure) = &self.failure {
            info["failure"] = json!(failure);
        }
        if let Some(migration) = self.migration_info() {
            info["migration"] = migration;
        }
        if let Some(reason) = &self.migration_unknown {
            info["migration_outcome_unknown"] = json!(reason);
        }
        Ok(Some(info))
    }

    /// The guest could not go on: the VM is stopped and the reason kept for `vm.info`.
    fn guest_failed(&mut self, reason: String) {
        event_with(
            "vm",
            "failed",
            Some(BTreeMap::from([("reason".to_string(), reason.clone())])),
        );
        self.stop_vm();
        self.failure = Some(reason);
    }

    fn counters(&mut self) -> ApiResult {
        let vm = self.running_vm()?;
        let mut out = serde_json::Map::new();
        for (device, counters) in vm.counters() {
            let values: serde_json::Map<_, _> = counters
                .into_iter()
                .map(|(name, value)| (name.to_string(), json!(value)))
                .collect();
            out.insert(device, serde_json::Value::Object(values));
        }
        if let Some(m) = &self.last_migration {
            out.insert(
                "migration".to_string(),
                json!({
                    "bytes": m.bytes,
                    "passes": m.passes,
                    "downtime_ms": m.downtime_ms,
                    "total_ms": m.total_ms,
                }),
            );
        }
        Ok(Some(serde_json::Value::Object(out)))
    }

    /// Acts on one API request. The second value is true when the VMM must exit.
    fn handle(&mut self, action: ApiAction) -> (ApiResult, bool) {
        if !matches!(
            action,
            ApiAction::VmmPing | ApiAction::VmmShutdown | ApiAction::VmInfo | ApiAction::VmCounters
        ) {
            if let Err(e) = self.migration_conflict(action.endpoint()) {
                return (Err(e), false);
            }
        }
        let result = match action {
            ApiAction::VmmPing => Ok(Some(json!({
                "build_version": env!("CARGO_PKG_VERSION"),
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "features": [],
            }))),
            ApiAction::VmmShutdown => {
                self.abandon_migration();
                self.shutdown_vm();
                return (Ok(None), true);
            }
            ApiAction::VmCreate(config) => self.create(*config).map(|()| None),
            ApiAction::VmBoot => self.api_boot(),
            ApiAction::VmDelete => {
                if self.config.is_some() {
                    self.shutdown_vm();
                    self.config = None;
                    self.failure = None;
                    event("vm", "deleted");
                }
                Ok(None)
            }
            ApiAction::VmInfo => self.info(),
            ApiAction::VmCounters => self.counters(),
            ApiAction::VmPause => self.running_vm().and_then(|vm| {
                event("vm", "pausing");
                vm.pause().map_err(vm_api_error)?;
                event("vm", "paused");
                Ok(None)
            }),
            ApiAction::VmResume => self
                .running_vm()
                .and_then(|vm| {
                    event("vm", "resuming");
                    vm.resume().map_err(vm_api_error)?;
                    event("vm", "resumed");
                    Ok(())
                })
                .map(|()| {
                    // The operator decided: this copy is the one that runs.
                    self.migration_unknown = None;
                    None
                }),
            ApiAction::VmShutdown => match self.running_vm() {
                Ok(_) => {
                    self.shutdown_vm();
                    Ok(None)
                }
                Err(e) => Err(e),
            },
            ApiAction::VmReboot => match self.running_vm() {
                Ok(_) => self.reboot().map(|()| None).map_err(vmm_api_error),
                Err(e) => Err(e),
            },
            ApiAction::VmResize(body) => self.resize(&body),
            ApiAction::VmResizeZone(body) => self.resize_zone(&body.id, body.desired_ram),
            ApiAction::VmSnapshot(body) => self.snapshot(&body.destination_url),
            ApiAction::VmRestore(body) => self.restore(&body),
            ApiAction::VmSendMigration(body) => self.send_migration(&body),
            // Answered by the control loop, which keeps the reply for the end.
            ApiAction::VmReceiveMigration(_) => Err(ApiError::internal(
                "vm.receive-migration reached the wrong handler",
            )),
            ApiAction::VmPowerButton => self
                .running_vm()
                .and_then(|vm| vm.power_button().map_err(vm_api_error))
                .map(|()| None),
        };
        (result, false)
    }

    /// `vm.snapshot`: the paused VM into a new directory; it stays paused.
    fn snapshot(&mut self, url: &str) -> ApiResult {
        let dir = crate::snapshot::url::directory(url, "destination_url")
            .map_err(|e| ApiError::bad_request(format!("vm.snapshot: {e}")))?;
        let vm = self.running_vm()?;
        if !vm.is_paused() {
            return Err(ApiError::conflict(
                "vm.snapshot needs a paused VM (PUT /api/v1/vm.pause first)",
            ));
        }
        event_with(
            "vm",
            "snapshotting",
            Some(BTreeMap::from([(
                "destination_url".to_string(),
                url.to_string(),
            )])),
        );
        let started = Instant::now();
        match vm.snapshot(&dir) {
            Ok(report) => {
                event_with(
                    "vm",
                    "snapshotted",
                    Some(report_props(url, &report, started)),
                );
                Ok(None)
            }
            Err(e) => Err(snapshot_failed("vm.snapshot", "snapshot-failed", &e)),
        }
    }

    /// `vm.restore` (and `--restore`): builds the VM a snapshot holds, on a VMM without
    /// one; it runs at once with `resume`, or waits paused for `vm.resume`.
    fn restore(&mut self, config: &crate::snapshot::request::RestoreConfig) -> ApiResult {
        if self.config.is_some() {
            return Err(ApiError::conflict(
                "vm.restore needs a VMM without a VM (PUT /api/v1/vm.delete first)",
            ));
        }
        let dir = crate::snapshot::url::directory(&config.source_url, "source_url")
            .map_err(|e| ApiError::bad_request(format!("vm.restore: {e}")))?;
        event_with(
            "vm",
            "restoring",
            Some(BTreeMap::from([(
                "source_url".to_string(),
                config.source_url.clone(),
            )])),
        );
        let started = Instant::now();
        // An event a previous VM raised as it was being stopped is not this one's.
        let _ = self.events.take();
        self.failure = None;
        let restored = Vm::restore(
            &self.hypervisor,
            &dir,
            self.events.clone(),
            // The serial log goes on where the snapshotted VM left it.
            |c| serial_output(c, 1).map_err(|e| e.to_string()),
            self.seccomp,
            config.options(),
        );
        match restored {
            Ok((vm, report)) => {
                self.config = Some(vm.config().clone());
                self.boots = 1;
                self.vm = Some(vm);
                self.watch_resizes();
                let props = report_props(&config.source_url, &report, started);
                event_with("vm", "restored", Some(props));
                Ok(None)
            }
            Err(e) => Err(snapshot_failed("vm.restore", "restore-failed", &e)),
        }
    }

    /// `vm.resize`: the only zone's device.
    fn resize(&mut self, body: &VmResize) -> ApiResult {
        let vm = self.running_vm()?;
        let ids = vm.memory().zones().iter().map(|z| z.layout.id.as_str());
        let (id, desired) = resize_target(ids, body)?;
        self.resize_zone(id, desired)
    }

    /// Hands `desired` bytes of RAM for zone `id` to its device; never waits for the guest
    /// or the device thread.
    fn resize_zone(&mut self, id: &str, desired: u64) -> ApiResult {
        let requested = self.running_vm()?.memory().resize_zone(id, desired)?;
        // The configuration follows, as in Cloud Hypervisor: vm.info shows it, and a reboot
        // asks the new guest for the same size again.
        if let Some(config) = self.config.as_mut() {
            config.memory.set_hotplugged_size(id, requested);
        }
        self.watch_resizes();
        Ok(None)
    }

    /// Starts the once-a-second check for stalled resizes.
    fn watch_resizes(&mut self) {
        let second = std::time::Duration::from_secs(1);
        if let Err(e) = self.resize_watch.reset(second, Some(second)) {
            log::warn!("cannot watch resizes for stalls: {e}");
        }
    }

    /// One tick of the stall check; stops ticking when every device has settled.
    fn resize_watch_tick(&mut self) {
        let _ = self.resize_watch.wait();
        let unsettled = self.vm.as_ref().is_some_and(Vm::watch_resizes);
        if !unsettled {
            if let Err(e) = self.resize_watch.clear() {
                log::warn!("cannot stop the resize watch: {e}");
            }
        }
    }

    fn api_boot(&mut self) -> ApiResult {
        if self.config.is_none() {
            return Err(no_vm());
        }
        if self.vm.is_some() {
            return Err(ApiError::conflict("the VM is already booted"));
        }
        event("vm", "booting");
        self.boot().map_err(vmm_api_error)?;
        event("vm", "booted");
        Ok(None)
    }
}

/// A snapshot's or restore's report as event properties: where, the bytes of memory
/// written or read, the files' sizes and the time taken.
fn report_props(
    url: &str,
    report: &crate::vm::SnapshotReport,
    started: Instant,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("url".to_string(), url.to_string()),
        ("memory_bytes".to_string(), report.memory_bytes.to_string()),
        (
            "memory_file_len".to_string(),
            report.memory_file_len.to_string(),
        ),
        ("state_bytes".to_string(), report.state_bytes.to_string()),
        (
            "duration_ms".to_string(),
            started.elapsed().as_millis().to_string(),
        ),
    ])
}

/// A failed snapshot or restore: logged, sent as the `event` with its reason, and the
/// API's answer (see [`snapshot_api_error`]).
fn snapshot_failed(action: &str, event: &str, e: &crate::snapshot::SnapshotError) -> ApiError {
    let reason = format!("{action}: {e}");
    log::error!("{reason}");
    event_with(
        "vm",
        event,
        Some(BTreeMap::from([("reason".to_string(), reason.clone())])),
    );
    snapshot_api_error(e, reason)
}

/// 409 when the VM is not in a state for it, 500 when the VMM failed, 400 for what the
/// request named (a directory that exists or cannot be written, a snapshot that cannot be
/// read or does not fit).
fn snapshot_api_error(e: &crate::snapshot::SnapshotError, message: String) -> ApiError {
    use crate::snapshot::SnapshotError;
    match e {
        SnapshotError::NotPaused => ApiError::conflict(message),
        SnapshotError::Vm(_) => ApiError::internal(message),
        _ => ApiError::bad_request(message),
    }
}

/// 404, as Cloud Hypervisor's API documents for every VM action before `vm.create`.
fn no_vm() -> ApiError {
    ApiError::not_found("no VM has been created (PUT /api/v1/vm.create first)")
}

fn vm_api_error(e: VmError) -> ApiError {
    match e {
        VmError::State(_) => ApiError::conflict(e.to_string()),
        // The payload or the memory size did not work out: the client's configuration.
        VmError::Arch(_) | VmError::Memory(_) => ApiError::bad_request(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

fn vmm_api_error(e: VmmError) -> ApiError {
    match e {
        VmmError::Vm(e) => vm_api_error(e),
        VmmError::Config(e) => ApiError::bad_request(e.to_string()),
        e => ApiError::internal(e.to_string()),
    }
}

struct EpollFd(OwnedFd);

impl EpollFd {
    fn new() -> Result<Self, VmmError> {
        let fd = epoll::create(true).map_err(io_err("epoll"))?;
        // SAFETY: epoll_create1 returned a new descriptor that nothing else owns.
        Ok(EpollFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: i32, token: u64) -> Result<(), VmmError> {
        epoll::ctl(
            self.0.as_raw_fd(),
            epoll::ControlOptions::EPOLL_CTL_ADD,
            fd,
            epoll::Event::new(epoll::Events::EPOLLIN, token),
        )
        .map_err(io_err("epoll"))
    }
}

/// Runs the VMM until the guest powers off or fails, or `vmm.shutdown`.
pub fn run(options: VmmOptions) -> Result<ExitStatus, VmmError> {
    if let Some(config) = &options.vm {
        config.validate()?;
    }
    let seccomp = options.seccomp;
    // Before any thread exists: SIGTERM and SIGINT go to the signal_handler thread alone.
    crate::signal_handler::block_exit_signals().map_err(io_err("blocking SIGTERM and SIGINT"))?;
    // Before any thread: glibc's per-thread heaps would open a file once they shrink.
    if seccomp != SeccompMode::Off {
        crate::seccomp::tune_malloc_for_filters()?;
    }
    // Before any filter: a refused call must find the handler that reports it.
    if seccomp == SeccompMode::Trap {
        crate::seccomp::install_sigsys_handler()?;
    }
    // Bind the socket first, while this is the only thread (see `ApiSocket`).
    let api = options
        .api_socket
        .as_ref()
        .map(|config| ApiThread::start(config, seccomp))
        .transpose()?;
    let exit_signal =
        crate::signal_handler::start(ThreadFilter::new(ThreadKind::SignalHandler, seccomp)?)
            .map_err(io_err("starting the signal handler thread"))?;
    let monitor_filter = ThreadFilter::new(ThreadKind::EventMonitor, seccomp)?;
    let monitor = options
        .event_monitor
        .map(|file| crate::event_monitor::start(file, monitor_filter))
        .transpose()
        .map_err(io_err("starting the event monitor"))?;
    event("vmm", "starting");
    install_kick_handler().map_err(io_err("installing the vCPU kick signal handler"))?;
    // This thread's own filter, before it boots a guest or takes an API request.
    ThreadFilter::new(ThreadKind::Vmm, seccomp)?.apply_to_current()?;
    let hypervisor = KvmHypervisor::new()?;
    let events = Arc::new(VmEventSignal::new().map_err(io_err("eventfd"))?);
    let mut vmm = Vmm {
        hypervisor,
        events,
        seccomp,
        config: None,
        vm: None,
        boots: 0,
        failure: None,
        resize_watch: TimerFd::new()
            .map_err(|e| io_err("timerfd")(std::io::Error::from_raw_os_error(e.errno())))?,
        migration: None,
        migration_event: EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("eventfd"))?,
        last_migration: None,
        migration_unknown: None,
    };
    // Stdin feeds the guest whenever a VM's serial port is the terminal; the terminal goes
    // raw only for a VM given on the command line (an API-only VMM keeps Ctrl-C working).
    let forward_stdin = options
        .vm
        .as_ref()
        .is_none_or(|c| c.serial.mode == ConsoleMode::Tty);
    if options.vm.is_some() && options.restore.is_some() {
        return Err(VmmError::Restore(
            "a VM from the command line (--kernel) and --restore exclude each other".into(),
        ));
    }
    let raw_terminal = options
        .vm
        .as_ref()
        .is_some_and(|c| c.serial.mode == ConsoleMode::Tty);
    if let Some(config) = options.vm {
        // Errors before the guest runs go to the caller as they are.
        let _ = vmm.create(config);
        event("vm", "booting");
        vmm.boot()?;
        event("vm", "booted");
    } else if let Some(restore) = &options.restore {
        vmm.restore(restore)
            .map_err(|e| VmmError::Restore(e.message))?;
    }
    let _raw = raw_terminal.then(RawStdin::enable).flatten();
    let status = control_loop(&mut vmm, api.as_ref(), &exit_signal, forward_stdin);
    vmm.abandon_migration();
    vmm.shutdown_vm();
    drop(api);
    event("vmm", "shutdown");
    if let Some(monitor) = monitor {
        monitor.finish();
    }
    status
}

fn control_loop(
    vmm: &mut Vmm,
    api: Option<&ApiThread>,
    exit_signal: &ExitSignal,
    forward_stdin: bool,
) -> Result<ExitStatus, VmmError> {
    let epoll = EpollFd::new()?;
    epoll.add(vmm.events.eventfd().as_raw_fd(), TOKEN_VM_EVENT)?;
    epoll.add(exit_signal.event.as_raw_fd(), TOKEN_SIGNAL)?;
    epoll.add(
        vmm.events.device_work_event().as_raw_fd(),
        TOKEN_DEVICE_WORK,
    )?;
    epoll.add(vmm.resize_watch.as_raw_fd(), TOKEN_RESIZE_WATCH)?;
    epoll.add(vmm.migration_event.as_raw_fd(), TOKEN_MIGRATION)?;
    if let Some(api) = api {
        epoll.add(api.notify.as_raw_fd(), TOKEN_API)?;
    }
    let mut stdin = StdinForwarder::new(epoll.0.as_raw_fd(), TOKEN_STDIN, forward_stdin);
    let mut ready = [epoll::Event::new(epoll::Events::empty(), 0); EPOLL_EVENTS];
    loop {
        let timeout = stdin.prepare(vmm.tty_serial());
        let n = match epoll::wait(epoll.0.as_raw_fd(), timeout, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("epoll")(e)),
        };
        for ev in &ready[..n] {
            match ev.data {
                TOKEN_VM_EVENT => match vmm.events.take() {
                    Some(VmEvent::PowerOff) => return Ok(ExitStatus::PowerOff),
                    // With an API, the VMM stays up for its clients to see what happened
                    // (vm.info's state and reason); without one, the process ends with it.
                    Some(VmEvent::GuestFailure(reason)) => match api {
                        Some(_) => vmm.guest_failed(reason),
                        None => {
                            vmm.guest_failed(reason.clone());
                            return Ok(ExitStatus::GuestFailure(reason));
                        }
                    },
                    Some(VmEvent::Reset) => {
                        log::info!("guest reset: booting again");
                        vmm.reboot()?;
                    }
                    None => {}
                },
                TOKEN_RESIZE_WATCH => vmm.resize_watch_tick(),
                TOKEN_MIGRATION if vmm.migration_work() => return Ok(ExitStatus::Migrated),
                TOKEN_DEVICE_WORK => {
                    let _ = vmm.events.device_work_event().read();
                    if let Some(vm) = vmm.vm.as_ref() {
                        vm.service_device_work();
                    }
                }
                TOKEN_API => {
                    let Some(api) = api else { continue };
                    let _ = api.notify.read();
                    while let Some(Ok(request)) = api.requests.as_ref().map(Receiver::try_recv) {
                        if let ApiAction::VmReceiveMigration(body) = &request.action {
                            if let Some((reply, result)) =
                                vmm.receive_migration(body, request.reply)
                            {
                                reply.send(result);
                            }
                            continue;
                        }
                        let (result, exit) = vmm.handle(request.action);
                        // The client may have gone; the action stands either way.
                        request.reply.send(result);
                        if exit {
                            return Ok(ExitStatus::VmmShutdown);
                        }
                    }
                }
                // Looked up again: an event earlier in this batch may have replaced the VM.
                TOKEN_STDIN => stdin.forward(vmm.tty_serial()),
                TOKEN_SIGNAL => {
                    if let Some(signal) = exit_signal.received() {
                        return Ok(ExitStatus::Signal(signal));
                    }
                }
                _ => {}
            }
        }
    }
}
