//! MSI messages and the interface through which a device's MSI-X vectors reach the guest.
//!
//! [`crate::MsixConfig`] models what the guest sees (table, PBA, masks) and decides when a
//! vector may fire; an [`MsiInterruptGroup`] does the delivering. The VMM's implementation is
//! [`crate::KvmMsiGroup`] (one GSI route and one irqfd per vector); tests use a recorder.

use hypervisor::HypervisorError;

/// The message a vector sends: a DWORD write of `data` to the address `addr_hi:addr_lo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Message address, low 32 bits (for x86: 0xFEEx_xxxx, destination and mode).
    pub addr_lo: u32,
    /// Message address, high 32 bits (x86: extended destination id bits, or 0).
    pub addr_hi: u32,
    /// Message data (x86: vector, delivery mode, trigger mode).
    pub data: u32,
}

impl MsiMessage {
    /// The 64-bit message address.
    pub fn address(&self) -> u64 {
        u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo)
    }
}

/// Why delivering or routing an MSI failed.
#[derive(Debug, thiserror::Error)]
pub enum MsiError {
    /// The vector does not exist in this group.
    #[error("MSI vector {vector} does not exist (the group has {count} vectors)")]
    VectorOutOfRange {
        /// The vector asked for.
        vector: u16,
        /// How many vectors the group has.
        count: usize,
    },
    /// Every GSI KVM can route is taken.
    #[error("no free GSI for MSI vector {vector}: {source}")]
    NoFreeGsi {
        /// The vector that needed one.
        vector: u16,
        /// What the GSI allocator said.
        #[source]
        source: vm_allocator::Error,
    },
    /// An eventfd could not be created or written.
    #[error("cannot {op} the eventfd of MSI vector {vector}: {source}")]
    EventFd {
        /// What was being done ("create", "write").
        op: &'static str,
        /// The vector it belongs to.
        vector: u16,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// Registering the irqfd of a vector failed.
    #[error("cannot register the irqfd of MSI vector {vector} on GSI {gsi}: {source}")]
    Irqfd {
        /// The vector.
        vector: u16,
        /// Its GSI.
        gsi: u32,
        /// What the hypervisor said.
        #[source]
        source: HypervisorError,
    },
    /// Installing the GSI routing table failed.
    #[error("cannot install the GSI routing table ({routes} routes): {source}")]
    Routing {
        /// How many routes the table had.
        routes: usize,
        /// What the hypervisor said.
        #[source]
        source: HypervisorError,
    },
}

/// Delivers the MSI-X vectors of one device.
///
/// Called with the device's lock held, from vCPU threads (guest writes to the table or the
/// capability) and from device threads (interrupts), hence `Send + Sync` and `&self`.
pub trait MsiInterruptGroup: Send + Sync {
    /// Vector `vector` now sends `msg`, or is masked (by its own mask bit, the function mask,
    /// or MSI-X being disabled). A masked vector must not reach the guest.
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool) -> Result<(), MsiError>;
    /// Sends vector `vector`'s message now. Only called for unmasked vectors.
    fn trigger(&self, vector: u16) -> Result<(), MsiError>;
}
