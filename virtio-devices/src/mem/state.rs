//! The device's memory state and the request-handling rules (docs/virtio-mem.md §1.3, §1.5, §1.7, §3).
//!
//! [`VirtioMemState`] holds the block bitmap, `requested_size` and `usable_region_size`, and
//! answers requests. It knows nothing of queues or interrupts: the transport reads requests,
//! hands them to [`VirtioMemState::handle`] (or [`VirtioMemState::process`]), writes the
//! response, and raises the config-change interrupt when [`VirtioMemState::set_requested_size`]
//! says so. Host memory is populated and discarded through a [`BlockBackend`].
//!
//! # Usable-region policy (docs/virtio-mem.md §1.3, §1.8, §3)
//!
//! `usable_region_size` is kept at least [`MemGeometry::usable_region_for`]`(requested_size)`:
//! `0` when `requested_size` is 0, otherwise `requested_size +` [`USABLE_REGION_MARGIN`]
//! (256 MiB, QEMU's x86-64 choice), rounded up to the block size and capped at `region_size`.
//! The margin lets the Linux driver plug blocks in memory blocks other than the first ones when
//! some of those it would use are busy. It only ever grows (when `requested_size` grows),
//! except while processing UNPLUG_ALL and at system reset, where it is recomputed from
//! `requested_size` with nothing plugged (QEMU's rule; it drops to 0 when `requested_size` is 0).
//!
//! # Answers (docs/virtio-mem.md §1.5, §3)
//!
//! For PLUG, UNPLUG and STATE, in this order:
//! 1. ERROR when the range is invalid: `addr` not aligned to `block_size`, `nb_blocks == 0`,
//!    `addr + nb_blocks * block_size` overflowing, or the range not inside
//!    `[addr_cfg, addr_cfg + usable_region_size)`.
//! 2. STATE: ACK with PLUGGED, UNPLUGGED or MIXED.
//! 3. ERROR when any block is already in the target state (PLUG of a plugged block, UNPLUG of
//!    an unplugged one). This comes before the NACK check: asking for a block in the wrong
//!    state is a driver bug whatever the sizes; a correct driver never sees the difference
//!    (QEMU checks NACK first).
//! 4. PLUG: NACK when `plugged_size + size > requested_size` (docs/virtio-mem.md §3: NACK, not ERROR).
//! 5. BUSY while the host has set [`VirtioMemState::set_busy`] (migration, snapshot).
//! 6. BUSY when the backend fails (docs/virtio-mem.md §3: "when a preallocation fails"). The bitmap is
//!    untouched, a failed plug is rolled back (what was populated is discarded again), so the
//!    request is all-or-nothing. BUSY rather than ERROR because Linux marks the whole device
//!    broken on ERROR (`-EINVAL`) but retries BUSY (`-ETXTBSY`) on its back-off timer.
//! 7. ACK, with `plugged_size` updated.
//!
//! UNPLUG_ALL: BUSY while busy; otherwise each plugged run is discarded and cleared; a backend
//! failure answers BUSY with the runs done so far cleared (Linux resends UNPLUG_ALL until it
//! succeeds); ACK only with `plugged_size == 0`, after recomputing `usable_region_size`.

use std::io;

use super::bitmap::BlockBitmap;
use super::config::{device_features, VirtioMemConfig};
use super::request::{BlockState, Request, RequestError, RequestType, Response, ResponseType};

/// The margin added to `requested_size` to get `usable_region_size`: 256 MiB, what QEMU uses on
/// x86-64 (docs/virtio-mem.md §1.8, §3).
pub const USABLE_REGION_MARGIN: u64 = 256 << 20;

/// The smallest block size accepted: one 4 KiB page, below which memory cannot be discarded.
/// The VMM's configuration enforces its own, larger floor (2 MiB).
pub const MIN_BLOCK_SIZE: u64 = 4096;

/// The most blocks one device may have: 2^28 (a 32 MiB bitmap; 1 TiB at 4 KiB blocks,
/// 512 TiB at 2 MiB blocks).
pub const MAX_BLOCKS: u64 = 1 << 28;

/// How host memory behind the region is populated and discarded.
///
/// Offsets and lengths are in bytes from the start of the device region and are multiples of
/// the block size.
pub trait BlockBackend {
    /// Makes `[offset, offset + len)` ready to be used as RAM (a no-op, or a prefault). On
    /// failure the range may be partly populated: the caller discards it again with
    /// [`BlockBackend::unplug`], so a plug is all-or-nothing.
    fn plug(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Gives the host memory of `[offset, offset + len)` back (docs/virtio-mem.md §1.6: the device may
    /// discard unplugged memory). Never called for a block the guest still has plugged.
    fn unplug(&mut self, offset: u64, len: u64) -> io::Result<()>;

    /// Whether `unplug` only marks the range and [`BlockBackend::settle`] gives the memory
    /// back (and reports its time). The device thread then does not time `unplug` as a
    /// discard, so `vm.counters` counts each discard once.
    fn settles_unplugs(&self) -> bool {
        false
    }

    /// Finishes what `plug` and `unplug` left for later, once the guest has its answers and
    /// the caller holds no guest memory (a backend that protects unplugged memory does it
    /// here, after taking it out of the VMM's [`crate::view::GuestMemoryView`]). The device
    /// thread calls it after each batch of requests, and the device after a system reset.
    fn settle(&mut self) -> Discarded {
        Discarded::default()
    }
}

/// What a backend gave back to the host after the answers: see [`BlockBackend::settle`].
#[derive(Debug, Default)]
pub struct Discarded {
    /// How long each discarded range took, in nanoseconds.
    pub times_ns: Vec<u64>,
    /// The ones that failed: `(offset, len, error)`.
    pub failures: Vec<(u64, u64, io::Error)>,
}

impl Discarded {
    /// Adds `other`'s ranges to these.
    pub fn extend(&mut self, other: Discarded) {
        self.times_ns.extend(other.times_ns);
        self.failures.extend(other.failures);
    }
}

/// A backend that does nothing: no prefault, no discard. For tests and for regions whose
/// memory is managed elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopBackend;

impl BlockBackend for NoopBackend {
    fn plug(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn unplug(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// A device region that cannot be set up. The messages name the values, so the VMM can show
/// them as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The block size is not a power of two (docs/virtio-mem.md §1.3).
    #[error("virtio-mem block size {0} is not a power of two")]
    BlockSizeNotPowerOfTwo(u64),
    /// The block size is below [`MIN_BLOCK_SIZE`].
    #[error("virtio-mem block size {0} is below the minimum of {MIN_BLOCK_SIZE} bytes")]
    BlockSizeTooSmall(u64),
    /// The region start is not a multiple of the block size (docs/virtio-mem.md §1.3).
    #[error(
        "virtio-mem region address {addr:#x} is not aligned to the block size {block_size:#x}"
    )]
    AddrUnaligned {
        /// The region's guest-physical start.
        addr: u64,
        /// The block size.
        block_size: u64,
    },
    /// The region size is not a multiple of the block size (docs/virtio-mem.md §1.3).
    #[error("virtio-mem region size {region_size:#x} is not a multiple of the block size {block_size:#x}")]
    RegionSizeUnaligned {
        /// The region's size.
        region_size: u64,
        /// The block size.
        block_size: u64,
    },
    /// The region would end past the top of the 64-bit address space.
    #[error("virtio-mem region at {addr:#x} of size {region_size:#x} overflows the address space")]
    RegionOverflow {
        /// The region's guest-physical start.
        addr: u64,
        /// The region's size.
        region_size: u64,
    },
    /// The region has more than [`MAX_BLOCKS`] blocks.
    #[error("virtio-mem region of {blocks} blocks exceeds the maximum of {MAX_BLOCKS} blocks; use a larger block size")]
    TooManyBlocks {
        /// The region's number of blocks.
        blocks: u64,
    },
    /// The initial requested size is not acceptable.
    #[error(transparent)]
    Resize(#[from] ResizeError),
}

/// A requested size the device cannot take. The messages are meant for the REST API's 400
/// answer as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// Not a multiple of the block size (docs/virtio-mem.md §1.3: `requested_size` is a multiple of
    /// `block_size`).
    #[error("requested size {size} bytes is not a multiple of the virtio-mem block size ({block_size} bytes)")]
    NotBlockMultiple {
        /// The size asked for.
        size: u64,
        /// The device's block size.
        block_size: u64,
    },
    /// Larger than the device region (docs/virtio-mem.md §1.3: `requested_size <= usable_region_size
    /// <= region_size`).
    #[error(
        "requested size {size} bytes exceeds the virtio-mem region size ({region_size} bytes)"
    )]
    ExceedsRegion {
        /// The size asked for.
        size: u64,
        /// The device's region size.
        region_size: u64,
    },
}

/// The fixed shape of a device region: where it is, how large, and its block size (reference
/// §1.3: all fixed except across a system reset). `Copy`, so the VMM can keep one to validate
/// resizes without touching the device's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemGeometry {
    addr: u64,
    region_size: u64,
    block_size: u64,
}

impl MemGeometry {
    /// Checks the rules of docs/virtio-mem.md §1.3: `block_size` a power of two (and at least
    /// [`MIN_BLOCK_SIZE`]), `addr` and `region_size` multiples of it, and the region inside the
    /// address space with at most [`MAX_BLOCKS`] blocks.
    pub fn new(addr: u64, region_size: u64, block_size: u64) -> Result<Self, SetupError> {
        if !block_size.is_power_of_two() {
            return Err(SetupError::BlockSizeNotPowerOfTwo(block_size));
        }
        if block_size < MIN_BLOCK_SIZE {
            return Err(SetupError::BlockSizeTooSmall(block_size));
        }
        if !addr.is_multiple_of(block_size) {
            return Err(SetupError::AddrUnaligned { addr, block_size });
        }
        if !region_size.is_multiple_of(block_size) {
            return Err(SetupError::RegionSizeUnaligned {
                region_size,
                block_size,
            });
        }
        if addr.checked_add(region_size).is_none() {
            return Err(SetupError::RegionOverflow { addr, region_size });
        }
        let blocks = region_size / block_size;
        if blocks > MAX_BLOCKS {
            return Err(SetupError::TooManyBlocks { blocks });
        }
        Ok(MemGeometry {
            addr,
            region_size,
            block_size,
        })
    }

    /// Guest-physical start of the region.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Size of the region in bytes.
    pub fn region_size(&self) -> u64 {
        self.region_size
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Number of blocks in the region.
    pub fn blocks(&self) -> u64 {
        self.region_size / self.block_size
    }

    /// Whether `size` can be the device's `requested_size`: a multiple of the block size, at
    /// most the region size (docs/virtio-mem.md §1.3).
    pub fn check_requested_size(&self, size: u64) -> Result<(), ResizeError> {
        if !size.is_multiple_of(self.block_size) {
            return Err(ResizeError::NotBlockMultiple {
                size,
                block_size: self.block_size,
            });
        }
        if size > self.region_size {
            return Err(ResizeError::ExceedsRegion {
                size,
                region_size: self.region_size,
            });
        }
        Ok(())
    }

    /// The usable region size the policy wants for `requested` (see the module doc): 0 for 0,
    /// otherwise `min(region_size, align_up(requested + USABLE_REGION_MARGIN, block_size))`.
    /// Always a multiple of the block size, at least `requested` when `requested` is valid.
    pub fn usable_region_for(&self, requested: u64) -> u64 {
        if requested == 0 {
            return 0;
        }
        let target = requested
            .saturating_add(USABLE_REGION_MARGIN)
            .min(self.region_size);
        // region_size is a multiple of block_size, so rounding a value <= region_size up to a
        // block multiple stays <= region_size and cannot overflow.
        target.div_ceil(self.block_size) * self.block_size
    }
}

/// Requests and responses counted by type (for `vm.counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// PLUG requests.
    pub plug: u64,
    /// UNPLUG requests.
    pub unplug: u64,
    /// UNPLUG_ALL requests.
    pub unplug_all: u64,
    /// STATE requests.
    pub state: u64,
    /// Requests that could not be parsed (too short, unknown type), had no room for the
    /// response, or whose buffers could not be accessed: protocol violations, answered with
    /// nothing.
    pub malformed: u64,
    /// ACK responses.
    pub ack: u64,
    /// NACK responses.
    pub nack: u64,
    /// BUSY responses.
    pub busy: u64,
    /// ERROR responses.
    pub error: u64,
    /// Backend failures answered BUSY: a failed populate (PLUG), or a failed discard where
    /// the discard is done before the answer.
    pub backend_errors: u64,
    /// Discards done after the answer (the device thread's way, see `deferred`) that failed:
    /// the blocks are unplugged, but their host memory was not given back.
    pub discard_errors: u64,
    /// Queue notifications (kicks) the device thread has finished handling, including the
    /// ones it ignored while it waited for a device reset. Published after the batch's
    /// answers and discards, so a caller that sees it move knows the kick was dealt with.
    pub notifications: u64,
}

impl Counters {
    fn count_request(&mut self, t: RequestType) {
        let c = match t {
            RequestType::Plug => &mut self.plug,
            RequestType::Unplug => &mut self.unplug,
            RequestType::UnplugAll => &mut self.unplug_all,
            RequestType::State => &mut self.state,
        };
        *c = c.wrapping_add(1);
    }

    fn count_response(&mut self, t: ResponseType) {
        let c = match t {
            ResponseType::Ack => &mut self.ack,
            ResponseType::Nack => &mut self.nack,
            ResponseType::Busy => &mut self.busy,
            ResponseType::Error => &mut self.error,
        };
        *c = c.wrapping_add(1);
    }
}

/// The memory state of one virtio-mem device and its request handling.
///
/// Invariants, checked by the tests and the fuzz target after every step:
/// - `plugged_size() == bitmap().count() * block_size()` (docs/virtio-mem.md §1.3);
/// - `plugged_size() <= usable_region_size() <= region_size()`, and no block at or past
///   `usable_region_size` is plugged (docs/virtio-mem.md §1.3: everything beyond it is unplugged);
/// - `requested_size() <= usable_region_size()`, all three sizes multiples of the block size.
#[derive(Clone, Debug)]
pub struct VirtioMemState {
    geometry: MemGeometry,
    node_id: Option<u16>,
    usable_region_size: u64,
    requested_size: u64,
    bitmap: BlockBitmap,
    busy: bool,
    counters: Counters,
}

impl VirtioMemState {
    /// A device over `geometry` with nothing plugged (docs/virtio-mem.md §1.7: all blocks are
    /// unplugged at first start). `node_id` is the ACPI proximity domain when the device
    /// belongs to a guest NUMA node (then `VIRTIO_MEM_F_ACPI_PXM` is offered). The initial
    /// `requested_size` (Cloud Hypervisor's `hotplugged_size`) is what the guest driver plugs
    /// once it starts.
    pub fn new(
        geometry: MemGeometry,
        node_id: Option<u16>,
        requested_size: u64,
    ) -> Result<Self, ResizeError> {
        geometry.check_requested_size(requested_size)?;
        Ok(VirtioMemState {
            geometry,
            node_id,
            usable_region_size: geometry.usable_region_for(requested_size),
            requested_size,
            bitmap: BlockBitmap::new(geometry.blocks()),
            busy: false,
            counters: Counters::default(),
        })
    }

    /// A device in a state brought back by [`VirtioMemState::from_saved`], which checked it.
    pub(super) fn with_bitmap(
        geometry: MemGeometry,
        node_id: Option<u16>,
        requested_size: u64,
        usable_region_size: u64,
        bitmap: BlockBitmap,
    ) -> Self {
        VirtioMemState {
            geometry,
            node_id,
            usable_region_size,
            requested_size,
            bitmap,
            busy: false,
            counters: Counters::default(),
        }
    }

    /// The region's fixed shape.
    pub fn geometry(&self) -> MemGeometry {
        self.geometry
    }

    /// Guest-physical start of the region (`addr` in the config space).
    pub fn addr(&self) -> u64 {
        self.geometry.addr
    }

    /// `region_size` in bytes.
    pub fn region_size(&self) -> u64 {
        self.geometry.region_size
    }

    /// `block_size` in bytes.
    pub fn block_size(&self) -> u64 {
        self.geometry.block_size
    }

    /// The ACPI proximity domain, when the device belongs to a NUMA node.
    pub fn node_id(&self) -> Option<u16> {
        self.node_id
    }

    /// `usable_region_size` in bytes.
    pub fn usable_region_size(&self) -> u64 {
        self.usable_region_size
    }

    /// `requested_size` in bytes.
    pub fn requested_size(&self) -> u64 {
        self.requested_size
    }

    /// `plugged_size` in bytes: the plugged blocks times the block size.
    pub fn plugged_size(&self) -> u64 {
        self.bitmap.count() * self.geometry.block_size
    }

    /// The plugged-block bitmap (for migration and status).
    pub fn bitmap(&self) -> &BlockBitmap {
        &self.bitmap
    }

    /// The plugged ranges as `(offset from region start, length)` in bytes, in order.
    pub fn plugged_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let bs = self.geometry.block_size;
        self.bitmap.set_runs().map(move |(f, n)| (f * bs, n * bs))
    }

    /// Request and response counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The feature bits to offer (see [`device_features`]).
    pub fn features(&self) -> u64 {
        device_features(self.node_id.is_some())
    }

    /// The configuration space as the driver reads it now.
    pub fn config(&self) -> VirtioMemConfig {
        VirtioMemConfig {
            block_size: self.geometry.block_size,
            node_id: self.node_id.unwrap_or(0),
            addr: self.geometry.addr,
            region_size: self.geometry.region_size,
            usable_region_size: self.usable_region_size,
            plugged_size: self.plugged_size(),
            requested_size: self.requested_size,
        }
    }

    /// Counts a protocol violation [`Self::process`] cannot see (a descriptor chain with
    /// buffers outside guest memory, for example); it counts the ones it finds itself.
    pub fn count_malformed(&mut self) {
        self.counters.malformed = self.counters.malformed.wrapping_add(1);
    }

    /// Counts a discard that failed after its UNPLUG was answered.
    pub fn count_discard_error(&mut self) {
        self.counters.discard_errors = self.counters.discard_errors.wrapping_add(1);
    }

    /// Counts a queue notification the device thread has finished handling.
    pub fn count_notification(&mut self) {
        self.counters.notifications = self.counters.notifications.wrapping_add(1);
    }

    /// Whether PLUG, UNPLUG and UNPLUG_ALL are answered BUSY.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// While set, PLUG, UNPLUG and UNPLUG_ALL are answered BUSY (docs/virtio-mem.md §3: while a
    /// migration or snapshot is copying memory). STATE is still answered.
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// Sets `requested_size` (a resize) and grows `usable_region_size` by the policy if needed
    /// (docs/virtio-mem.md §1.3, §3). Returns whether `requested_size` or `usable_region_size` changed:
    /// the transport MUST then send a config-change interrupt (docs/virtio-mem.md §1.3). On error
    /// nothing changes.
    pub fn set_requested_size(&mut self, size: u64) -> Result<bool, ResizeError> {
        self.geometry.check_requested_size(size)?;
        let usable = self
            .usable_region_size
            .max(self.geometry.usable_region_for(size));
        let changed = size != self.requested_size || usable != self.usable_region_size;
        self.requested_size = size;
        self.usable_region_size = usable;
        Ok(changed)
    }

    /// System reset (guest reboot; docs/virtio-mem.md §1.7, §3): every block is unplugged, the whole
    /// region is discarded, and `usable_region_size` is recomputed from `requested_size`.
    /// Block state is reset even when the discard fails; the error is returned for the log.
    ///
    /// Not for a device reset (driver unbind, status write of 0), which MUST NOT change block
    /// states: on a device reset, call nothing here. The transport pauses request handling
    /// around this call. No config interrupt is needed: the driver reads the config afresh.
    pub fn system_reset<B: BlockBackend + ?Sized>(&mut self, backend: &mut B) -> io::Result<()> {
        let result = backend.unplug(0, self.geometry.region_size);
        self.bitmap.clear_all();
        self.usable_region_size = self.geometry.usable_region_for(self.requested_size);
        if let Err(e) = &result {
            log::warn!("virtio-mem: discarding the region at system reset failed: {e}");
        }
        result
    }

    /// Handles a request in wire form: parses `request`, handles it, and writes the 10-byte
    /// response into `response`. Both lengths are checked before anything changes, so a
    /// malformed chain never changes state. Returns the response written, or the protocol
    /// violation (the transport then marks the device DEVICE_NEEDS_RESET; docs/virtio-mem.md §1.5, §3).
    pub fn process<B: BlockBackend + ?Sized>(
        &mut self,
        request: &[u8],
        response: &mut [u8],
        backend: &mut B,
    ) -> Result<Response, RequestError> {
        let parsed = Request::parse(request).and_then(|r| {
            if response.len() < super::request::RESPONSE_SIZE {
                Err(RequestError::ResponseTooShort(response.len()))
            } else {
                Ok(r)
            }
        });
        let req = match parsed {
            Ok(r) => r,
            Err(e) => {
                self.counters.malformed = self.counters.malformed.wrapping_add(1);
                log::debug!("virtio-mem: malformed request: {e}");
                return Err(e);
            }
        };
        let resp = self.handle(req, backend);
        resp.write_to(response)?;
        Ok(resp)
    }

    /// Handles one parsed request and returns the answer (docs/virtio-mem.md §1.5, §3; the order of
    /// the checks is in the module doc). Counts the request and the response.
    pub fn handle<B: BlockBackend + ?Sized>(&mut self, req: Request, backend: &mut B) -> Response {
        self.counters.count_request(req.request_type());
        let resp = match req {
            Request::Plug { addr, nb_blocks } => self.plug(addr, nb_blocks, backend),
            Request::Unplug { addr, nb_blocks } => self.unplug(addr, nb_blocks, backend),
            Request::UnplugAll => self.unplug_all(backend),
            Request::State { addr, nb_blocks } => self.state(addr, nb_blocks),
        };
        self.counters.count_response(resp.response_type());
        log::trace!("virtio-mem: {req:?} -> {resp:?}");
        resp
    }

    /// The blocks `(first, count)` of a valid range (docs/virtio-mem.md §1.5): `addr` aligned to the
    /// block size, `nb_blocks > 0`, `addr + size` not overflowing, and the range inside
    /// `[addr_cfg, addr_cfg + usable_region_size)`. `None` when invalid.
    fn valid_range(&self, addr: u64, nb_blocks: u16) -> Option<(u64, u64)> {
        let bs = self.geometry.block_size;
        if nb_blocks == 0 || !addr.is_multiple_of(bs) {
            return None;
        }
        let size = u64::from(nb_blocks).checked_mul(bs)?;
        addr.checked_add(size)?;
        let offset = addr.checked_sub(self.geometry.addr)?;
        let end = offset.checked_add(size)?;
        if end > self.usable_region_size {
            return None;
        }
        Some((offset / bs, u64::from(nb_blocks)))
    }

    fn backend_failed(&mut self, what: &str, offset: u64, len: u64, e: &io::Error) -> Response {
        self.counters.backend_errors = self.counters.backend_errors.wrapping_add(1);
        log::warn!(
            "virtio-mem: {what} of [{:#x}, {:#x}) failed, answering BUSY: {e}",
            self.geometry.addr.saturating_add(offset),
            self.geometry
                .addr
                .saturating_add(offset)
                .saturating_add(len)
        );
        Response::Busy
    }

    /// PLUG (docs/virtio-mem.md §1.5, §3).
    fn plug<B: BlockBackend + ?Sized>(&mut self, addr: u64, nb: u16, backend: &mut B) -> Response {
        let Some((first, count)) = self.valid_range(addr, nb) else {
            return Response::Error;
        };
        if !self.bitmap.all_clear(first, count) {
            return Response::Error;
        }
        let bs = self.geometry.block_size;
        let (offset, len) = (first * bs, count * bs);
        // plugged_size + len cannot overflow: both are at most region_size, which fits with
        // addr in a u64. Checked anyway.
        match self.plugged_size().checked_add(len) {
            Some(total) if total <= self.requested_size => {}
            _ => return Response::Nack,
        }
        if self.busy {
            return Response::Busy;
        }
        if let Err(e) = backend.plug(offset, len) {
            // All or nothing (docs/virtio-mem.md §1.5): give back whatever was populated.
            if let Err(e2) = backend.unplug(offset, len) {
                log::warn!("virtio-mem: rolling back a failed plug also failed: {e2}");
            }
            return self.backend_failed("populating", offset, len, &e);
        }
        // Cannot fail: valid_range put the range inside the region.
        if self.bitmap.set_range(first, count).is_err() {
            return Response::Error;
        }
        Response::Ack(None)
    }

    /// UNPLUG (docs/virtio-mem.md §1.5, §3).
    fn unplug<B: BlockBackend + ?Sized>(
        &mut self,
        addr: u64,
        nb: u16,
        backend: &mut B,
    ) -> Response {
        let Some((first, count)) = self.valid_range(addr, nb) else {
            return Response::Error;
        };
        if !self.bitmap.all_set(first, count) {
            return Response::Error;
        }
        if self.busy {
            return Response::Busy;
        }
        let bs = self.geometry.block_size;
        let (offset, len) = (first * bs, count * bs);
        if let Err(e) = backend.unplug(offset, len) {
            // The blocks stay plugged: the guest has stopped using them and will retry.
            return self.backend_failed("discarding", offset, len, &e);
        }
        // Cannot fail: valid_range put the range inside the region.
        if self.bitmap.clear_range(first, count).is_err() {
            return Response::Error;
        }
        Response::Ack(None)
    }

    /// UNPLUG_ALL (docs/virtio-mem.md §1.5): ACK only with nothing plugged; `usable_region_size` may
    /// shrink here, with no config interrupt (docs/virtio-mem.md §1.3).
    fn unplug_all<B: BlockBackend + ?Sized>(&mut self, backend: &mut B) -> Response {
        if self.busy {
            return Response::Busy;
        }
        let bs = self.geometry.block_size;
        let mut pos = 0;
        while let Some(first) = self.bitmap.next_set(pos) {
            let end = self.bitmap.next_clear(first).unwrap_or(self.bitmap.len());
            let count = end - first;
            let (offset, len) = (first * bs, count * bs);
            if let Err(e) = backend.unplug(offset, len) {
                return self.backend_failed("discarding", offset, len, &e);
            }
            if self.bitmap.clear_range(first, count).is_err() {
                return Response::Error;
            }
            pos = end;
        }
        self.usable_region_size = self.geometry.usable_region_for(self.requested_size);
        Response::Ack(None)
    }

    /// STATE (docs/virtio-mem.md §1.5): ERROR for an invalid range, otherwise ACK with the state.
    fn state(&self, addr: u64, nb: u16) -> Response {
        let Some((first, count)) = self.valid_range(addr, nb) else {
            return Response::Error;
        };
        let state = if self.bitmap.all_set(first, count) {
            BlockState::Plugged
        } else if self.bitmap.all_clear(first, count) {
            BlockState::Unplugged
        } else {
            BlockState::Mixed
        };
        Response::Ack(Some(state))
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
