//! vCPU threads: each runs `KVM_RUN` and dispatches port and MMIO exits to the buses on its
//! own thread. Exits the guest cannot recover from are reported with the registers and the
//! instruction bytes at RIP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hypervisor::{Vcpu, VmExit};
use virtio_devices::view::GuestMemoryView;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::bus::Buses;
use crate::seccomp::ThreadFilter;
use crate::vcpu_exits::{ExitCounters, ExitKind};
use crate::vm_event::{VmEvent, VmEventSignal};

/// Signal used to knock a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: interrupting KVM_RUN is the point.
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// What a vCPU thread needs besides its vCPU.
#[derive(Clone)]
pub struct VcpuContext {
    pub buses: Arc<Buses>,
    pub events: Arc<VmEventSignal>,
    pub memory: Arc<GuestMemoryView>,
    pub stop: Arc<AtomicBool>,
    pub pause: Arc<PauseGate>,
    pub exits: Arc<ExitCounters>,
    /// Applied by each vCPU thread before its first `KVM_RUN`.
    pub seccomp: ThreadFilter,
}

/// Holds vCPU threads outside `KVM_RUN` while the VM is paused.
#[derive(Default)]
pub struct PauseGate {
    /// Checked by each vCPU thread before every `KVM_RUN`.
    requested: AtomicBool,
    /// How many vCPU threads are parked at the gate.
    parked: Mutex<usize>,
    changed: Condvar,
}

impl PauseGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a pause is asked for.
    fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Called by a vCPU thread whose vCPU has finished every exit: parks it while a pause
    /// is requested, unless the VM is stopping.
    fn park(&self, stop: &AtomicBool) {
        let mut parked = self.lock();
        *parked += 1;
        self.changed.notify_all();
        while self.requested.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            parked = self.changed.wait(parked).unwrap_or_else(|e| e.into_inner());
        }
        *parked -= 1;
        self.changed.notify_all();
    }

    fn parked(&self) -> usize {
        *self.lock()
    }

    /// Lets parked threads go (also used when stopping).
    fn release(&self) {
        let _guard = self.lock();
        self.requested.store(false, Ordering::SeqCst);
        self.changed.notify_all();
    }
}

/// How long pausing waits for every vCPU to leave `KVM_RUN`.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A vCPU as its thread and the VMM share it: the thread holds the lock around each
/// `KVM_RUN` and its exit, the VMM only while every thread is parked (to take or give state).
pub type SharedVcpu = Arc<Mutex<Box<dyn Vcpu>>>;

/// The running vCPU threads of one VM.
pub struct VcpuManager {
    threads: Vec<JoinHandle<()>>,
    vcpus: Vec<SharedVcpu>,
    stop: Arc<AtomicBool>,
    pause: Arc<PauseGate>,
}

impl VcpuManager {
    /// Starts one thread per vCPU; they run until `stop`. With `paused` they park before
    /// their first `KVM_RUN` (a restored VM that is not to resume yet).
    pub fn start(
        vcpus: Vec<Box<dyn Vcpu>>,
        ctx: VcpuContext,
        paused: bool,
    ) -> std::io::Result<Self> {
        let stop = ctx.stop.clone();
        let pause = ctx.pause.clone();
        pause.requested.store(paused, Ordering::SeqCst);
        let vcpus: Vec<SharedVcpu> = vcpus.into_iter().map(|v| Arc::new(Mutex::new(v))).collect();
        let mut manager = VcpuManager {
            threads: Vec::with_capacity(vcpus.len()),
            vcpus: vcpus.clone(),
            stop,
            pause,
        };
        for (id, vcpu) in vcpus.into_iter().enumerate() {
            let ctx = ctx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || run_vcpu(id, vcpu, ctx));
            match handle {
                Ok(h) => manager.threads.push(h),
                Err(e) => {
                    manager.stop();
                    return Err(e);
                }
            }
        }
        if paused {
            manager.pause().map_err(std::io::Error::other)?;
        }
        Ok(manager)
    }

    /// Every vCPU's time stamp counter, in id order (paused).
    pub fn tscs(&self) -> Result<Vec<u64>, String> {
        self.each_parked(|vcpu| vcpu.msr(arch::msrs::MSR_IA32_TSC), "reading its TSC")
    }

    /// Every vCPU's state, in id order. Only while paused: each thread finished its last
    /// exit before it parked ([`Vcpu::complete_pending_exit`]).
    pub fn states(&self) -> Result<Vec<hypervisor::VcpuState>, String> {
        self.each_parked(|vcpu| vcpu.state(), "taking its state")
    }

    /// `read` of every (parked) vCPU, in id order; an error names the vCPU and `what`.
    fn each_parked<T>(
        &self,
        read: impl Fn(&dyn Vcpu) -> hypervisor::Result<T>,
        what: &str,
    ) -> Result<Vec<T>, String> {
        self.vcpus
            .iter()
            .enumerate()
            .map(|(id, vcpu)| {
                read(&**vcpu.lock().unwrap_or_else(|e| e.into_inner()))
                    .map_err(|e| format!("vcpu{id}: {what}: {e}"))
            })
            .collect()
    }

    /// Takes every vCPU out of `KVM_RUN` and holds it there; returns once all are parked.
    pub fn pause(&self) -> Result<(), String> {
        self.pause.requested.store(true, Ordering::SeqCst);
        let started = Instant::now();
        loop {
            let running: Vec<_> = self.threads.iter().filter(|h| !h.is_finished()).collect();
            if self.pause.parked() >= running.len() {
                return Ok(());
            }
            // A kick can land just before a thread enters KVM_RUN and be lost; repeat it.
            for handle in &running {
                if let Err(e) = handle.kill(kick_signal()) {
                    log::debug!("kicking a vCPU thread: {e}");
                }
            }
            if started.elapsed() > PAUSE_TIMEOUT {
                self.pause.release();
                return Err(format!(
                    "the vCPUs did not stop within {} s",
                    PAUSE_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        self.pause.release();
    }

    /// Stops every vCPU thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pause.release();
        for handle in self.threads.drain(..) {
            // A kick can land just before the thread enters KVM_RUN and be lost; repeat it
            // until the thread is gone.
            let started = Instant::now();
            while !handle.is_finished() {
                if let Err(e) = handle.kill(kick_signal()) {
                    log::debug!("kicking a vCPU thread: {e}");
                }
                std::thread::sleep(Duration::from_millis(1));
                if started.elapsed() > Duration::from_secs(10) {
                    log::error!("a vCPU thread did not stop within 10 s");
                    break;
                }
            }
            if handle.is_finished() && handle.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
    }
}

impl Drop for VcpuManager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Outcome of one exit, decided while the exit still borrows the vCPU.
enum Step {
    Continue,
    Fail(String),
}

fn run_vcpu(id: usize, shared: SharedVcpu, ctx: VcpuContext) {
    if let Err(e) = ctx.seccomp.apply_to_current() {
        let message = format!("vcpu{id} cannot start: {e}");
        log::error!("{message}");
        ctx.events.raise(VmEvent::GuestFailure(message));
        return;
    }
    loop {
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        // Before parking, the last exit is finished: KVM completes an I/O or MMIO
        // instruction only at the next KVM_RUN (on AMD), and a vCPU's state taken before that
        // would make a restored guest repeat it. With immediate exit, KVM_RUN completes it
        // without running the guest, and answers EINTR; or, for a string instruction, hands
        // over its next part, which is dispatched as any exit before trying again.
        let finishing = ctx.pause.requested();
        let mut vcpu = shared.lock().unwrap_or_else(|e| e.into_inner());
        vcpu.set_immediate_exit(finishing);
        let exit = vcpu.run();
        let exited = Instant::now();
        let step = match exit {
            Ok(VmExit::Interrupted) if finishing => {
                vcpu.set_immediate_exit(false);
                drop(vcpu);
                ctx.exits.add(ExitKind::Interrupted, exited);
                ctx.pause.park(&ctx.stop);
                continue;
            }
            Ok(VmExit::IoIn(port, data)) => {
                if !ctx.buses.pio.read(u64::from(port), data) {
                    log::trace!("unhandled port read {port:#x} ({} bytes)", data.len());
                    data.fill(0xff);
                }
                ctx.exits.add(ExitKind::IoIn, exited);
                Step::Continue
            }
            Ok(VmExit::IoOut(port, data)) => {
                if !ctx.buses.pio.write(u64::from(port), data) {
                    log::trace!("unhandled port write {port:#x} {data:02x?}");
                }
                ctx.exits.add(ExitKind::IoOut, exited);
                Step::Continue
            }
            Ok(VmExit::MmioRead(addr, data)) => {
                if !ctx.buses.mmio.read(addr, data) {
                    data.fill(0xff);
                }
                ctx.exits.add(ExitKind::MmioRead, exited);
                Step::Continue
            }
            Ok(VmExit::MmioWrite(addr, data)) => {
                ctx.buses.mmio.write(addr, data);
                ctx.exits.add(ExitKind::MmioWrite, exited);
                Step::Continue
            }
            Ok(VmExit::Interrupted) => {
                ctx.exits.add(ExitKind::Interrupted, exited);
                Step::Continue
            }
            Ok(VmExit::Hlt) => {
                ctx.exits.add(ExitKind::Hlt, exited);
                Step::Continue
            }
            Ok(VmExit::Shutdown) => Step::Fail("triple fault (KVM_EXIT_SHUTDOWN)".into()),
            Ok(VmExit::InternalError { suberror }) => Step::Fail(format!(
                "KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror {suberror}{})",
                if suberror == 1 {
                    ": emulation failure"
                } else {
                    ""
                }
            )),
            Ok(VmExit::FailEntry { reason }) => Step::Fail(format!(
                "VM entry failed (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x})"
            )),
            Ok(VmExit::Unexpected(what)) => Step::Fail(format!("unexpected exit {what}")),
            Ok(VmExit::MemoryFault { gpa }) => Step::Fail(format!(
                "the guest touched memory the host cannot give it ({}): unplugged \
                 virtio-mem memory inside a mapped slot, which the guest must not access",
                match gpa {
                    Some((gpa, size)) => format!("{size} bytes at {gpa:#x}"),
                    None => "KVM_RUN: EFAULT, no address".into(),
                }
            )),
            Err(e) => Step::Fail(format!("KVM_RUN failed: {e}")),
        };
        if let Step::Fail(reason) = step {
            let message = format!(
                "guest stopped on vcpu{id}: {reason}; {}",
                describe_cpu(&**vcpu, &ctx.memory.load())
            );
            log::error!("{message}");
            ctx.events.raise(VmEvent::GuestFailure(message));
            return;
        }
    }
}

/// RIP and CS base of an x86 CPU after RESET or INIT.
const RESET_RIP: u64 = 0xfff0;
const RESET_CS_BASE: u64 = 0xffff_0000;

/// RIP, the mode, and up to 16 instruction bytes at RIP, for the log.
fn describe_cpu(vcpu: &dyn Vcpu, memory: &vm_memory::GuestMemoryMmap) -> String {
    let (regs, sregs) = match (vcpu.regs(), vcpu.sregs()) {
        (Ok(r), Ok(s)) => (r, s),
        _ => return "registers unavailable".into(),
    };
    // KVM on AMD SVM re-initialises a vCPU when it intercepts a shutdown (triple fault), so
    // what we read back is the architectural reset state, not where the guest died.
    if regs.rip == RESET_RIP && sregs.cs.base == RESET_CS_BASE {
        return format!(
            "RIP unavailable: the vCPU is in its reset state (RIP={RESET_RIP:#x}, CS base \
             {RESET_CS_BASE:#x}); KVM on AMD resets a vCPU on shutdown, so the faulting RIP is lost"
        );
    }
    let linear = sregs.cs.base.wrapping_add(regs.rip);
    let bytes = match vcpu.translate(linear) {
        Ok(Some(gpa)) => {
            let mut buf = [0u8; 16];
            let n = (0..buf.len())
                .take_while(|&i| {
                    memory
                        .read_slice(&mut buf[i..=i], GuestAddress(gpa + i as u64))
                        .is_ok()
                })
                .count();
            if n == 0 {
                format!("not in guest RAM (GPA {gpa:#x})")
            } else {
                buf[..n]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
        Ok(None) => "RIP is not mapped".into(),
        Err(e) => format!("cannot translate RIP: {e}"),
    };
    format!(
        "RIP={:#x} RSP={:#x} RFLAGS={:#x} CR0={:#x} CR3={:#x} CR4={:#x} EFER={:#x}; instruction bytes at RIP: {bytes}",
        regs.rip, regs.rsp, regs.rflags, sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer
    )
}
