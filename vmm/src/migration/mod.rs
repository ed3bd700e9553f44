//! Live migration (docs/migration.md): a running VM moves to another Accordion over a unix
//! socket or TCP, in Cloud Hypervisor's framing ([`protocol`]) with Accordion's payloads.
//!
//! The source freezes every virtio-mem device (PLUG, UNPLUG and UNPLUG_ALL answered BUSY),
//! sends the configuration with the frozen block states, turns on dirty logging, and copies
//! boot RAM and the plugged blocks on its `migration` thread ([`source`]) in passes until
//! what is left fits the downtime; then the VMM thread pauses the VM and hands over its
//! state for the last pass. The destination's `migration` thread ([`destination`]) takes
//! the stream apart and asks its VMM thread to build the VM (from the configuration), to
//! restore it (from the state) and to start it (at Complete); memory it writes straight into
//! boot RAM and plugged blocks, and a range anywhere else fails the migration.

pub mod destination;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod protocol;
pub mod request;
pub mod source;
pub mod transport;

use serde::{Deserialize, Serialize};

use crate::config::VmConfig;
use crate::snapshot::{MachineState, MemoryDeviceState};

/// What `format` says in every `Config` payload.
pub const FORMAT: &str = "accordion-migration";

/// `Config`'s payload: the configuration and the frozen virtio-mem devices, whose plugged
/// blocks the destination makes ready and the memory passes keep to.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConfigPayload {
    /// [`FORMAT`].
    pub format: String,
    /// [`protocol::VERSION`].
    pub version: u8,
    pub config: VmConfig,
    pub memory_devices: Vec<MemoryDeviceState>,
}

/// `State`'s payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatePayload {
    pub machine: MachineState,
}

impl ConfigPayload {
    /// Parses and checks the format and version.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let payload: ConfigPayload = serde_json::from_slice(bytes)
            .map_err(|e| format!("the configuration cannot be read: {e}"))?;
        if payload.format != FORMAT || payload.version != protocol::VERSION {
            return Err(format!(
                "the configuration is {:?} version {}; this Accordion reads {FORMAT:?} version {}",
                payload.format,
                payload.version,
                protocol::VERSION
            ));
        }
        Ok(payload)
    }
}

/// Guest memory that may be sent or received: boot RAM and the plugged blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub gpa: u64,
    pub host: u64,
    pub len: u64,
}

impl Place {
    /// Whether `[gpa, gpa + len)` lies inside this place.
    pub fn holds(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.gpa
            && gpa
                .checked_add(len)
                .is_some_and(|end| end <= self.gpa + self.len)
    }
}

/// What the last migration did, for `vm.counters` and the events.
#[derive(Clone, Copy, Debug, Default)]
pub struct MigrationReport {
    /// Bytes written to the stream (headers and payloads included).
    pub bytes: u64,
    /// On the source, memory passes (the first and the last included); on the destination,
    /// `Memory` requests taken.
    pub passes: u64,
    /// From the pause to the destination's answer to Complete, in ms.
    pub downtime_ms: u64,
    /// The whole migration, in ms.
    pub total_ms: u64,
}
