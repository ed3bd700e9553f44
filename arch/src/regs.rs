//! Puts a vCPU in the state a boot protocol expects at the kernel's entry point.

use hypervisor::{kvm_fpu, kvm_regs, CpuIdEntry, Vcpu};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::gdt::{segment, BOOT_GDT};
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PVH_INFO_START, ZERO_PAGE_START,
};
use crate::loader::{BootEntry, BootProtocol};
use crate::{cpuid, msrs, paging, Error, Result};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
/// The task register needs a present, busy 32-bit TSS descriptor to enter protected mode.
const TSS_TYPE_BUSY: u8 = 0b1011;

fn vcpu_err(step: &'static str) -> impl FnOnce(hypervisor::HypervisorError) -> Error {
    move |source| Error::Vcpu { step, source }
}

/// Everything but the registers: CPUID, MSRs, FPU and LAPIC LINT pins. Done for every vCPU.
pub fn configure_vcpu(
    vcpu: &dyn Vcpu,
    supported_cpuid: &[CpuIdEntry],
    id: u32,
    count: u32,
) -> Result<()> {
    vcpu.set_cpuid(&cpuid::vcpu_cpuid(supported_cpuid, id, count))
        .map_err(vcpu_err("CPUID"))?;
    vcpu.set_msrs(&msrs::boot_msrs())
        .map_err(vcpu_err("MSRs"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(vcpu_err("FPU"))?;
    vcpu.setup_lint().map_err(vcpu_err("LAPIC LINT0/LINT1"))
}

/// Sets the boot vCPU's registers for `entry` (the others wait for INIT/SIPI).
pub fn setup_boot_registers(
    vcpu: &dyn Vcpu,
    mem: &GuestMemoryMmap,
    entry: &BootEntry,
) -> Result<()> {
    write_gdt(mem)?;
    let mut sregs = vcpu.sregs().map_err(vcpu_err("get sregs"))?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    let data = segment(3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(3);
    sregs.tr.selector = 0;
    sregs.tr.s = 0;
    sregs.tr.type_ = TSS_TYPE_BUSY;
    sregs.tr.limit = 0x67;
    sregs.tr.g = 0;

    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.entry_addr.0,
        ..Default::default()
    };
    match entry.protocol {
        BootProtocol::Pvh => {
            // 32-bit protected mode, paging off, %ebx = start info (PVH ABI).
            sregs.cs = segment(2);
            sregs.cr0 = X86_CR0_PE;
            sregs.cr4 = 0;
            regs.rbx = PVH_INFO_START;
        }
        BootProtocol::Linux64 => {
            // Long mode with identity paging, %rsi = boot_params (64-bit boot protocol).
            sregs.cs = segment(1);
            sregs.cr3 = paging::write_identity_tables(mem)?;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    vcpu.set_sregs(&sregs).map_err(vcpu_err("set sregs"))?;
    vcpu.set_regs(&regs).map_err(vcpu_err("set regs"))
}

fn write_gdt(mem: &GuestMemoryMmap) -> Result<()> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        let addr = BOOT_GDT_START + (i as u64) * 8;
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(|_| Error::GuestWrite { what: "GDT", addr })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| Error::GuestWrite {
            what: "IDT",
            addr: BOOT_IDT_START,
        })
}
