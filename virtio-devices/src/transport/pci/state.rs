//! A virtio-pci function's state saved and brought back (snapshot, migration): its
//! configuration space, MSI-X, the common configuration with the queues, status, ISR and
//! vectors. The device behind it saves its own state.

use pci::{ConfigRestoreError, MsixRestoreError, MsixState, PciConfigurationState};
use serde::{Deserialize, Serialize};

/// One queue as the driver set it up, and where the device stood in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// The size the driver chose.
    pub size: u16,
    /// Whether the driver enabled it.
    pub ready: bool,
    /// Guest-physical address of the descriptor table.
    pub desc_table: u64,
    /// Guest-physical address of the driver (available) ring.
    pub avail_ring: u64,
    /// Guest-physical address of the device (used) ring.
    pub used_ring: u64,
    /// The next available entry the device will read.
    pub next_avail: u16,
    /// The next used entry the device will write.
    pub next_used: u16,
}

/// What [`crate::VirtioPciDevice::state`] saves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioPciState {
    /// The configuration space (BARs, command, capabilities).
    pub config: PciConfigurationState,
    /// The MSI-X table, PBA and control bits.
    pub msix: MsixState,
    /// The common configuration's feature selectors, driver features and queue selector.
    pub device_feature_select: u32,
    /// See `device_feature_select`.
    pub driver_feature_select: u32,
    /// The features the driver accepted.
    pub driver_features: u64,
    /// The selected queue.
    pub queue_select: u16,
    /// Every queue.
    pub queues: Vec<QueueState>,
    /// The device status byte.
    pub status: u8,
    /// The ISR byte.
    pub isr: u8,
    /// The configuration-change vector.
    pub config_vector: u16,
    /// Each queue's vector.
    pub queue_vectors: Vec<u16>,
    /// Whether the device ran (DRIVER_OK, activated): it is started again on restore.
    pub active: bool,
}

/// Why a function's state cannot be saved or brought back.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum StateError {
    #[error("the device runs: pause it before saving its state")]
    NotPaused,
    #[error("stopping the device: {0}")]
    Pause(#[source] crate::ResetError),
    #[error("the configuration space: {0}")]
    Config(#[from] ConfigRestoreError),
    #[error("MSI-X: {0}")]
    Msix(#[from] MsixRestoreError),
    #[error("{saved} queues saved; this device has {here}")]
    QueueCount { saved: usize, here: usize },
    #[error("queue {queue}: {reason}")]
    Queue { queue: usize, reason: String },
    #[error("vector {vector} is not one of the function's {vectors} MSI-X vectors")]
    Vector { vector: u16, vectors: u16 },
    #[error("state can only be brought back into a device the driver has not touched")]
    NotFresh,
    #[error("the driver features {driver:#x} are not all offered ({offered:#x})")]
    Features { driver: u64, offered: u64 },
    #[error("the device cannot be started again: {0}")]
    Activate(String),
}
