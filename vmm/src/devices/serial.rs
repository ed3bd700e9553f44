//! The 16550A UART on COM1 (vm-superio), its interrupt delivered through an irqfd.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::devices::serial_output::OutputQueue;
use crate::seccomp::ThreadFilter;

/// Raises the UART's interrupt by writing its irqfd.
pub struct IrqfdTrigger(pub EventFd);

impl Trigger for IrqfdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where the guest's serial output goes.
pub enum SerialOutput {
    /// The VMM's standard output, written unbuffered so prompts show at once.
    Stdout,
    /// A log file, opened for appending (created if need be, and emptied with
    /// `start_afresh`) only when the guest is about to run ([`SerialDevice::start_output`]):
    /// a boot that fails before that neither creates nor touches it.
    File {
        path: PathBuf,
        start_afresh: bool,
    },
    Off,
}

/// The serial log file once [`SerialDevice::start_output`] has opened it; output before
/// that (there is none: the guest has not run) would be dropped.
struct LogFile(Arc<OnceLock<File>>);

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.get() {
            Some(mut file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.0.get() {
            Some(mut file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl SerialOutput {
    fn into_writer(self, log: &Arc<OnceLock<File>>) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            SerialOutput::Stdout => {
                // SAFETY: dup() returns a new descriptor that nothing else owns, or -1.
                let fd = unsafe { libc::dup(libc::STDOUT_FILENO) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `fd` is a fresh, valid descriptor owned from here on.
                Box::new(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
            }
            SerialOutput::File { .. } => Box::new(LogFile(log.clone())),
            SerialOutput::Off => Box::new(io::sink()),
        })
    }
}

/// Byte counts of the serial port, for `vm.counters`.
#[derive(Default)]
pub struct SerialCounters {
    /// Bytes the guest transmitted.
    pub tx_bytes: AtomicU64,
    /// Bytes of host input the guest was given.
    pub rx_bytes: AtomicU64,
}

/// Counts what passes through to the output.
struct CountingWriter {
    inner: Box<dyn Write + Send>,
    counters: Arc<SerialCounters>,
}

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.counters
            .tx_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// COM1 on the port I/O bus.
pub struct SerialDevice {
    uart: Serial<IrqfdTrigger, vm_superio::serial::NoEvents, CountingWriter>,
    counters: Arc<SerialCounters>,
    /// The log file to open before the guest runs, and whether to empty it.
    pending_log: Option<(PathBuf, bool)>,
    log: Arc<OnceLock<File>>,
    /// The output on its way (none when it is off).
    output: Option<Arc<OutputQueue>>,
}

impl SerialDevice {
    /// A UART whose output is written by a `serial-output` thread under `filter`.
    pub fn new(irqfd: EventFd, output: SerialOutput, filter: ThreadFilter) -> io::Result<Self> {
        let pending_log = match &output {
            SerialOutput::File { path, start_afresh } => Some((path.clone(), *start_afresh)),
            _ => None,
        };
        let log = Arc::new(OnceLock::new());
        let counters = Arc::new(SerialCounters::default());
        let (inner, output): (Box<dyn Write + Send>, _) = match output {
            SerialOutput::Off => (Box::new(io::sink()), None),
            to_somewhere => {
                let queue = OutputQueue::start(to_somewhere.into_writer(&log)?, filter)?;
                (Box::new(queue.writer()), Some(Arc::new(queue)))
            }
        };
        let writer = CountingWriter {
            inner,
            counters: counters.clone(),
        };
        let uart = Serial::new(IrqfdTrigger(irqfd), writer);
        Ok(SerialDevice {
            uart,
            counters,
            pending_log,
            log,
            output,
        })
    }

    /// Called once everything else for the boot has worked, before the vCPUs start:
    /// opens the log file, emptied when it starts afresh. An error names the file.
    pub fn start_output(&mut self) -> io::Result<()> {
        let Some((path, start_afresh)) = self.pending_log.take() else {
            return Ok(());
        };
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(named)?;
        if start_afresh {
            file.set_len(0).map_err(named)?;
        }
        // Set once: `pending_log` was taken above.
        let _ = self.log.set(file);
        Ok(())
    }

    /// Takes the registers and receive FIFO of `state` (a snapshot's or a migration's);
    /// the interrupt and the output stay.
    pub fn set_state(&mut self, state: &vm_superio::serial::SerialState) -> io::Result<()> {
        let trigger = IrqfdTrigger(self.uart.interrupt_evt().0.try_clone()?);
        let inner: Box<dyn Write + Send> = match &self.output {
            Some(queue) => Box::new(queue.writer()),
            None => Box::new(io::sink()),
        };
        let writer = CountingWriter {
            inner,
            counters: self.counters.clone(),
        };
        self.uart = Serial::from_state(state, trigger, vm_superio::serial::NoEvents, writer)
            .map_err(|e| io::Error::other(format!("the saved UART state: {e:?}")))?;
        Ok(())
    }

    /// Raises the interrupt again if the restored registers say one is pending (IIR bit 0
    /// clear), for after the in-kernel irqchip's state is restored: vm-superio raises it
    /// when it takes the state, but restoring the irqchip afterwards overwrites that edge,
    /// and the guest's 8250 driver then waits for a transmit-empty interrupt that never
    /// comes, until its own timer gives up (a console silent for a few hundred
    /// milliseconds after a migration or restore).
    pub fn raise_pending_interrupt(&self) -> io::Result<()> {
        if self.uart.state().interrupt_identification & 1 == 0 {
            self.uart.interrupt_evt().trigger()?;
        }
        Ok(())
    }

    /// The registers and receive FIFO, to save.
    pub fn state(&self) -> vm_superio::serial::SerialState {
        self.uart.state()
    }

    /// The output queue the control loop flushes; none when the output is off.
    pub fn output(&self) -> Option<Arc<OutputQueue>> {
        self.output.clone()
    }

    /// The port's byte counts; readable without the device lock.
    pub fn counters(&self) -> Arc<SerialCounters> {
        self.counters.clone()
    }

    /// Feeds host input to the guest; returns how many bytes the FIFO took.
    pub fn queue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => {
                self.counters
                    .rx_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                n
            }
            Err(e) => {
                log::warn!("serial input dropped: {e:?}");
                0
            }
        }
    }

    /// Free room in the receive FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            if let Err(e) = self.uart.write(offset as u8, value) {
                log::warn!("serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{SeccompMode, ThreadKind};

    fn device(irq: &EventFd) -> SerialDevice {
        let filter = ThreadFilter::new(ThreadKind::SerialOutput, SeccompMode::Off).unwrap();
        SerialDevice::new(irq.try_clone().unwrap(), SerialOutput::Off, filter).unwrap()
    }

    #[test]
    fn a_restored_pending_interrupt_is_raised_again() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut serial = device(&irq);
        // Nothing pending: no interrupt.
        serial.raise_pending_interrupt().unwrap();
        assert!(irq.read().is_err());
        // A transmit-empty interrupt pending when the state was saved.
        let pending = vm_superio::serial::SerialState {
            interrupt_enable: 0x02,
            interrupt_identification: 0x02,
            ..Default::default()
        };
        serial.set_state(&pending).unwrap();
        // vm-superio raised it on taking the state; the irqchip restore may lose that one.
        assert_eq!(irq.read().unwrap(), 1);
        serial.raise_pending_interrupt().unwrap();
        assert_eq!(irq.read().unwrap(), 1);
    }
}
