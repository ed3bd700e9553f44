//! The x86-64 platform: where things live in guest memory, how the boot CPU is set up, and
//! how a Linux kernel is loaded for either the PVH or the 64-bit Linux boot protocol.

pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod layout;
pub mod loader;
pub mod msrs;
pub mod paging;
pub mod regs;
pub mod reset_vector;

pub use loader::{load_kernel, BootEntry, BootProtocol, KernelPayload};

/// What can go wrong setting up the platform, with the step and the address involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kernel image {path}: {source}")]
    KernelRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a PVH ELF vmlinux nor a bzImage")]
    UnknownKernelFormat { path: String },
    #[error("{path} is an ELF kernel without a PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhEntry { path: String },
    #[error("cannot load the kernel {path}: {reason}")]
    KernelLoad { path: String, reason: String },
    #[error("cannot read the initramfs {path}: {source}")]
    InitramfsRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest memory too small: the {what} would end at {needed:#x} but RAM below 3 GiB ends at {available:#x}; give more --memory")]
    MemoryTooSmall {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("kernel command line is invalid or too long (at most {max} bytes): {reason}")]
    Cmdline { max: usize, reason: String },
    #[error("cannot write {what} to guest memory at {addr:#x}")]
    GuestWrite { what: &'static str, addr: u64 },
    #[error("vCPU setup failed at {step}: {source}")]
    Vcpu {
        step: &'static str,
        #[source]
        source: hypervisor::HypervisorError,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
