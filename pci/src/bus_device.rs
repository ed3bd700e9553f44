//! The interface between the vCPU exit handlers and anything that decodes an address range.

/// A device that answers guest accesses to a port I/O or MMIO range.
///
/// `offset` is relative to the start of the range the device was registered at; `data` is
/// the access, 1, 2, 4 or 8 bytes in guest (little-endian) byte order. Implementations must
/// accept any offset and any length without panicking: both come from the guest.
pub trait BusDevice: Send {
    /// Fills `data` with what the guest reads at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Applies a guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}
