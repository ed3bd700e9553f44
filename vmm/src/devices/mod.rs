//! The legacy devices Linux needs on our platform: COM1, the i8042 reset line, and the
//! ACPI sleep/reset registers.

pub mod acpi_power;
pub mod i8042;
pub mod serial;

pub use acpi_power::AcpiPowerDevice;
pub use i8042::I8042Device;
pub use serial::{SerialDevice, SerialOutput};
