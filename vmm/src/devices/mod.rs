//! The legacy devices Linux needs on our platform: COM1, the i8042 reset line, the ACPI
//! sleep/reset registers, and the ACPI Generic Event Device (power button).

pub mod acpi_power;
pub mod ged;
pub mod i8042;
pub mod serial;
pub mod serial_output;

pub use acpi_power::AcpiPowerDevice;
pub use ged::GedDevice;
pub use i8042::I8042Device;
pub use serial::{SerialDevice, SerialOutput};
