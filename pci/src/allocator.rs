//! Placement of BARs in the host bridge's two MMIO windows.
//!
//! 32-bit BARs go in the window below 4 GiB, 64-bit BARs in the window above. Each BAR is
//! a power of two of at least 4 KiB (so that it can be mapped and trapped page by page) and
//! sits at a multiple of its size, as the PCI specification requires of BAR addresses.
//! The windows are what the DSDT's `_CRS` for the host bridge must describe.

use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

use crate::bar::{BarKind, BarRegion, BarRequest};

/// The smallest BAR this allocator hands out.
pub const MIN_BAR_ALLOCATION: u64 = 4096;

/// A guest-physical address window; `size` 0 means no window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioWindow {
    /// First address.
    pub base: u64,
    /// Bytes.
    pub size: u64,
}

/// Why a window could not be set up or a BAR placed.
#[derive(Debug, thiserror::Error)]
pub enum AllocatorError {
    /// The window wraps around, or the 32-bit window reaches past 4 GiB.
    #[error("the {kind} MMIO window {base:#x}+{size:#x} is not valid: {reason}")]
    Window {
        /// "32-bit" or "64-bit".
        kind: &'static str,
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The BAR's size is 0 or rounds up past 2^63.
    #[error("BAR {index}: cannot allocate {size:#x} bytes")]
    Size {
        /// The BAR number.
        index: u8,
        /// The size asked for.
        size: u64,
    },
    /// The window has no room for the BAR (or there is no such window).
    #[error(
        "BAR {index}: no room for {size:#x} bytes in the {kind} MMIO window {base:#x}+{window:#x}"
    )]
    Exhausted {
        /// The BAR number.
        index: u8,
        /// Its (rounded) size.
        size: u64,
        /// "32-bit" or "64-bit".
        kind: &'static str,
        /// The window's base.
        base: u64,
        /// The window's size.
        window: u64,
        /// What the allocator said.
        #[source]
        source: vm_allocator::Error,
    },
    /// Freeing a region that was not allocated.
    #[error("BAR {index} at {addr:#x}+{size:#x} was not allocated here: {source}")]
    Free {
        /// The BAR number.
        index: u8,
        /// Its address.
        addr: u64,
        /// Its size.
        size: u64,
        /// What the allocator said.
        #[source]
        source: vm_allocator::Error,
    },
}

/// One window and its allocator (none when the window is empty).
#[derive(Debug)]
struct Window {
    kind: &'static str,
    range: MmioWindow,
    allocator: Option<AddressAllocator>,
}

impl Window {
    fn new(kind: &'static str, range: MmioWindow, limit: u64) -> Result<Self, AllocatorError> {
        let invalid = |reason| AllocatorError::Window {
            kind,
            base: range.base,
            size: range.size,
            reason,
        };
        if range.size == 0 {
            return Ok(Window {
                kind,
                range,
                allocator: None,
            });
        }
        let last = range
            .base
            .checked_add(range.size - 1)
            .ok_or_else(|| invalid("it wraps around"))?;
        if last > limit {
            return Err(invalid("it reaches past 4 GiB"));
        }
        let allocator = AddressAllocator::new(range.base, range.size)
            .map_err(|_| invalid("the allocator refused it"))?;
        Ok(Window {
            kind,
            range,
            allocator: Some(allocator),
        })
    }

    fn exhausted(&self, index: u8, size: u64, source: vm_allocator::Error) -> AllocatorError {
        AllocatorError::Exhausted {
            index,
            size,
            kind: self.kind,
            base: self.range.base,
            window: self.range.size,
            source,
        }
    }
}

/// Allocates BARs in a 32-bit and a 64-bit MMIO window.
#[derive(Debug)]
pub struct BarAllocator {
    mmio32: Window,
    mmio64: Window,
}

impl BarAllocator {
    /// Allocator over `mmio32` (must end at or below 4 GiB) and `mmio64`. Either may be
    /// empty (`size` 0), and then BARs of that kind cannot be placed.
    pub fn new(mmio32: MmioWindow, mmio64: MmioWindow) -> Result<Self, AllocatorError> {
        Ok(BarAllocator {
            mmio32: Window::new("32-bit", mmio32, u64::from(u32::MAX))?,
            mmio64: Window::new("64-bit", mmio64, u64::MAX)?,
        })
    }

    /// The 32-bit window, for the host bridge's `_CRS`.
    pub fn mmio32_window(&self) -> MmioWindow {
        self.mmio32.range
    }

    /// The 64-bit window, for the host bridge's `_CRS`.
    pub fn mmio64_window(&self) -> MmioWindow {
        self.mmio64.range
    }

    /// The size a BAR of `size` bytes gets: the next power of two, at least 4 KiB.
    pub fn bar_size(size: u64) -> Option<u64> {
        (size > 0)
            .then(|| size.max(MIN_BAR_ALLOCATION).checked_next_power_of_two())
            .flatten()
    }

    /// Places `request` in the window of its kind, aligned to its (rounded) size.
    pub fn allocate(&mut self, request: &BarRequest) -> Result<BarRegion, AllocatorError> {
        let index = request.index;
        let size = Self::bar_size(request.size).ok_or(AllocatorError::Size {
            index,
            size: request.size,
        })?;
        let window = self.window_mut(request.kind);
        let allocated = match window.allocator.as_mut() {
            Some(allocator) => allocator.allocate(size, size, AllocPolicy::FirstMatch),
            None => Err(vm_allocator::Error::ResourceNotAvailable),
        };
        let range = allocated.map_err(|e| window.exhausted(index, size, e))?;
        Ok(request.placed(range.start(), size))
    }

    /// Gives back a region [`allocate`](Self::allocate) returned.
    pub fn free(&mut self, region: &BarRegion) -> Result<(), AllocatorError> {
        let free_error = |source| AllocatorError::Free {
            index: region.index,
            addr: region.addr,
            size: region.size,
            source,
        };
        let window = self.window_mut(region.kind);
        let allocator = window
            .allocator
            .as_mut()
            .ok_or_else(|| free_error(vm_allocator::Error::ResourceNotAvailable))?;
        let last = region
            .addr
            .checked_add(region.size.saturating_sub(1))
            .ok_or_else(|| free_error(vm_allocator::Error::Overflow))?;
        let range = RangeInclusive::new(region.addr, last).map_err(free_error)?;
        allocator.free(&range).map_err(free_error)
    }

    fn window_mut(&mut self, kind: BarKind) -> &mut Window {
        match kind {
            BarKind::Memory32 => &mut self.mmio32,
            BarKind::Memory64 => &mut self.mmio64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(index: u8, size: u64, kind: BarKind) -> BarRequest {
        BarRequest {
            index,
            size,
            kind,
            prefetchable: false,
        }
    }

    fn allocator() -> BarAllocator {
        BarAllocator::new(
            MmioWindow {
                base: 0xc000_0000,
                size: 0x1000_0000,
            },
            MmioWindow {
                base: 0x40_0000_0000,
                size: 0x40_0000_0000,
            },
        )
        .unwrap()
    }

    #[test]
    fn sizes_round_up_to_powers_of_two_of_at_least_4k() {
        assert_eq!(BarAllocator::bar_size(1), Some(0x1000));
        assert_eq!(BarAllocator::bar_size(0x1001), Some(0x2000));
        assert_eq!(BarAllocator::bar_size(0x8_0000), Some(0x8_0000));
        assert_eq!(BarAllocator::bar_size(0), None);
        assert_eq!(BarAllocator::bar_size(u64::MAX), None);
    }

    #[test]
    fn bars_are_naturally_aligned_in_their_window() {
        let mut a = allocator();
        let small = a.allocate(&request(0, 0x100, BarKind::Memory32)).unwrap();
        assert_eq!((small.addr, small.size), (0xc000_0000, 0x1000));
        let big = a
            .allocate(&request(1, 0x10_0000, BarKind::Memory32))
            .unwrap();
        assert_eq!(big.addr, 0xc010_0000, "aligned to its 1 MiB size");
        let high = a
            .allocate(&request(2, 0x8_0000, BarKind::Memory64))
            .unwrap();
        assert_eq!((high.addr, high.size), (0x40_0000_0000, 0x8_0000));
        assert_eq!(high.kind, BarKind::Memory64);
        assert_eq!(a.mmio32_window().base, 0xc000_0000);
        assert_eq!(a.mmio64_window().size, 0x40_0000_0000);
    }

    #[test]
    fn exhaustion_and_free() {
        let mut a = allocator();
        let whole = a
            .allocate(&request(0, 0x1000_0000, BarKind::Memory32))
            .unwrap();
        let err = a
            .allocate(&request(1, 0x1000, BarKind::Memory32))
            .unwrap_err();
        assert!(matches!(err, AllocatorError::Exhausted { index: 1, .. }));
        assert!(err.to_string().contains("32-bit"));
        a.free(&whole).unwrap();
        let page = a.allocate(&request(1, 0x1000, BarKind::Memory32)).unwrap();
        assert_eq!(page.addr, 0xc000_0000);
        let never = BarRegion {
            addr: 0xc000_2000,
            ..page
        };
        assert!(matches!(a.free(&never), Err(AllocatorError::Free { .. })));
    }

    #[test]
    fn empty_and_invalid_windows() {
        let mut a = BarAllocator::new(MmioWindow::default(), MmioWindow::default()).unwrap();
        assert!(matches!(
            a.allocate(&request(0, 0x1000, BarKind::Memory64)),
            Err(AllocatorError::Exhausted { .. })
        ));
        let past_4g = MmioWindow {
            base: 0xf000_0000,
            size: 0x2000_0000,
        };
        assert!(matches!(
            BarAllocator::new(past_4g, MmioWindow::default()),
            Err(AllocatorError::Window { .. })
        ));
        let wraps = MmioWindow {
            base: u64::MAX,
            size: 2,
        };
        assert!(BarAllocator::new(MmioWindow::default(), wraps).is_err());
    }
}
