//! Snapshots: a paused VM saved to a directory and brought back in another process.
//!
//! The directory holds two files:
//! - `state.json` ([`VmSnapshot`]): the format tag and version, the VM's configuration, the
//!   in-kernel irqchip, PIT and clock, every vCPU, every device, and the table of memory
//!   ranges;
//! - `memory-ranges`: boot RAM and each virtio-mem device's plugged blocks, range after range
//!   (`memory_file`); unplugged blocks are never read or written, and zero pages are holes.

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod memory_file;
pub mod on_demand;
pub mod request;
pub mod url;

use serde::{Deserialize, Serialize};
use virtio_devices::mem::MemDeviceState;
use virtio_devices::transport::pci::VirtioPciState;

use crate::config::VmConfig;
use memory_file::SavedRange;

/// The state file's name in a snapshot directory.
pub const STATE_FILE: &str = "state.json";
/// The memory file's name in a snapshot directory.
pub const MEMORY_FILE: &str = "memory-ranges";
/// What `format` says in every Accordion snapshot.
pub const FORMAT: &str = "accordion-snapshot";
/// The version of the state this build writes, and the only one it reads.
pub const VERSION: u32 = 1;

/// Everything of a paused VM but its memory's contents.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmSnapshot {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The VM's configuration, with the sizes its resizes reached.
    pub config: VmConfig,
    /// The in-kernel PIC, IOAPIC and PIT, and the guest clock.
    pub vm: hypervisor::VmState,
    /// Every vCPU, in id order.
    pub vcpus: Vec<hypervisor::VcpuState>,
    pub devices: DevicesState,
    /// Where each range of guest memory is in the memory file.
    pub memory: Vec<SavedRange>,
}

/// A paused machine apart from its memory and configuration: what a snapshot's state file
/// and a migration's `State` carry.
#[derive(Debug, Serialize, Deserialize)]
pub struct MachineState {
    /// The in-kernel PIC, IOAPIC and PIT, and the guest clock.
    pub vm: hypervisor::VmState,
    /// Every vCPU, in id order.
    pub vcpus: Vec<hypervisor::VcpuState>,
    pub devices: DevicesState,
}

/// The devices the VMM emulates.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevicesState {
    pub serial: SerialState,
    /// Events the GED latched that the guest has not read.
    pub ged_pending: u8,
    /// The PCI host's CONFIG_ADDRESS latch (port 0xCF8).
    pub pci_config_address: u32,
    /// Each zone's virtio-mem device, in zone order.
    pub memory_devices: Vec<MemoryDeviceState>,
}

/// One virtio-mem device: its PCI function and its memory state.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemoryDeviceState {
    /// The zone's id.
    pub id: String,
    pub pci: VirtioPciState,
    pub mem: MemDeviceState,
}

/// The 16550A's registers and receive FIFO (vm-superio's `SerialState`, which has no serde).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

impl From<vm_superio::serial::SerialState> for SerialState {
    fn from(s: vm_superio::serial::SerialState) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialState> for vm_superio::serial::SerialState {
    fn from(s: &SerialState) -> Self {
        vm_superio::serial::SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

/// Why a snapshot could not be taken or brought back; the text names the file or the part
/// of the state.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Url(String),
    #[error("the destination {0} exists already: a snapshot goes into a new directory")]
    Exists(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an Accordion snapshot state: {reason}")]
    Parse { path: String, reason: String },
    #[error("the snapshot is version {found}; this Accordion reads version {VERSION}")]
    Version { found: u32 },
    #[error("the snapshot does not fit: {0}")]
    Invalid(String),
    #[error("this host cannot run the snapshot: {0}")]
    Host(String),
    #[error("the VM is not paused: PUT /api/v1/vm.pause first")]
    NotPaused,
    #[error("{0}")]
    Vm(String),
}

impl VmSnapshot {
    /// Parses and checks the state file's text: format, version, and ranges that fit a
    /// memory file of `memory_file_len` bytes without overlapping in it.
    pub fn parse(text: &[u8], path: &str, memory_file_len: u64) -> Result<Self, SnapshotError> {
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let parse_error = |e: serde_json::Error| SnapshotError::Parse {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let header: Header = serde_json::from_slice(text).map_err(parse_error)?;
        if header.format != FORMAT {
            return Err(SnapshotError::Parse {
                path: path.to_string(),
                reason: format!("format {:?}, not {FORMAT:?}", header.format),
            });
        }
        if header.version != VERSION {
            return Err(SnapshotError::Version {
                found: header.version,
            });
        }
        let snapshot: VmSnapshot = serde_json::from_slice(text).map_err(parse_error)?;
        snapshot.check_memory_table(memory_file_len)?;
        Ok(snapshot)
    }

    /// Each range lies inside the memory file, one after the other.
    fn check_memory_table(&self, file_len: u64) -> Result<(), SnapshotError> {
        let mut next = 0u64;
        for r in &self.memory {
            let end = r.offset.checked_add(r.len);
            if r.offset < next || end.is_none_or(|end| end > file_len) || r.len == 0 {
                return Err(SnapshotError::Invalid(format!(
                    "memory range {:#x}+{:#x} at file offset {:#x} does not fit the {file_len}-byte memory file",
                    r.gpa, r.len, r.offset
                )));
            }
            next = end.unwrap_or(u64::MAX);
        }
        Ok(())
    }
}
