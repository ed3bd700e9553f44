//! What a base address register (BAR) is: its kind, what a device asks for, what it got,
//! and what the guest changed.

/// Number of BARs in a type-0 header.
pub const NUM_BARS: usize = 6;

/// The kinds of BAR this crate models. I/O-space BARs are not supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// A 32-bit memory BAR: one register, placed below 4 GiB.
    Memory32,
    /// A 64-bit memory BAR: two consecutive registers (low, high), placed anywhere.
    Memory64,
}

impl BarKind {
    /// Bits 2:1 of the BAR's low register (the memory "type" field).
    pub(crate) fn type_bits(self) -> u32 {
        match self {
            BarKind::Memory32 => 0b000,
            BarKind::Memory64 => 0b100,
        }
    }
}

/// A BAR a device wants: which register, how large, what kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRequest {
    /// BAR number, 0..=5 (0..=4 for a 64-bit BAR, which also uses `index + 1`).
    pub index: u8,
    /// Bytes the device decodes. The allocator rounds this up to a power of two of at least
    /// 4 KiB; the BAR then decodes the rounded size.
    pub size: u64,
    /// 32- or 64-bit.
    pub kind: BarKind,
    /// Whether reads have no side effects (the BAR's prefetchable bit).
    pub prefetchable: bool,
}

impl BarRequest {
    /// The region this request becomes once placed at `addr` with `size` bytes.
    pub fn placed(&self, addr: u64, size: u64) -> BarRegion {
        BarRegion {
            index: self.index,
            addr,
            size,
            kind: self.kind,
            prefetchable: self.prefetchable,
        }
    }
}

/// A BAR with its guest-physical place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    /// BAR number, 0..=5.
    pub index: u8,
    /// Guest-physical address of the first byte; a multiple of `size`.
    pub addr: u64,
    /// Bytes decoded; a power of two.
    pub size: u64,
    /// 32- or 64-bit.
    pub kind: BarKind,
    /// The BAR's prefetchable bit.
    pub prefetchable: bool,
}

/// The guest wrote a new address into a BAR. The VMM must move whatever it mapped at
/// `old_addr` (`size` bytes) to `new_addr`.
///
/// Size probing (writing all ones and reading the mask back) and restoring the old value
/// afterwards are not reported; a 64-bit BAR reprogrammed one register at a time is
/// reported once per register that changes the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarReprogram {
    /// BAR number, 0..=5.
    pub index: u8,
    /// Where the BAR was.
    pub old_addr: u64,
    /// Where the BAR is now.
    pub new_addr: u64,
    /// Bytes decoded by the BAR.
    pub size: u64,
    /// 32- or 64-bit.
    pub kind: BarKind,
}
