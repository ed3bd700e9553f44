// SPDX-License-Identifier: Apache-2.0

//! DSDT ("differentiated system description table").
//!
//! The DSDT carries the AML namespace: the devices the guest cannot discover by itself and the
//! objects its ACPI interpreter evaluates. Ours holds:
//!
//! - `\_SB_.COM1`: the 16550 UART (PNP0501) with its I/O ports and interrupt, so the guest's
//!   serial driver binds to it through ACPI.
//! - `\_SB_.PCI0` (only with a PCI host bridge): the PCI Express host bridge (PNP0A08, also
//!   PNP0A03 for older code) on segment 0, with the bus range, the 0xCF8..0xCFF config ports and
//!   the I/O and memory windows that BARs may be placed in.
//!   Its `_PRT` routes the INTA# of each function that offers INTx to a link device.
//! - `\_SB_.LNKn`: one PCI interrupt link (PNP0C0F) per INTx route, with one fixed GSI,
//!   edge-triggered and active high; see [`crate::PciIntxRoute`].
//! - `\_SB_.MBRD` (only with a PCI host bridge): a PNP0C02 "motherboard resources" device
//!   reserving the ECAM window. Linux uses the MCFG region only if firmware reserves it like this
//!   (or in the e820 map).
//! - `\_SB_.GED_`: a Generic Event Device (ACPI0013) through which the VMM raises ACPI events
//!   (the power button) on an interrupt, with its one-byte event register; see [`Ged`].
//! - `\_SB_.PWRB`: the power button (PNP0C0C), which the GED's `_EVT` notifies.
//! - `\_S5_`: the soft-off sleep type; see [`crate::S5_SLEEP_TYPE`].

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, And, Arg, Device, EISAName, Equal, Field, FieldAccessType,
    FieldEntry, FieldLockRule, FieldUpdateRule, If, Interrupt, Local, Memory32Fixed, Method, Name,
    Notify, OpRegion, OpRegionSpace, Package, Path, ResourceTemplate, Scope, Store, IO, ZERO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use crate::{
    AcpiConfig, PciHostBridge, GED_EVENT_POWER_BUTTON, GED_PORT_COUNT, OEM_ID, OEM_REVISION,
    OEM_TABLE_ID, S5_SLEEP_TYPE,
};

/// DSDT revision; 2 or more makes AML integers 64 bits wide.
const DSDT_REVISION: u8 = 6;

/// First of the legacy PCI configuration ports (CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC).
const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
/// Number of ports from `PCI_CONFIG_IO_PORT` the host bridge decodes.
const PCI_CONFIG_IO_PORT_COUNT: u8 = 8;

/// `Notify` value "status change" (ACPI 6.5, 5.6.6): for a PNP0C0C device, the button was
/// pressed. Linux's button driver turns it into a KEY_POWER press and release.
const NOTIFY_STATUS_CHANGE: u8 = 0x80;

/// The COM1 UART: `\_SB_.COM1`.
struct Com1 {
    port: u16,
    irq: u8,
}

impl Aml for Com1 {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        Device::new(
            "COM1".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0501")),
                &Name::new("_UID".into(), &0u8),
                &Name::new(
                    "_CRS".into(),
                    &ResourceTemplate::new(vec![
                        // 8 registers, one port each.
                        &IO::new(self.port, self.port, 1, 8),
                        // Consumer, edge triggered, active high, exclusive: an ISA interrupt.
                        &Interrupt::new(true, true, false, false, self.irq.into()),
                    ]),
                ),
            ],
        )
        .to_aml_bytes(sink)
    }
}

/// The PCI host bridge: `\_SB_.PCI0`.
struct Pci0<'a>(&'a PciHostBridge);

impl Aml for Pci0<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let pci = self.0;
        let bus_range = AddressSpace::new_bus_number(u16::from(pci.bus_start), pci.bus_end.into());
        let config_ports = IO::new(
            PCI_CONFIG_IO_PORT,
            PCI_CONFIG_IO_PORT,
            1,
            PCI_CONFIG_IO_PORT_COUNT,
        );
        // All I/O ports but the config ports are forwarded to PCI.
        let io_below_config = AddressSpace::new_io(0u16, PCI_CONFIG_IO_PORT - 1, None);
        let io_above_config = AddressSpace::new_io(
            PCI_CONFIG_IO_PORT + u16::from(PCI_CONFIG_IO_PORT_COUNT),
            u16::MAX,
            None,
        );
        // The sizes are non-zero and the ranges do not wrap (`check_pci_host_bridge`).
        let mmio32 = AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            pci.mmio32_base,
            pci.mmio32_base
                .wrapping_add(pci.mmio32_size)
                .wrapping_sub(1),
            None,
        );
        let mmio64 = AddressSpace::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            pci.mmio64_base,
            pci.mmio64_base
                .wrapping_add(pci.mmio64_size)
                .wrapping_sub(1),
            None,
        );

        let mut resources: Vec<&dyn Aml> = vec![
            &bus_range,
            &config_ports,
            &io_below_config,
            &io_above_config,
        ];
        if pci.mmio32_size > 0 {
            resources.push(&mmio32);
        }
        if pci.mmio64_size > 0 {
            resources.push(&mmio64);
        }

        // _PRT: Package { Package { address 0xDDDDFFFF (any function), pin 0 (INTA#),
        // source \_SB_.LNKn, source index 0 } ... }.
        let addresses: Vec<u32> = pci
            .intx_routes
            .iter()
            .map(|r| u32::from(r.device) << 16 | 0xffff)
            .collect();
        let links: Vec<Path> = (0..pci.intx_routes.len())
            .map(|i| Path::new(&link_name(i)))
            .collect();
        let entries: Vec<Package> = addresses
            .iter()
            .zip(&links)
            .map(|(address, link)| Package::new(vec![address, &0u8, link, &0u8]))
            .collect();
        let prt = Package::new(entries.iter().map(|e| e as &dyn Aml).collect());
        let prt = Name::new("_PRT".into(), &prt);
        let crs = Name::new("_CRS".into(), &ResourceTemplate::new(resources));
        let hid = Name::new("_HID".into(), &EISAName::new("PNP0A08"));
        let cid = Name::new("_CID".into(), &EISAName::new("PNP0A03"));
        let seg = Name::new("_SEG".into(), &0u8);
        let uid = Name::new("_UID".into(), &0u8);
        let bbn = Name::new("_BBN".into(), &pci.bus_start);
        let mut children: Vec<&dyn Aml> = vec![&hid, &cid, &seg, &uid, &bbn, &crs];
        if !pci.intx_routes.is_empty() {
            children.push(&prt);
        }
        Device::new("PCI0".into(), children).to_aml_bytes(sink)
    }
}

/// The absolute name of the link device of INTx route `index` (below [`crate::MAX_INTX_ROUTES`]).
fn link_name(index: usize) -> String {
    format!("\\_SB_.LNK{index}")
}

/// A PCI interrupt link with one fixed GSI: `\_SB_.LNKn`. Linux's link driver
/// (drivers/acpi/pci_link.c) disables it (`_DIS`) at boot, then sets it (`_SRS`) to the one
/// interrupt `_PRS` offers and checks `_CRS`; both methods have nothing to do here.
struct IntxLink {
    index: usize,
    gsi: u32,
}

impl Aml for IntxLink {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        // Consumer, edge triggered, active high, exclusive.
        let interrupt = Interrupt::new(true, true, false, false, self.gsi);
        let resources = ResourceTemplate::new(vec![&interrupt]);
        let uid = self.index as u32;
        Device::new(
            format!("LNK{}", self.index).as_str().into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0C0F")),
                &Name::new("_UID".into(), &uid),
                // Present, enabled, functioning.
                &Name::new("_STA".into(), &0x0bu8),
                &Name::new("_PRS".into(), &resources),
                &Name::new("_CRS".into(), &resources),
                &Method::new("_SRS".into(), 1, false, vec![]),
                &Method::new("_DIS".into(), 0, false, vec![]),
            ],
        )
        .to_aml_bytes(sink)
    }
}

/// The reservation of the ECAM window: `\_SB_.MBRD`.
struct EcamReservation<'a>(&'a PciHostBridge);

impl Aml for EcamReservation<'_> {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let pci = self.0;
        // The whole ECAM window; `check_pci_host_bridge` made sure it does not wrap.
        let (base, size) = (pci.ecam_base, pci.ecam_size);
        let last = base.wrapping_add(size).wrapping_sub(1);
        let fixed32 = match (
            u32::try_from(base),
            u32::try_from(size),
            u32::try_from(last),
        ) {
            (Ok(base), Ok(size), Ok(_)) => Some(Memory32Fixed::new(true, base, size)),
            _ => None,
        };
        let anywhere =
            AddressSpace::new_memory(AddressSpaceCacheable::NotCacheable, true, base, last, None);
        let window: &dyn Aml = match &fixed32 {
            Some(fixed32) => fixed32,
            None => &anywhere,
        };

        Device::new(
            "MBRD".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0C02")),
                &Name::new("_UID".into(), &0u8),
                &Name::new("_CRS".into(), &ResourceTemplate::new(vec![window])),
            ],
        )
        .to_aml_bytes(sink)
    }
}

/// The Generic Event Device: `\_SB_.GED_`.
///
/// ```text
/// Device (GED_) {
///     Name (_HID, "ACPI0013")
///     Name (_UID, Zero)
///     Name (_CRS, ResourceTemplate () {
///         Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { <irq> }
///     })
///     OperationRegion (GDST, SystemIO, <port>, 1)
///     Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
///     Method (_EVT, 1, Serialized) {
///         If (Arg0 == <irq>) {
///             Local0 = GDAT
///             If (Local0 & GED_EVENT_POWER_BUTTON) { Notify (\_SB_.PWRB, 0x80) }
///         }
///     }
/// }
/// ```
///
/// Contract with the VMM's device behind it (the guest's side is this AML):
///
/// - The event register is one byte at I/O port `port` ([`GED_PORT_COUNT`] ports). A read
///   returns the events pending since the previous read, one bit each
///   ([`GED_EVENT_POWER_BUTTON`] is bit 0), and clears them. Writes are ignored.
/// - To raise events the VMM sets their bits and then signals GSI `irq`, edge-triggered and
///   active high. Linux's GED driver (drivers/acpi/evged.c) runs `_EVT` with the GSI number as
///   Arg0 in a threaded handler; `_EVT` reads the register once and acts on every bit it finds.
///   Bits set while `_EVT` runs are seen by the next interrupt, so the VMM signals the GSI
///   again for every event it adds (an interrupt that finds the register empty does nothing).
struct Ged {
    port: u16,
    irq: u32,
}

impl Aml for Ged {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        let region = OpRegion::new(
            "GDST".into(),
            OpRegionSpace::SystemIO,
            &self.port,
            &GED_PORT_COUNT,
        );
        let field = Field::new(
            "GDST".into(),
            FieldAccessType::Byte,
            FieldLockRule::NoLock,
            FieldUpdateRule::WriteAsZeroes,
            vec![FieldEntry::Named(*b"GDAT", 8)],
        );

        // Local0 = GDAT: one read, which also clears the pending events.
        let event_register = Path::new("GDAT");
        let read_events = Store::new(&Local(0), &event_register);
        // (Local0 & GED_EVENT_POWER_BUTTON), result to no target: non-zero means pressed.
        let power_button_bit = And::new(&ZERO, &Local(0), &GED_EVENT_POWER_BUTTON);
        let power_button = Path::new("\\_SB_.PWRB");
        let notify_power_button = Notify::new(&power_button, &NOTIFY_STATUS_CHANGE);
        let on_power_button = If::new(&power_button_bit, vec![&notify_power_button]);
        let is_ours = Equal::new(&Arg(0), &self.irq);
        let on_our_irq = If::new(&is_ours, vec![&read_events, &on_power_button]);
        let evt = Method::new("_EVT".into(), 1, true, vec![&on_our_irq]);

        Device::new(
            "GED_".into(),
            vec![
                &Name::new("_HID".into(), &"ACPI0013"),
                &Name::new("_UID".into(), &0u8),
                &Name::new(
                    "_CRS".into(),
                    &ResourceTemplate::new(vec![
                        // Consumer, edge triggered, active high, exclusive.
                        &Interrupt::new(true, true, false, false, self.irq),
                    ]),
                ),
                &region,
                &field,
                &evt,
            ],
        )
        .to_aml_bytes(sink)
    }
}

/// The power button: `\_SB_.PWRB`. On a hardware-reduced platform there is no fixed-feature
/// power button, so it is a control method device that the GED's `_EVT` notifies.
struct PowerButton;

impl Aml for PowerButton {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        Device::new(
            "PWRB".into(),
            vec![
                &Name::new("_HID".into(), &EISAName::new("PNP0C0C")),
                &Name::new("_UID".into(), &0u8),
            ],
        )
        .to_aml_bytes(sink)
    }
}

/// Builds the DSDT for `cfg` (whose PCI host bridge, if any, has been checked).
pub(crate) fn build(cfg: &AcpiConfig) -> Vec<u8> {
    let com1 = Com1 {
        port: cfg.com1_port,
        irq: cfg.com1_irq,
    };
    let pci = cfg
        .pci
        .as_ref()
        .map(|pci| (Pci0(pci), EcamReservation(pci)));

    let ged = Ged {
        port: cfg.ged_port,
        irq: cfg.ged_irq,
    };

    let links: Vec<IntxLink> = cfg
        .pci
        .iter()
        .flat_map(|pci| pci.intx_routes.iter())
        .enumerate()
        .map(|(index, route)| IntxLink {
            index,
            gsi: route.gsi,
        })
        .collect();

    let mut system_bus: Vec<&dyn Aml> = vec![&com1];
    if let Some((pci0, ecam)) = &pci {
        system_bus.push(pci0);
        system_bus.push(ecam);
    }
    system_bus.extend(links.iter().map(|l| l as &dyn Aml));
    system_bus.push(&ged);
    system_bus.push(&PowerButton);

    // \_S5_ = Package { SLP_TYPa, SLP_TYPb, reserved, reserved }.
    let s5 = Name::new(
        "_S5_".into(),
        &Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]),
    );

    let mut aml = Vec::new();
    Scope::new("\\_SB_".into(), system_bus).to_aml_bytes(&mut aml);
    s5.to_aml_bytes(&mut aml);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&aml);
    dsdt.as_slice().to_vec()
}
