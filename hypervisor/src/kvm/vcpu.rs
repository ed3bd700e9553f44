use kvm_bindings::{
    kvm_fpu, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::Arc;

use crate::state::MsrValue;
use crate::{ioctl_err, CpuIdEntry, HypervisorError, Result, Vcpu, VcpuState, VmExit};

/// A KVM vCPU.
pub struct KvmVcpu {
    fd: VcpuFd,
    /// The MSRs its state carries: KVM's `KVM_GET_MSR_INDEX_LIST`.
    saved_msrs: Arc<[u32]>,
}

impl KvmVcpu {
    pub(super) fn new(fd: VcpuFd, saved_msrs: Arc<[u32]>) -> Self {
        KvmVcpu { fd, saved_msrs }
    }

    fn read_msrs(&self, indices: &[u32]) -> Result<Vec<MsrValue>> {
        let mut out = Vec::with_capacity(indices.len());
        let mut rest = indices;
        while !rest.is_empty() {
            let entries: Vec<kvm_msr_entry> = rest
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs = Msrs::from_entries(&entries).map_err(|_| HypervisorError::Ioctl {
                op: "KVM_GET_MSRS (list too long)",
                source: kvm_ioctls::Error::new(libc::E2BIG),
            })?;
            let read = self
                .fd
                .get_msrs(&mut msrs)
                .map_err(ioctl_err("KVM_GET_MSRS"))?;
            out.extend(msrs.as_slice()[..read].iter().map(|e| MsrValue {
                index: e.index,
                data: e.data,
            }));
            // KVM stops at the first MSR this host does not have: skip it and go on.
            rest = rest.get(read + 1..).unwrap_or(&[]);
        }
        Ok(out)
    }
}

impl Vcpu for KvmVcpu {
    fn run(&mut self) -> Result<VmExit<'_>> {
        // The borrow checker cannot see that the exit data and the internal-error fields do
        // not overlap in use, so the latter is read through a pointer taken beforehand.
        let kvm_run: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
        match self.fd.run() {
            Ok(exit) => Ok(match exit {
                VcpuExit::IoIn(port, data) => VmExit::IoIn(port, data),
                VcpuExit::IoOut(port, data) => VmExit::IoOut(port, data),
                VcpuExit::MmioRead(addr, data) => VmExit::MmioRead(addr, data),
                VcpuExit::MmioWrite(addr, data) => VmExit::MmioWrite(addr, data),
                VcpuExit::Hlt => VmExit::Hlt,
                VcpuExit::Shutdown => VmExit::Shutdown,
                VcpuExit::FailEntry(reason, _) => VmExit::FailEntry { reason },
                VcpuExit::Intr => VmExit::Interrupted,
                VcpuExit::InternalError => {
                    // SAFETY: `kvm_run` points at the vCPU's mmapped run structure, which lives
                    // as long as `self.fd`; for this exit KVM filled the `internal` member.
                    let suberror = unsafe { (*kvm_run).__bindgen_anon_1.internal.suberror };
                    VmExit::InternalError { suberror }
                }
                other => VmExit::Unexpected(format!("{other:?}")),
            }),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                Ok(VmExit::Interrupted)
            }
            Err(e) if e.errno() == libc::EFAULT => {
                // SAFETY: `kvm_run` points at the vCPU's mmapped run structure, which lives as
                // long as `self.fd`; KVM fills `memory_fault` when it sets this exit reason.
                let gpa = unsafe {
                    ((*kvm_run).exit_reason == kvm_bindings::KVM_EXIT_MEMORY_FAULT).then(|| {
                        let fault = (*kvm_run).__bindgen_anon_1.memory_fault;
                        (fault.gpa, fault.size)
                    })
                };
                Ok(VmExit::MemoryFault { gpa })
            }
            Err(e) => Err(HypervisorError::Ioctl {
                op: "KVM_RUN",
                source: e,
            }),
        }
    }

    fn set_immediate_exit(&mut self, exit: bool) {
        self.fd.set_kvm_immediate_exit(u8::from(exit));
    }

    fn set_cpuid(&self, entries: &[CpuIdEntry]) -> Result<()> {
        let cpuid = CpuId::from_entries(entries).map_err(|_| HypervisorError::Ioctl {
            op: "KVM_SET_CPUID2 (too many entries)",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(ioctl_err("KVM_SET_CPUID2"))
    }

    fn msr(&self, index: u32) -> Result<u64> {
        self.read_msrs(&[index])?
            .first()
            .map(|m| m.data)
            .ok_or(HypervisorError::Ioctl {
                op: "KVM_GET_MSRS (no such MSR)",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            })
    }

    fn set_msrs(&self, msrs: &[(u32, u64)]) -> Result<()> {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let list = Msrs::from_entries(&entries).map_err(|_| HypervisorError::Ioctl {
            op: "KVM_SET_MSRS (list too long)",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let written = self.fd.set_msrs(&list).map_err(ioctl_err("KVM_SET_MSRS"))?;
        if written != entries.len() {
            return Err(HypervisorError::Ioctl {
                op: "KVM_SET_MSRS (an MSR was refused)",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        Ok(())
    }

    fn regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().map_err(ioctl_err("KVM_GET_REGS"))
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).map_err(ioctl_err("KVM_SET_REGS"))
    }

    fn sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().map_err(ioctl_err("KVM_GET_SREGS"))
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd.set_sregs(sregs).map_err(ioctl_err("KVM_SET_SREGS"))
    }

    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd.set_fpu(fpu).map_err(ioctl_err("KVM_SET_FPU"))
    }

    fn setup_lint(&self) -> Result<()> {
        const APIC_LVT0: usize = 0x350;
        const APIC_LVT1: usize = 0x360;
        const APIC_MODE_NMI: u32 = 0x4;
        const APIC_MODE_EXTINT: u32 = 0x7;
        fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
            (reg & !0x700) | (mode << 8)
        }
        let mut lapic = self.fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))?;
        for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
            let value = set_delivery_mode(u32::from_le_bytes(bytes), mode);
            for (i, b) in value.to_le_bytes().iter().enumerate() {
                lapic.regs[offset + i] = *b as libc::c_char;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(ioctl_err("KVM_SET_LAPIC"))
    }

    fn translate(&self, gva: u64) -> Result<Option<u64>> {
        let t = self
            .fd
            .translate_gva(gva)
            .map_err(ioctl_err("KVM_TRANSLATE"))?;
        Ok((t.valid != 0).then_some(t.physical_address))
    }

    fn complete_pending_exit(&mut self) -> Result<()> {
        self.set_immediate_exit(true);
        let result = match self.fd.run() {
            // Immediate exit: KVM completed what was pending and returned before entering.
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Ok(exit) => {
                log::warn!("the vCPU exited with {exit:?} instead of at once");
                Err(HypervisorError::Ioctl {
                    op: "KVM_RUN (immediate exit)",
                    source: kvm_ioctls::Error::new(libc::EBUSY),
                })
            }
            Err(e) => Err(HypervisorError::Ioctl {
                op: "KVM_RUN (immediate exit)",
                source: e,
            }),
        };
        self.set_immediate_exit(false);
        result
    }

    fn cpuid(&self) -> Result<Vec<CpuIdEntry>> {
        Ok(self
            .fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec())
    }

    fn state(&self) -> Result<VcpuState> {
        Ok(VcpuState {
            cpuid: self.cpuid()?,
            msrs: self.read_msrs(&self.saved_msrs)?,
            regs: self.regs()?,
            sregs: self.sregs()?,
            xsave: self.fd.get_xsave().map_err(ioctl_err("KVM_GET_XSAVE"))?,
            lapic: self.fd.get_lapic().map_err(ioctl_err("KVM_GET_LAPIC"))?,
            xcrs: self.fd.get_xcrs().ok(),
            mp_state: self
                .fd
                .get_mp_state()
                .map_err(ioctl_err("KVM_GET_MP_STATE"))?,
            events: self
                .fd
                .get_vcpu_events()
                .map_err(ioctl_err("KVM_GET_VCPU_EVENTS"))?,
            debugregs: self
                .fd
                .get_debug_regs()
                .map_err(ioctl_err("KVM_GET_DEBUGREGS"))?,
        })
    }

    fn set_state(&self, s: &VcpuState) -> Result<()> {
        // CPUID first: it decides which MSRs and xsave features exist.
        self.set_cpuid(&s.cpuid)?;
        self.set_sregs(&s.sregs)?;
        self.set_regs(&s.regs)?;
        // SAFETY: the buffer is a kvm_xsave read from KVM_GET_XSAVE on a vCPU with the same
        // CPUID, so its size matches what KVM expects.
        unsafe { self.fd.set_xsave(&s.xsave) }.map_err(ioctl_err("KVM_SET_XSAVE"))?;
        if let Some(xcrs) = &s.xcrs {
            self.fd.set_xcrs(xcrs).map_err(ioctl_err("KVM_SET_XCRS"))?;
        }
        self.fd
            .set_lapic(&s.lapic)
            .map_err(ioctl_err("KVM_SET_LAPIC"))?;
        let msrs: Vec<(u32, u64)> = s.msrs.iter().map(|m| (m.index, m.data)).collect();
        self.set_msrs(&msrs)?;
        self.fd
            .set_mp_state(kvm_mp_state {
                mp_state: s.mp_state.mp_state,
            })
            .map_err(ioctl_err("KVM_SET_MP_STATE"))?;
        self.fd
            .set_vcpu_events(&s.events)
            .map_err(ioctl_err("KVM_SET_VCPU_EVENTS"))?;
        self.fd
            .set_debug_regs(&s.debugregs)
            .map_err(ioctl_err("KVM_SET_DEBUGREGS"))
    }
}
