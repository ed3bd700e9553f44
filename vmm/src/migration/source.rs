//! The source's `migration` thread: connects, sends the configuration, copies memory in
//! passes while the guest runs, asks the VMM thread to pause the VM and give its state,
//! sends the last pass, the state and Complete.
//!
//! Every pass is filtered by the places (boot RAM and the blocks plugged when the devices
//! were frozen): a guest write into an unplugged block is never read nor sent.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypervisor::MemoryRegion;
use virtio_devices::mem::VirtioMemHandle;
use vmm_sys_util::eventfd::EventFd;

use super::protocol::{self, Command, MemoryRange, ProtocolError};
use super::request::TimeoutStrategy;
use super::transport::{Counting, FdStream, MigrationUrl, Stream};
use super::{MigrationReport, Place};
use crate::seccomp::ThreadFilter;

/// Guest pages, as KVM's dirty log counts them.
const PAGE: u64 = 4096;
/// The most memory one `Memory` request carries.
const REQUEST_BYTES: u64 = 64 << 20;
/// How long a read or write on the stream may wait before the peer counts as gone.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// What the source's thread is given.
pub struct SourcePlan {
    pub url: MigrationUrl,
    pub downtime: Duration,
    pub timeout: Duration,
    pub strategy: TimeoutStrategy,
    /// The `Config` payload.
    pub config: Vec<u8>,
    pub vm: Arc<dyn hypervisor::Vm>,
    /// The slots whose dirty log is on.
    pub slots: Vec<MemoryRegion>,
    /// What may be sent, sorted by address.
    pub places: Vec<Place>,
    /// Each virtio-mem device, whose own writes to guest memory are logged.
    pub devices: Vec<VirtioMemHandle>,
    /// The VM was paused when the migration started: it stays paused on the destination.
    pub complete_paused: bool,
    /// A local migration: these memory files go instead of the memory (unix sockets only).
    pub local: Vec<std::fs::File>,
}

/// Why a migration failed, and whether the destination may be running the VM anyway (the
/// answer to Complete was lost).
#[derive(Debug)]
pub struct SourceFailure {
    pub reason: String,
    pub outcome_unknown: bool,
}

/// What the thread tells the VMM thread.
pub enum SourceMessage {
    /// Pause the VM and its devices and answer with the `State` payload.
    Pause(Sender<Result<Vec<u8>, String>>),
    /// One pass was sent.
    Progress {
        pass: u64,
        bytes: u64,
        dirty_bytes: u64,
        /// How fast the guest wrote memory since the harvest before, in bytes per second.
        dirty_rate: u64,
        estimated_downtime_ms: u64,
    },
    Finished(Result<MigrationReport, SourceFailure>),
}

/// The thread's line to the VMM thread: a message, then a write to `notify`.
pub struct Link<M> {
    pub messages: Sender<M>,
    pub notify: EventFd,
}

impl<M> Link<M> {
    /// Sends `message`; false when the VMM thread is gone.
    pub fn send(&self, message: M) -> bool {
        self.messages.send(message).is_ok() && self.notify.write(1).is_ok()
    }
}

/// Starts the `migration` thread of a source.
pub fn start(
    plan: SourcePlan,
    link: Link<SourceMessage>,
    filter: ThreadFilter,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("migration".into())
        .spawn(move || {
            let result = match filter.apply_to_current() {
                Ok(()) => Copier::new(&plan, &link).and_then(|mut s| s.run()),
                Err(e) => Err(SourceFailure {
                    reason: format!("the migration thread cannot start: {e}"),
                    outcome_unknown: false,
                }),
            };
            link.send(SourceMessage::Finished(result));
        })
}

fn failed(reason: impl std::fmt::Display) -> SourceFailure {
    SourceFailure {
        reason: reason.to_string(),
        outcome_unknown: false,
    }
}

fn wire(e: ProtocolError) -> SourceFailure {
    failed(e)
}

struct Copier<'a> {
    plan: &'a SourcePlan,
    link: &'a Link<SourceMessage>,
    stream: Counting<Stream>,
    fd: RawFd,
    started: Instant,
    passes: u64,
}

impl<'a> Copier<'a> {
    fn new(plan: &'a SourcePlan, link: &'a Link<SourceMessage>) -> Result<Self, SourceFailure> {
        let stream = Stream::connect(&plan.url)
            .map_err(|e| failed(format!("cannot reach the destination {:?}: {e}", plan.url)))?;
        stream
            .set_timeout(Some(STREAM_TIMEOUT))
            .map_err(|e| failed(format!("setting the stream's timeout: {e}")))?;
        let fd = match &stream {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        };
        Ok(Copier {
            plan,
            link,
            stream: Counting {
                inner: stream,
                bytes: 0,
            },
            fd,
            started: Instant::now(),
            passes: 0,
        })
    }

    fn request(&mut self, command: Command, payload: &[u8]) -> Result<(), SourceFailure> {
        protocol::write_request(&mut self.stream, command, payload).map_err(wire)?;
        protocol::read_response(&mut self.stream).map_err(wire)
    }

    fn run(&mut self) -> Result<MigrationReport, SourceFailure> {
        self.request(Command::Start, &[])?;
        for (index, file) in self.plan.local.iter().enumerate() {
            // The header, then the index with the descriptor attached.
            let header = protocol::Request::new(Command::MemoryFd, 4).to_bytes();
            self.stream
                .write_all(&header)
                .and_then(|()| {
                    self.stream
                        .write_with_fd(&(index as u32).to_le_bytes(), file.as_raw_fd())
                })
                .map_err(|e| failed(format!("passing memory file {index}: {e}")))?;
            protocol::read_response(&mut self.stream).map_err(wire)?;
        }
        self.request(Command::Config, &self.plan.config)?;
        let pending = if self.plan.local.is_empty() {
            self.precopy()?
        } else {
            // The destination maps the same memory: nothing to copy.
            Vec::new()
        };
        self.finish(pending)
    }

    /// Copies memory in passes until what is dirty fits the downtime (or the timeout
    /// says to stop); returns what is still dirty.
    fn precopy(&mut self) -> Result<Vec<(u64, u64)>, SourceFailure> {
        // The first pass: everything that may be sent but the pages that are all zeros,
        // which the destination's fresh memory holds already. A page the guest writes after
        // it was looked at is in the dirty log (on since before), and goes in a later pass.
        // Looked at and sent a chunk at a time, so the stream never goes quiet for long (a
        // chunk with nothing to send goes as an empty Memory request).
        let pass_started = Instant::now();
        let before = self.stream.bytes;
        for place in self.plan.places.clone() {
            let mut offset = 0;
            while offset < place.len {
                let chunk = Place {
                    gpa: place.gpa + offset,
                    host: place.host + offset,
                    len: REQUEST_BYTES.min(place.len - offset),
                };
                // SAFETY: the chunk lies in a place: boot RAM or a plugged block, mapped
                // readable for the whole migration (the devices are frozen).
                let runs = unsafe { nonzero_runs(&chunk) };
                self.send_ranges(&runs)?;
                offset += chunk.len;
            }
        }
        self.passes += 1;
        let mut bandwidth = bytes_per_second(self.stream.bytes - before, pass_started);
        let mut previous = None;
        let mut harvested = pass_started;
        loop {
            let dirty = self.harvest()?;
            let bytes: u64 = dirty.iter().map(|r| r.1).sum();
            let dirty_rate = (bytes as f64 / harvested.elapsed().as_secs_f64().max(1e-6)) as u64;
            harvested = Instant::now();
            let estimate = Duration::from_secs_f64(bytes as f64 / bandwidth);
            self.link.send(SourceMessage::Progress {
                pass: self.passes,
                bytes: self.stream.bytes,
                dirty_bytes: bytes,
                dirty_rate,
                estimated_downtime_ms: estimate.as_millis() as u64,
            });
            if converged(bytes, previous, estimate, self.plan.downtime) {
                return Ok(dirty);
            }
            previous = Some(bytes);
            if self.started.elapsed() >= self.plan.timeout {
                match self.plan.strategy {
                    TimeoutStrategy::Ignore => return Ok(dirty),
                    TimeoutStrategy::Cancel => {
                        return Err(failed(format!(
                            "timeout_s ({} s) passed before the memory converged: {bytes} \
                             bytes dirty, an estimated downtime of {} ms against downtime_ms {}",
                            self.plan.timeout.as_secs(),
                            estimate.as_millis(),
                            self.plan.downtime.as_millis()
                        )))
                    }
                }
            }
            bandwidth = self.send_pass(&dirty)?;
        }
    }

    /// Pauses the VM (the VMM thread does), sends the last pass with `pending`, the state
    /// and Complete.
    fn finish(&mut self, pending: Vec<(u64, u64)>) -> Result<MigrationReport, SourceFailure> {
        // The VMM thread pauses the vCPUs and devices and gives the state.
        let (reply, answer) = channel();
        let paused_at = Instant::now();
        if !self.link.send(SourceMessage::Pause(reply)) {
            return Err(failed("the VMM is going away"));
        }
        let state = answer
            .recv()
            .map_err(|_| failed("the VMM is going away"))?
            .map_err(failed)?;
        let state_at = paused_at.elapsed();
        let before = self.stream.bytes;
        if self.plan.local.is_empty() {
            let mut last = self.harvest()?;
            last.extend(pending);
            self.send_pass(&merge(last))?;
        }
        let last_pass = (self.stream.bytes - before, paused_at.elapsed() - state_at);
        self.request(Command::State, &state)?;
        let state_sent = paused_at.elapsed();
        let complete = if self.plan.complete_paused {
            Command::CompletePaused
        } else {
            Command::Complete
        };
        protocol::write_request(&mut self.stream, complete, &[]).map_err(wire)?;
        // From here the destination may be running the VM.
        protocol::read_response(&mut self.stream).map_err(|e| SourceFailure {
            reason: format!(
                "the answer to Complete was lost ({e}): the destination may be running the \
                 VM; this one stays paused"
            ),
            outcome_unknown: true,
        })?;
        log::info!(
            "migration: paused with the state after {} ms, the last pass ({} bytes) took {} \
             ms, the state ({} bytes) was restored after {} ms, Complete answered after {} ms",
            state_at.as_millis(),
            last_pass.0,
            last_pass.1.as_millis(),
            state.len(),
            state_sent.as_millis(),
            paused_at.elapsed().as_millis()
        );
        Ok(MigrationReport {
            bytes: self.stream.bytes,
            passes: self.passes,
            downtime_ms: paused_at.elapsed().as_millis() as u64,
            total_ms: self.started.elapsed().as_millis() as u64,
        })
    }

    /// The pages written since the last harvest (by vCPUs and devices), within the places.
    fn harvest(&self) -> Result<Vec<(u64, u64)>, SourceFailure> {
        let mut runs = Vec::new();
        for slot in &self.plan.slots {
            let bitmap =
                self.plan.vm.dirty_log(slot.slot, slot.size).map_err(|e| {
                    failed(format!("reading the dirty log of slot {}: {e}", slot.slot))
                })?;
            runs.extend(dirty_runs(slot.guest_addr, &bitmap));
        }
        for device in &self.plan.devices {
            for (addr, len) in device.write_log().take() {
                let start = addr & !(PAGE - 1);
                let end = addr.saturating_add(len).div_ceil(PAGE) * PAGE;
                runs.push((start, end - start));
            }
        }
        Ok(clip(&merge(runs), &self.plan.places))
    }

    /// Sends `ranges` (within the places) as one pass; returns the bandwidth seen, in bytes
    /// per second.
    fn send_pass(&mut self, ranges: &[(u64, u64)]) -> Result<f64, SourceFailure> {
        let started = Instant::now();
        let before = self.stream.bytes;
        self.send_ranges(ranges)?;
        self.passes += 1;
        Ok(bytes_per_second(self.stream.bytes - before, started))
    }

    /// Sends `ranges` (within the places) in Memory requests; none, an empty one.
    fn send_ranges(&mut self, ranges: &[(u64, u64)]) -> Result<(), SourceFailure> {
        let mut batches = batches(ranges);
        if batches.is_empty() {
            batches.push(Vec::new());
        }
        for batch in batches {
            let table: Vec<MemoryRange> = batch
                .iter()
                .map(|&(gpa, length)| MemoryRange { gpa, length })
                .collect();
            let header = protocol::Request::new(Command::Memory, (table.len() * 16) as u64);
            self.stream
                .write_all(&header.to_bytes())
                .and_then(|()| self.stream.write_all(&protocol::encode_ranges(&table)))
                .map_err(|e| failed(format!("sending memory: {e}")))?;
            for &(gpa, len) in &batch {
                let place = self
                    .plan
                    .places
                    .iter()
                    .find(|p| p.holds(gpa, len))
                    .ok_or_else(|| failed(format!("{gpa:#x}+{len:#x} is not guest memory")))?;
                let host = place.host + (gpa - place.gpa);
                // SAFETY: [host, host + len) lies in boot RAM or a plugged block (`holds`),
                // which stay mapped readable while the devices are frozen; write(2) reads it
                // without making a Rust reference to memory the guest changes meanwhile.
                unsafe { write_from(self.fd, host, len) }
                    .map_err(|e| failed(format!("sending memory: {e}")))?;
                self.stream.bytes += len;
            }
            protocol::read_response(&mut self.stream).map_err(wire)?;
        }
        Ok(())
    }
}

/// `bytes` sent since `started`, in bytes per second; at least a byte per µs, so that one
/// fast pass does not promise the impossible.
fn bytes_per_second(bytes: u64, started: Instant) -> f64 {
    (bytes as f64 / started.elapsed().as_secs_f64().max(1e-6)).max(1e6)
}

/// Whether to pause now, with `bytes` dirty (an estimated `estimate` to send paused),
/// `previous` dirty after the pass before (none after the first): when nothing is dirty;
/// or when the estimate fits `downtime` and another pass would not halve it (the guest
/// dirties about as fast as a pass sends) or it is a tenth of `downtime` already. An idle
/// guest's first pass leaves what it dirtied while the whole memory went (on a slow link,
/// a good part of `downtime`); a second, short pass leaves next to nothing, so the pause
/// is far below the limit rather than just under it.
fn converged(bytes: u64, previous: Option<u64>, estimate: Duration, downtime: Duration) -> bool {
    if bytes == 0 {
        return true;
    }
    if estimate > downtime {
        return false;
    }
    let halving = previous.is_none_or(|p| bytes.saturating_mul(2) <= p);
    !halving || estimate <= downtime / 10
}

/// The runs of `place` (as guest-physical (address, length)) whose pages are not all
/// zeros.
///
/// # Safety
/// `place` must be mapped readable for the whole call.
unsafe fn nonzero_runs(place: &Place) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut offset = 0;
    while offset < place.len {
        let len = PAGE.min(place.len - offset);
        // SAFETY: the page lies in `place` (the caller's promise). The guest may write it
        // meanwhile: it is read word by word with volatile reads, never through a Rust
        // reference, and a write after the read is caught by the dirty log.
        let zero = unsafe { is_zero(place.host + offset, len) };
        if !zero {
            let gpa = place.gpa + offset;
            match runs.last_mut() {
                Some((start, run)) if *start + *run == gpa => *run += len,
                _ => runs.push((gpa, len)),
            }
        }
        offset += len;
    }
    runs
}

/// Whether the `len` bytes at host address `host` (8-byte aligned, `len` a multiple of 8)
/// are all zeros.
///
/// # Safety
/// The range must be mapped readable.
unsafe fn is_zero(host: u64, len: u64) -> bool {
    let words = host as *const u64;
    (0..(len / 8) as usize).all(|i| {
        // SAFETY: word `i` lies within the range the caller promises is mapped.
        unsafe { std::ptr::read_volatile(words.add(i)) == 0 }
    })
}

/// Writes `len` bytes from host address `host` to `fd`.
///
/// # Safety
/// `[host, host + len)` must be mapped readable for the whole call.
unsafe fn write_from(fd: RawFd, host: u64, len: u64) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: the caller promises the range is mapped; `fd` is the open stream.
        let n = unsafe { libc::write(fd, (host + done) as *const libc::c_void, chunk) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n as u64;
    }
    Ok(())
}

/// The runs of set bits of a KVM dirty bitmap of a slot at `gpa`, as (address, length).
pub fn dirty_runs(gpa: u64, bitmap: &[u64]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (index, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let bit = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            let page = gpa + (index as u64 * 64 + bit) * PAGE;
            match runs.last_mut() {
                Some((start, len)) if *start + *len == page => *len += PAGE,
                _ => runs.push((page, PAGE)),
            }
        }
    }
    runs
}

/// Sorted, with overlapping and touching ranges joined.
pub fn merge(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.retain(|r| r.1 > 0);
    runs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (start, len) in runs {
        let end = start.saturating_add(len);
        match out.last_mut() {
            Some((s, l)) if start <= *s + *l => *l = (*l).max(end - *s),
            _ => out.push((start, len)),
        }
    }
    out
}

/// The parts of `runs` (merged) inside `places` (sorted, disjoint).
pub fn clip(runs: &[(u64, u64)], places: &[Place]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, len) in runs {
        let end = start + len;
        for p in places {
            let (s, e) = (start.max(p.gpa), end.min(p.gpa + p.len));
            if s < e {
                out.push((s, e - s));
            }
        }
    }
    out
}

/// `ranges` cut into requests of at most [`REQUEST_BYTES`] and
/// [`protocol::MAX_RANGES`] ranges.
fn batches(ranges: &[(u64, u64)]) -> Vec<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0;
    for &(mut gpa, mut len) in ranges {
        while len > 0 {
            let take = len.min(REQUEST_BYTES - bytes);
            batch.push((gpa, take));
            bytes += take;
            gpa += take;
            len -= take;
            if bytes == REQUEST_BYTES || batch.len() as u64 == protocol::MAX_RANGES {
                out.push(std::mem::take(&mut batch));
                bytes = 0;
            }
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pass_leaves_zero_pages_out() {
        let mut memory = vec![0u64; 6 * 512];
        memory[512] = 1; // page 1
        memory[2 * 512 + 511] = 7; // page 2, last word
        memory[5 * 512] = 3; // page 5
        let place = Place {
            gpa: 0x10_0000,
            host: memory.as_ptr() as u64,
            len: 6 * PAGE,
        };
        // SAFETY: `place` is `memory`, alive for the call.
        let runs = unsafe { nonzero_runs(&place) };
        assert_eq!(
            runs,
            vec![(0x10_0000 + PAGE, 2 * PAGE), (0x10_0000 + 5 * PAGE, PAGE)]
        );
    }

    #[test]
    fn passes_go_on_while_they_halve_what_is_dirty() {
        let ms = Duration::from_millis;
        let limit = ms(300);
        assert!(converged(0, None, ms(0), limit));
        // Over the limit: another pass.
        assert!(!converged(10 << 20, None, ms(500), limit));
        // Under it after the first pass: once more, it may shrink a lot.
        assert!(!converged(6 << 20, None, ms(280), limit));
        // It did: a tenth of the limit is good enough.
        assert!(converged(100 << 10, Some(6 << 20), ms(5), limit));
        // It did not halve: the guest keeps writing; pause now.
        assert!(converged(4 << 20, Some(6 << 20), ms(200), limit));
        // It halved but is still large: once more.
        assert!(!converged(2 << 20, Some(6 << 20), ms(100), limit));
    }

    #[test]
    fn dirty_bits_become_runs_of_pages() {
        let bitmap = [0b1011u64, 1 << 63, 1];
        assert_eq!(
            dirty_runs(0x10_0000, &bitmap),
            vec![
                (0x10_0000, 2 * PAGE),
                (0x10_0000 + 3 * PAGE, PAGE),
                (0x10_0000 + 127 * PAGE, 2 * PAGE),
            ]
        );
    }

    #[test]
    fn passes_never_leave_the_places() {
        let places = [
            Place {
                gpa: 0,
                host: 0,
                len: 0x10_0000,
            },
            Place {
                gpa: 0x1_0000_0000,
                host: 0,
                len: 0x20_0000,
            },
        ];
        // Dirty pages across the end of boot RAM, inside an unplugged block and across the
        // end of a plugged one.
        let dirty = merge(vec![
            (0xf_f000, 0x2000),
            (0x8000_0000, 0x1000),
            (0x1_001f_f000, 0x2000),
            (0x1000, 0x1000),
            (0x1000, 0x3000),
        ]);
        assert_eq!(
            clip(&dirty, &places),
            vec![
                (0x1000, 0x3000),
                (0xf_f000, 0x1000),
                (0x1_001f_f000, 0x1000)
            ]
        );
    }

    #[test]
    fn batches_keep_requests_bounded_and_cover_everything() {
        let ranges = [(0, 150 << 20), (1 << 32, 4096)];
        let b = batches(&ranges);
        assert!(b
            .iter()
            .all(|batch| batch.iter().map(|r| r.1).sum::<u64>() <= REQUEST_BYTES));
        let total: u64 = b.iter().flatten().map(|r| r.1).sum();
        assert_eq!(total, (150 << 20) + 4096);
    }
}
