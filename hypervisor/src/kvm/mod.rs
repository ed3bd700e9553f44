//! KVM implementation of the hypervisor traits.

mod vcpu;
mod vm;

use std::sync::Arc;

use kvm_ioctls::{Cap, Kvm};

use crate::{ioctl_err, CpuIdEntry, Hypervisor, HypervisorError, Result, Vm};
pub use vcpu::KvmVcpu;
pub use vm::KvmVm;

/// Capabilities Accordion cannot run without.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::Pit2, "KVM_CAP_PIT2"),
    (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
];

/// The MTRR MSRs: the default type, and the fixed ranges (the variable ranges, 0x200 up, are
/// added as eight base/mask pairs).
const MTRR_MSRS: &[u32] = &[
    0x2ff, // IA32_MTRR_DEF_TYPE
    0x250, 0x258, 0x259, // IA32_MTRR_FIX64K_00000, FIX16K_80000, FIX16K_A0000
    0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f, // IA32_MTRR_FIX4K_*
];

/// The host's `/dev/kvm`.
pub struct KvmHypervisor {
    kvm: Kvm,
    /// The MSRs KVM saves and restores for a vCPU (`KVM_GET_MSR_INDEX_LIST`): what a vCPU's
    /// state carries.
    msrs: Arc<[u32]>,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm` and checks the API version and the capabilities we rely on.
    pub fn new() -> Result<Self> {
        let kvm = Kvm::new().map_err(HypervisorError::Open)?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(HypervisorError::ApiVersion(version));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(*cap) {
                return Err(HypervisorError::MissingCapability(name));
            }
        }
        let mut msrs: Vec<u32> = kvm
            .get_msr_index_list()
            .map_err(ioctl_err("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .to_vec();
        // KVM leaves the MTRRs out of its list (QEMU adds them too); a vCPU restored without
        // them would run with MTRRs off, all memory uncached. Ones this host lacks are skipped
        // when read.
        for index in MTRR_MSRS.iter().copied().chain(0x200..0x210) {
            if !msrs.contains(&index) {
                msrs.push(index);
            }
        }
        Ok(KvmHypervisor {
            kvm,
            msrs: msrs.into(),
        })
    }

    /// The MSRs a vCPU's state carries: KVM's own list of the ones to save, and the MTRRs.
    pub fn saved_msrs(&self) -> &[u32] {
        &self.msrs
    }
}

impl Hypervisor for KvmHypervisor {
    fn create_vm(&self) -> Result<Arc<dyn Vm>> {
        let fd = self.kvm.create_vm().map_err(ioctl_err("KVM_CREATE_VM"))?;
        Ok(Arc::new(KvmVm::new(fd, self.msrs.clone())))
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuIdEntry>> {
        let cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut entries = cpuid.as_slice().to_vec();
        // The in-kernel LAPIC emulates the TSC-deadline timer whatever the host CPU has, but
        // KVM_GET_SUPPORTED_CPUID leaves its bit to userspace (KVM's API documentation).
        // Without it Linux runs the LAPIC timer in one-shot mode, which it first has to
        // calibrate at boot.
        if self.kvm.check_extension(Cap::TscDeadlineTimer) {
            set_tsc_deadline_bit(&mut entries);
        }
        // KVM leaves the brand string leaves empty; a guest then names its CPU after the
        // family and model ("AMD 06/06"). Give it the host's, as QEMU's `-cpu host` and
        // Cloud Hypervisor do.
        fill_brand_string(&mut entries, host_cpuid);
        Ok(entries)
    }

    fn max_vcpus(&self) -> u32 {
        self.kvm.get_max_vcpus() as u32
    }

    fn max_memslots(&self) -> u32 {
        u32::try_from(self.kvm.get_nr_memslots()).unwrap_or(0)
    }
}

/// CPUID.01H:ECX bit 24: the LAPIC timer has TSC-deadline mode.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

fn set_tsc_deadline_bit(entries: &mut [CpuIdEntry]) {
    for e in entries.iter_mut().filter(|e| e.function == 1) {
        e.ecx |= CPUID_1_ECX_TSC_DEADLINE;
    }
}

/// CPUID leaves 0x80000002..=0x80000004: the processor brand string, 16 bytes each.
const BRAND_STRING_LEAVES: std::ops::RangeInclusive<u32> = 0x8000_0002..=0x8000_0004;

/// The host CPU's answer to CPUID `leaf` (subleaf 0) as `[eax, ebx, ecx, edx]`.
fn host_cpuid(leaf: u32) -> [u32; 4] {
    // SAFETY: CPUID exists on every x86-64 CPU and only writes the four registers that
    // `__cpuid` returns.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid(leaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Puts the host's brand string into the brand string leaves KVM offers empty, when the
/// host has one (its highest extended leaf reaches them).
fn fill_brand_string(entries: &mut [CpuIdEntry], host: impl Fn(u32) -> [u32; 4]) {
    if host(0x8000_0000)[0] < *BRAND_STRING_LEAVES.end() {
        return;
    }
    for e in entries
        .iter_mut()
        .filter(|e| BRAND_STRING_LEAVES.contains(&e.function))
    {
        if [e.eax, e.ebx, e.ecx, e.edx] == [0; 4] {
            [e.eax, e.ebx, e.ecx, e.edx] = host(e.function);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_deadline_goes_into_leaf_1_only() {
        let mut entries = [
            CpuIdEntry {
                function: 0,
                ..Default::default()
            },
            CpuIdEntry {
                function: 1,
                ecx: 1,
                ..Default::default()
            },
        ];
        set_tsc_deadline_bit(&mut entries);
        assert_eq!(entries[0].ecx, 0);
        assert_eq!(entries[1].ecx, 1 | (1 << 24));
    }

    fn leaf(function: u32, eax: u32) -> CpuIdEntry {
        CpuIdEntry {
            function,
            eax,
            ..Default::default()
        }
    }

    #[test]
    fn empty_brand_string_leaves_get_the_hosts() {
        let host = |leaf: u32| match leaf {
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            l => [l, l + 1, l + 2, l + 3],
        };
        let mut entries = [
            leaf(0x8000_0002, 0),
            leaf(0x8000_0003, 7),
            leaf(0x8000_0004, 0),
        ];
        fill_brand_string(&mut entries, host);
        assert_eq!(
            [
                entries[0].eax,
                entries[0].ebx,
                entries[0].ecx,
                entries[0].edx
            ],
            [0x8000_0002, 0x8000_0003, 0x8000_0004, 0x8000_0005]
        );
        assert_eq!(entries[1].eax, 7, "KVM's own answer stays");
        assert_eq!(entries[2].eax, 0x8000_0004);
        // A host without the leaves gives nothing.
        let mut entries = [leaf(0x8000_0002, 0)];
        fill_brand_string(&mut entries, |_| [0x8000_0001, 0, 0, 0]);
        assert_eq!(entries[0].eax, 0);
    }

    #[test]
    fn the_hosts_brand_string_reads_as_text() {
        let mut entries: Vec<CpuIdEntry> = BRAND_STRING_LEAVES.map(|l| leaf(l, 0)).collect();
        fill_brand_string(&mut entries, host_cpuid);
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|e| [e.eax, e.ebx, e.ecx, e.edx])
            .flat_map(u32::to_le_bytes)
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let model = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = model
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim())
            .unwrap_or_default();
        assert!(
            text.trim_matches(|c: char| c == '\0' || c == ' ')
                .starts_with(model),
            "{text:?} vs /proc/cpuinfo {model:?}"
        );
    }
}
