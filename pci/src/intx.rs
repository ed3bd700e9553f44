//! Legacy INTx: the interrupt a PCI function raises when MSI-X is off.
//!
//! Each function that offers INTx has a line of its own (no sharing): pin INTA#, routed by
//! the DSDT's `_PRT` to an interrupt link device whose one GSI is edge-triggered and active
//! high. A function "pulses" its line for each event; the guest's handler reads the
//! function's own status (virtio's ISR) to learn why. Edge triggering is what makes a pulse
//! safe on KVM's in-kernel IOAPIC: an edge that comes while the previous interrupt is still
//! in service is latched and delivered after its EOI, where a level-triggered pin would drop
//! it.

use std::sync::Arc;

use hypervisor::Vm;
use vmm_sys_util::eventfd::EventFd;

/// The PCI interrupt pin register's value for INTA#.
pub const INTERRUPT_PIN_INTA: u8 = 1;
/// The GSIs given to INTx lines: the IOAPIC pins above the ISA interrupts.
pub const INTX_GSIS: std::ops::Range<u32> = 16..24;

/// A function's INTx line.
pub trait IntxLine: Send + Sync {
    /// Raises one edge on the line.
    fn pulse(&self) -> std::io::Result<()>;
}

/// An INTx line on KVM: an irqfd on the line's GSI (routed to its IOAPIC pin by KVM's
/// default routes, which [`crate::GsiRoutingTable`] keeps). A write to an irqfd is a pulse:
/// KVM raises and lowers the GSI. Dropping it unregisters the irqfd.
pub struct KvmIntx {
    vm: Arc<dyn Vm>,
    gsi: u32,
    irqfd: EventFd,
}

impl KvmIntx {
    /// The line on `gsi`, registered with `vm`.
    pub fn new(vm: Arc<dyn Vm>, gsi: u32) -> std::io::Result<Self> {
        let irqfd = EventFd::new(libc::EFD_NONBLOCK)?;
        vm.register_irqfd(&irqfd, gsi)
            .map_err(|e| std::io::Error::other(format!("irqfd on GSI {gsi}: {e}")))?;
        Ok(KvmIntx { vm, gsi, irqfd })
    }
}

impl IntxLine for KvmIntx {
    fn pulse(&self) -> std::io::Result<()> {
        self.irqfd.write(1)
    }
}

impl Drop for KvmIntx {
    fn drop(&mut self) {
        if let Err(e) = self.vm.unregister_irqfd(&self.irqfd, self.gsi) {
            log::warn!("INTx: unregistering the irqfd of GSI {}: {e}", self.gsi);
        }
    }
}
