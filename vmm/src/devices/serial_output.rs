//! The serial port's output, written by its own `serial-output` thread rather than by the
//! vCPU that sent it.
//!
//! A guest's 8250 driver sends one byte per port write, and a `write(2)` per byte on the
//! vCPU thread held the guest for as long as the output took: a terminal, a pipe whose
//! reader must be woken, a log file on a network file system. In the nested test host a
//! +2 GiB grow spent 0.58 s of vCPU time writing 465 bytes of the guest's messages.
//! Now the vCPU only appends to a buffer and, for the first byte after the buffer was
//! emptied, wakes the thread; the thread lets the burst gather for [`FLUSH_DELAY`] and
//! writes it in one `write(2)`. The control loop never writes guest output, so a
//! destination that blocks (a paused terminal, a pipe nobody reads) cannot stall the API.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::seccomp::ThreadFilter;

/// How long the thread lets bytes gather before it writes them: short enough that a prompt
/// shows at once to a person, long enough that a line goes out in one write.
pub const FLUSH_DELAY: Duration = Duration::from_millis(2);

/// Past this many waiting bytes (the output is slower than the guest), the vCPU writes them
/// itself, as it did before: the guest waits for its output rather than lose it.
const MAX_PENDING: usize = 64 << 10;

/// How long stopping waits for a thread stuck in a write (a destination that blocks).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    stop: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Bytes came into an empty buffer, or the thread must stop.
    changed: Condvar,
    /// Taken by whoever writes, for the whole write, so bytes leave in the order they came.
    out: Mutex<Box<dyn Write + Send>>,
    /// The thread could not start its filter: the sender writes, as before.
    direct: AtomicBool,
    /// Whether a write error was logged already (one line, not one per byte).
    failed: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let (was_empty, full) = {
            let mut pending = self.pending();
            let was_empty = pending.bytes.is_empty();
            pending.bytes.extend_from_slice(bytes);
            (was_empty, pending.bytes.len() >= MAX_PENDING)
        };
        if full || self.direct.load(Ordering::Relaxed) {
            self.flush();
        } else if was_empty {
            self.changed.notify_one();
        }
    }

    /// Writes out everything waiting.
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut self.pending().bytes);
        if bytes.is_empty() {
            return;
        }
        if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
            if !self.failed.swap(true, Ordering::Relaxed) {
                log::warn!("serial output lost: {e}");
            }
        }
    }

    /// The thread: waits for bytes, lets them gather, writes them; until told to stop.
    fn run(&self, filter: &ThreadFilter) {
        if let Err(e) = filter.apply_to_current() {
            log::error!("serial-output cannot start ({e}): the vCPUs write the output");
            self.direct.store(true, Ordering::Relaxed);
            self.flush();
            return;
        }
        loop {
            let mut pending = self.pending();
            while pending.bytes.is_empty() && !pending.stop {
                pending = self
                    .changed
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            if pending.stop {
                return;
            }
            // Only a stop interrupts the gathering: bytes into a non-empty buffer notify
            // nobody.
            let (pending, _) = self
                .changed
                .wait_timeout_while(pending, FLUSH_DELAY, |p| !p.stop)
                .unwrap_or_else(|e| e.into_inner());
            drop(pending);
            self.flush();
        }
    }
}

/// The guest's output on its way to the serial port's destination, and the thread that
/// writes it. Dropping it writes what is left.
pub struct OutputQueue {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl OutputQueue {
    /// Starts the `serial-output` thread, under `filter`, writing to `out`.
    pub fn start(out: Box<dyn Write + Send>, filter: ThreadFilter) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            changed: Condvar::new(),
            out: Mutex::new(out),
            direct: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("serial-output".into())
            .spawn(move || for_thread.run(&filter))?;
        Ok(OutputQueue {
            shared,
            thread: Some(thread),
        })
    }

    /// A writer for the UART that appends to this queue.
    pub fn writer(&self) -> QueueWriter {
        QueueWriter(self.shared.clone())
    }

    /// Writes out everything waiting, now.
    pub fn flush(&self) {
        self.shared.flush();
    }
}

impl Drop for OutputQueue {
    fn drop(&mut self) {
        self.shared.pending().stop = true;
        self.shared.changed.notify_all();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let started = Instant::now();
        while !thread.is_finished() {
            if started.elapsed() > STOP_TIMEOUT {
                log::error!(
                    "serial-output did not stop within {} s (its destination does not take \
                     the output); left behind",
                    STOP_TIMEOUT.as_secs()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.join().is_err() {
            log::error!("serial-output panicked");
        }
        self.shared.flush();
    }
}

/// The UART's end of an [`OutputQueue`].
pub struct QueueWriter(Arc<Shared>);

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    /// The UART flushes after every byte; the bytes leave with the thread's next write.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{SeccompMode, ThreadKind};

    /// A destination that records its writes.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);
    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn queue() -> (OutputQueue, Recorder) {
        let out = Recorder::default();
        let filter = ThreadFilter::new(ThreadKind::SerialOutput, SeccompMode::Off).unwrap();
        (
            OutputQueue::start(Box::new(out.clone()), filter).unwrap(),
            out,
        )
    }

    fn wait_for(out: &Recorder, writes: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.0.lock().unwrap().len() < writes {
            assert!(Instant::now() < deadline, "{:?}", out.0.lock().unwrap());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_burst_leaves_in_one_write_soon_after() {
        let (queue, out) = queue();
        let mut w = queue.writer();
        let started = Instant::now();
        for b in b"hello\n" {
            w.write_all(&[*b]).unwrap();
            w.flush().unwrap();
        }
        wait_for(&out, 1);
        assert!(started.elapsed() >= FLUSH_DELAY);
        assert_eq!(*out.0.lock().unwrap(), vec![b"hello\n".to_vec()]);
        w.write_all(b"$ ").unwrap();
        wait_for(&out, 2);
        assert_eq!(
            out.0.lock().unwrap()[1],
            b"$ ",
            "an emptied queue wakes the thread again"
        );
    }

    #[test]
    fn a_full_queue_is_written_by_the_sender_and_the_rest_when_dropped() {
        let (queue, out) = queue();
        let mut w = queue.writer();
        // Hold the thread off the destination, so that only the sender can write.
        let held = queue.shared.out.lock().unwrap();
        let big = vec![b'x'; MAX_PENDING - 1];
        w.write_all(&big).unwrap();
        drop(held);
        w.write_all(b"y").unwrap();
        w.write_all(b"tail").unwrap();
        drop(queue);
        let all = out.0.lock().unwrap().concat();
        assert_eq!(all.len(), MAX_PENDING + 4);
        assert!(all.ends_with(b"ytail"), "every byte, in order");
    }
}
