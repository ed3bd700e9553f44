//! MSI-X delivery on KVM: the GSI routing table every device shares ([`GsiRoutingTable`])
//! and a per-device group of vectors, one GSI route and one irqfd each ([`KvmMsiGroup`]).
//!
//! Only the [`hypervisor::Vm`] trait is used, so this works with any implementation of it.

mod msi_group;
mod routing;
#[cfg(test)]
mod tests;

pub use msi_group::KvmMsiGroup;
pub use routing::{GsiRoutingTable, FIRST_MSI_GSI, IOAPIC_PINS, LAST_MSI_GSI};
