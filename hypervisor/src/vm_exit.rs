/// Why `Vcpu::run` returned, in the terms the VMM dispatches on.
#[derive(Debug)]
pub enum VmExit<'a> {
    /// `in` from a port: fill `data`.
    IoIn(u16, &'a mut [u8]),
    /// `out` to a port.
    IoOut(u16, &'a [u8]),
    /// A read from an unmapped guest-physical address: fill `data`.
    MmioRead(u64, &'a mut [u8]),
    /// A write to an unmapped guest-physical address.
    MmioWrite(u64, &'a [u8]),
    /// The guest halted with no in-kernel irqchip to wait for interrupts.
    Hlt,
    /// Triple fault: the CPU would reset.
    Shutdown,
    /// KVM could not go on (emulation failure and the like).
    InternalError { suberror: u32 },
    /// The hardware refused to enter the guest.
    FailEntry { reason: u64 },
    /// `run` was interrupted by a signal or `immediate_exit`.
    Interrupted,
    /// KVM could not map guest memory the guest touched (`EFAULT`): its host memory is
    /// inaccessible. `gpa` and `size` when KVM said where (`KVM_EXIT_MEMORY_FAULT`).
    MemoryFault { gpa: Option<(u64, u64)> },
    /// Anything else, named for the log.
    Unexpected(String),
}
