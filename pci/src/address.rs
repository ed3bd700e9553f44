//! Decoding of the two configuration access mechanisms' addresses.

/// Which register of which function an access is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
    /// Register (dword index): 0..64 through the ports, 0..1024 through ECAM.
    pub register: usize,
}

/// CONFIG_ADDRESS bit 31: the next data port access is a configuration access.
pub const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;

impl PciAddress {
    /// Decodes a CONFIG_ADDRESS value (port 0xCF8): bus in bits 23:16, device 15:11, function
    /// 10:8, register 7:2. `None` when the enable bit (31) is clear.
    pub fn from_config_address(value: u32) -> Option<Self> {
        (value & CONFIG_ADDRESS_ENABLE != 0).then_some(PciAddress {
            bus: (value >> 16) as u8,
            device: ((value >> 11) & 0x1f) as u8,
            function: ((value >> 8) & 0x7) as u8,
            register: ((value >> 2) & 0x3f) as usize,
        })
    }

    /// Decodes an offset into the ECAM window (`bus << 20 | device << 15 | function << 12 |
    /// byte`), and returns the byte offset inside the register with it. `None` when the bus
    /// number is past 255.
    pub fn from_ecam_offset(offset: u64) -> Option<(Self, u64)> {
        let bus = u8::try_from(offset >> 20).ok()?;
        let address = PciAddress {
            bus,
            device: ((offset >> 15) & 0x1f) as u8,
            function: ((offset >> 12) & 0x7) as u8,
            register: ((offset & 0xfff) >> 2) as usize,
        };
        Some((address, offset & 0x3))
    }

    /// The CONFIG_ADDRESS value that selects this register.
    pub fn config_address(&self) -> u32 {
        CONFIG_ADDRESS_ENABLE
            | u32::from(self.bus) << 16
            | u32::from(self.device & 0x1f) << 11
            | u32::from(self.function & 0x7) << 8
            | ((self.register & 0x3f) as u32) << 2
    }

    /// The ECAM offset of this register.
    pub fn ecam_offset(&self) -> u64 {
        u64::from(self.bus) << 20
            | u64::from(self.device & 0x1f) << 15
            | u64::from(self.function & 0x7) << 12
            | ((self.register & 0x3ff) as u64) << 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_address_round_trip() {
        let a = PciAddress::from_config_address(0x8001_2a3c).unwrap();
        assert_eq!(
            a,
            PciAddress {
                bus: 1,
                device: 5,
                function: 2,
                register: 0xf
            }
        );
        assert_eq!(a.config_address(), 0x8001_2a3c);
        assert_eq!(PciAddress::from_config_address(0x0001_2a3c), None);
        // The low two bits are not part of the register number.
        let b = PciAddress::from_config_address(0x8000_0003).unwrap();
        assert_eq!(b.register, 0);
    }

    #[test]
    fn ecam_round_trip() {
        let (a, byte) = PciAddress::from_ecam_offset(0x0031_a106).unwrap();
        assert_eq!(
            a,
            PciAddress {
                bus: 3,
                device: 3,
                function: 2,
                register: 0x41
            }
        );
        assert_eq!(byte, 2);
        assert_eq!(a.ecam_offset(), 0x0031_a104);
        assert!(PciAddress::from_ecam_offset(0x1000_0000).is_none());
        assert!(PciAddress::from_ecam_offset(u64::MAX).is_none());
    }
}
