//! The device status byte and its state machine (virtio 1.x §2.1, §3.1.1).
//!
//! The driver sets ACKNOWLEDGE, DRIVER, FEATURES_OK and DRIVER_OK in that order, may set
//! FAILED at any time, and writes 0 to reset the device. FEATURES_OK sticks only when the
//! device accepts the negotiated features; the driver reads the status back to find out.
//! DEVICE_NEEDS_RESET is the device's to set; the driver cannot set or clear it except by a
//! reset. A write that would clear a bit, or set one out of order, does not set that bit.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};

/// The driver has noticed the device.
pub const ACKNOWLEDGE: u8 = VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
/// The driver knows how to drive the device.
pub const DRIVER: u8 = VIRTIO_CONFIG_S_DRIVER as u8;
/// The driver is set up and ready to drive the device.
pub const DRIVER_OK: u8 = VIRTIO_CONFIG_S_DRIVER_OK as u8;
/// Feature negotiation is complete.
pub const FEATURES_OK: u8 = VIRTIO_CONFIG_S_FEATURES_OK as u8;
/// The device hit an error it cannot recover from.
pub const DEVICE_NEEDS_RESET: u8 = VIRTIO_CONFIG_S_NEEDS_RESET as u8;
/// The driver gave up on the device.
pub const FAILED: u8 = VIRTIO_CONFIG_S_FAILED as u8;

/// What a driver write to the status byte does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// 0 was written: reset the device.
    Reset,
    /// The status becomes `status`; `activate` when this write set DRIVER_OK.
    Set {
        /// The new status byte.
        status: u8,
        /// Whether the device must be activated now.
        activate: bool,
    },
}

/// The status after the driver writes `written` over `old`. `features_ok` is asked, only when
/// the write sets FEATURES_OK, whether the negotiated features are acceptable.
pub fn next_status(old: u8, written: u8, features_ok: impl FnOnce() -> bool) -> StatusChange {
    if written == 0 {
        return StatusChange::Reset;
    }
    let needs_reset = old & DEVICE_NEEDS_RESET;
    let mut status = old & !DEVICE_NEEDS_RESET;
    let adds = |bit: u8| written & bit != 0 && old & bit == 0;
    if adds(ACKNOWLEDGE) {
        status |= ACKNOWLEDGE;
    }
    if adds(DRIVER) && status & ACKNOWLEDGE != 0 {
        status |= DRIVER;
    }
    if adds(FEATURES_OK) && status & DRIVER != 0 && features_ok() {
        status |= FEATURES_OK;
    }
    let mut activate = false;
    if adds(DRIVER_OK) && status & FEATURES_OK != 0 && status & FAILED == 0 {
        status |= DRIVER_OK;
        activate = true;
    }
    if adds(FAILED) {
        status |= FAILED;
    }
    StatusChange::Set {
        status: status | needs_reset,
        activate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(status: u8, activate: bool) -> StatusChange {
        StatusChange::Set { status, activate }
    }

    #[test]
    fn the_normal_sequence() {
        let ok = || true;
        assert_eq!(next_status(0, ACKNOWLEDGE, ok), set(1, false));
        assert_eq!(next_status(1, 3, ok), set(3, false));
        assert_eq!(next_status(3, 0xb, ok), set(0xb, false));
        assert_eq!(next_status(0xb, 0xf, ok), set(0xf, true));
        // Writing DRIVER_OK again does not activate again.
        assert_eq!(next_status(0xf, 0xf, ok), set(0xf, false));
        assert_eq!(next_status(0xf, 0, ok), StatusChange::Reset);
    }

    #[test]
    fn features_ok_needs_acceptable_features() {
        assert_eq!(next_status(3, 0xb, || false), set(3, false));
        // Without FEATURES_OK, DRIVER_OK does not stick either.
        assert_eq!(next_status(3, 0xf, || false), set(3, false));
    }

    #[test]
    fn bits_out_of_order_do_not_stick() {
        let ok = || panic!("not asked");
        assert_eq!(next_status(0, DRIVER, ok), set(0, false));
        assert_eq!(next_status(1, FEATURES_OK, ok), set(1, false));
        assert_eq!(next_status(3, DRIVER_OK | 3, ok), set(3, false));
        assert_eq!(next_status(3, FAILED, ok), set(3 | FAILED, false));
        assert_eq!(
            next_status(0xb | FAILED, 0xf | FAILED, ok),
            set(0xb | FAILED, false)
        );
    }

    #[test]
    fn driver_cannot_clear_bits_or_touch_needs_reset() {
        let ok = || true;
        // Clearing DRIVER_OK by writing 0xb keeps it.
        assert_eq!(next_status(0xf, 0xb, ok), set(0xf, false));
        assert_eq!(
            next_status(0xf | DEVICE_NEEDS_RESET, 0xf, ok),
            set(0xf | DEVICE_NEEDS_RESET, false)
        );
        assert_eq!(
            next_status(0xf, 0xf | DEVICE_NEEDS_RESET, ok),
            set(0xf, false)
        );
        assert_eq!(next_status(DEVICE_NEEDS_RESET, 0, ok), StatusChange::Reset);
    }
}
