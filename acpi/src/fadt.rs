// SPDX-License-Identifier: Apache-2.0

//! FADT (signature `FACP`, "fixed ACPI description table").
//!
//! The FADT tells the guest what kind of ACPI platform it runs on. Ours is hardware-reduced
//! (ACPI 6.x, `HW_REDUCED_ACPI`): no PM1/PM2/PM timer/GPE blocks, no SCI, no FACS. What is left
//! for the guest to use:
//!
//! - `RESET_REG`/`RESET_VALUE` (with `RESET_REG_SUP`): an 8-bit I/O port the guest writes to
//!   reset (Linux's default x86 reboot method is this register).
//! - `SLEEP_CONTROL_REG` and `SLEEP_STATUS_REG`: 8-bit I/O ports; Linux powers off by writing
//!   SLP_TYP (from the DSDT's `\_S5_`) << 2 | SLP_EN to the control register. Linux offers ACPI
//!   power-off on a hardware-reduced platform only if both registers have a non-zero address.
//! - `X_DSDT`: where the DSDT is.
//! - The hypervisor vendor identity, for the curious guest.

use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use vm_memory::GuestAddress;

use crate::{aml_bytes, AcpiConfig, Error, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// "Hypervisor Vendor Identity" field (FADT offset 268), ASCII, as the bytes appear in the table.
pub(crate) const HYPERVISOR_VENDOR_ID: [u8; 8] = *b"ACCORDIO";

/// IA-PC boot architecture flag "VGA Not Present": keeps the guest from probing VGA ports.
/// The other flags stay clear: no legacy devices, no 8042 (the guest skips the i8042 probe),
/// MSI is supported, ASPM may be used, and a CMOS RTC is not ruled out.
pub(crate) const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IA-PC boot architecture flag "CMOS RTC Not Present": there is no MC146818 at ports
/// 0x70/0x71, so Linux neither registers rtc_cmos nor spins on its update-in-progress bit;
/// wall-clock time comes from kvmclock.
pub(crate) const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// An 8-bit, byte-accessed register in system I/O space.
fn io_port_register(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port.into(),
    )
}

/// Builds the FADT for `cfg`, pointing at the DSDT placed at `dsdt`.
pub(crate) fn build(cfg: &AcpiConfig, dsdt: GuestAddress) -> Result<Vec<u8>, Error> {
    for (register, port) in [
        ("RESET_REG", cfg.reset_port),
        ("SLEEP_CONTROL_REG", cfg.sleep_control_port),
        ("SLEEP_STATUS_REG", cfg.sleep_status_port),
    ] {
        if port == 0 {
            return Err(Error::ZeroPort { register });
        }
    }

    // FADTBuilder::new fills in revision 6.5 and the length; no FACS (firmware_ctrl stays 0),
    // which a hardware-reduced platform may omit.
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt.0)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .preferred_pm_profile(PmProfile::Unspecified);
    fadt.iapc_boot_arch =
        (IAPC_BOOT_ARCH_VGA_NOT_PRESENT | IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT).into();
    fadt.reset_reg = io_port_register(cfg.reset_port);
    fadt.reset_value = cfg.reset_value;
    fadt.sleep_control_reg = io_port_register(cfg.sleep_control_port);
    fadt.sleep_status_reg = io_port_register(cfg.sleep_status_port);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR_ID).into();

    Ok(aml_bytes(&fadt.finalize()))
}
