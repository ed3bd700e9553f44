//! The transport-independent core of the virtio-mem device (device ID 24).
//!
//! Everything here follows docs/virtio-mem.md (the rules of the specification and the choices
//! made where it leaves room); doc comments cite its sections (§1.3 and so on).
//!
//! - [`config`]: the configuration space layout and the feature bits.
//! - [`bitmap`]: the packed bitmap of plugged blocks.
//! - [`request`]: the request and response wire formats.
//! - [`state`]: the device's memory state and the request-handling rules.
//! - [`discard`]: a [`BlockBackend`] over real host memory (`madvise`, `fallocate`).
//! - `saved`: the state saved for a snapshot or a migration ([`MemDeviceState`]).
//! - [`chain`]: one descriptor chain of the guest-request queue, read, handled and answered.
//!
//! The device built on it:
//!
//! - [`device`]: [`VirtioMem`], the [`crate::VirtioDevice`].
//! - `worker`: its device thread; `deferred`: the discards it does after answering.
//! - `shared`: the status it publishes ([`VirtioMemStatus`]) and the resizes it is asked for.
//! - [`handle`]: [`VirtioMemHandle`], the VMM's side (resize, status, plugged-size events).
//! - [`latency`]: request handling time.

pub mod bitmap;
pub mod chain;
pub mod config;
mod deferred;
pub mod device;
pub mod discard;
pub mod handle;
pub mod latency;
pub mod request;
mod saved;
mod shared;
pub mod state;
mod worker;
pub mod write_log;

#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
#[cfg(any(test, feature = "fuzzing"))]
pub mod testutil;

pub use bitmap::BlockBitmap;
pub use chain::{handle_chain, ChainError};
pub use config::{
    device_features, features_acceptable, VirtioMemConfig, CONFIG_SPACE_SIZE, VIRTIO_F_VERSION_1,
    VIRTIO_ID_MEM, VIRTIO_MEM_F_ACPI_PXM, VIRTIO_MEM_F_PERSISTENT_SUSPEND,
    VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE,
};
pub use device::{ThreadStartHook, VirtioMem, VirtioMemError, QUEUE_SIZE};
pub use discard::{Backing, DiscardError, HostMemoryBackend};
pub use handle::VirtioMemHandle;
pub use latency::{LatencyRecorder, LatencySummary, LATENCY_WINDOW};
pub use request::{
    BlockState, Request, RequestError, RequestType, Response, ResponseType, REQUEST_SIZE,
    RESPONSE_SIZE,
};
pub use saved::{MemDeviceState, SavedStateError};
pub use shared::{PluggedSizeChange, PluggedSizeListener, VirtioMemStatus};
pub use state::{
    BlockBackend, Counters, Discarded, MemGeometry, NoopBackend, ResizeError, SetupError,
    VirtioMemState, USABLE_REGION_MARGIN,
};
pub use write_log::WriteLog;
