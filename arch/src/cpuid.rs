//! Per-vCPU CPUID: the host's supported set, with the topology leaves describing `count`
//! single-threaded cores in one package and this vCPU's APIC id.

use hypervisor::CpuIdEntry;

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
/// CPUID.1:EBX[15:8], CLFLUSH line size in 8-byte units: 64 bytes.
const CLFLUSH_LINE_SIZE: u32 = 8;
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` cores.
fn core_id_bits(count: u32) -> u32 {
    u32::BITS - count.saturating_sub(1).leading_zeros()
}

/// Adjusts `supported` for vCPU `id` of `count`.
pub fn vcpu_cpuid(supported: &[CpuIdEntry], id: u32, count: u32) -> Vec<CpuIdEntry> {
    let mut entries = supported.to_vec();
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (id << 24) | ((count & 0xff) << 16) | (CLFLUSH_LINE_SIZE << 8);
                e.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1.
                e.eax = (e.eax & 0x03ff_ffff) | ((count - 1) << 26);
            }
            LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
                e.edx = id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_id_bits(count);
                        e.ebx = count;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            LEAF_AMD_SIZE_IDS => {
                // ECX[7:0]: cores - 1; ECX[15:12]: APIC id bits for the core number.
                e.ecx = (e.ecx & !0xf0ff) | (core_id_bits(count) << 12) | (count - 1);
            }
            LEAF_AMD_EXT_APIC_ID => {
                e.eax = id;
                e.ebx = id & 0xff; // core id, one thread per core
                e.ecx = 0; // node 0
            }
            _ => {}
        }
    }
    entries
}

/// The feature registers a guest's code may depend on: `(leaf, subleaf, register name)`.
const FEATURE_REGISTERS: [(u32, u32, &str); 8] = [
    (0x1, 0, "ecx"),
    (0x1, 0, "edx"),
    (0x7, 0, "ebx"),
    (0x7, 0, "ecx"),
    (0x7, 0, "edx"),
    (0xd, 1, "eax"),
    (0x8000_0001, 0, "ecx"),
    (0x8000_0001, 0, "edx"),
];

/// Bits KVM sets in a running vCPU's CPUID from the guest's own control registers
/// (OSXSAVE from CR4.OSXSAVE, OSPKE from CR4.PKE): not the host's to offer.
fn os_controlled(leaf: u32, name: &str) -> u32 {
    match (leaf, name) {
        (0x1, "ecx") => 1 << 27,
        (0x7, "ecx") => 1 << 4,
        _ => 0,
    }
}

/// The feature bits `saved` (a vCPU's CPUID from another VM, to restore) has that `here`
/// (what this host gives the same vCPU, [`vcpu_cpuid`]) lacks, as "leaf 0x7.0 ebx bits
/// 0x..." texts; empty when a guest that ran with `saved` can run here.
pub fn missing_features(saved: &[CpuIdEntry], here: &[CpuIdEntry]) -> Vec<String> {
    // The subleaf only counts where KVM says it does: other leaves' index is not defined.
    let register = |entries: &[CpuIdEntry], leaf: u32, subleaf: u32, name: &str| {
        entries
            .iter()
            .find(|e| {
                e.function == leaf
                    && (e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0
                        || e.index == subleaf)
            })
            .map_or(0, |e| match name {
                "eax" => e.eax,
                "ebx" => e.ebx,
                "ecx" => e.ecx,
                _ => e.edx,
            })
    };
    FEATURE_REGISTERS
        .iter()
        .filter_map(|&(leaf, subleaf, name)| {
            let missing = register(saved, leaf, subleaf, name)
                & !register(here, leaf, subleaf, name)
                & !os_controlled(leaf, name);
            (missing != 0).then(|| format!("leaf {leaf:#x}.{subleaf} {name} bits {missing:#x}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuIdEntry {
        CpuIdEntry {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn features_the_host_lacks_are_named() {
        let mut saved = leaf(0x7, 0);
        saved.ebx = 0b1011;
        let mut here = leaf(0x7, 0);
        here.ebx = 0b0011;
        assert_eq!(
            missing_features(&[saved], &[here]),
            vec!["leaf 0x7.0 ebx bits 0x8".to_string()]
        );
        here.ebx = 0b1111;
        assert!(missing_features(&[saved], &[here]).is_empty());
        // OSPKE follows the guest's CR4: a running guest's CPUID has it, a new vCPU's not.
        saved.ecx = 1 << 4;
        assert!(missing_features(&[saved], &[here]).is_empty());
    }

    #[test]
    fn apic_id_and_count_in_leaf_1() {
        let out = vcpu_cpuid(&[leaf(1, 0)], 3, 4);
        assert_eq!(out[0].ebx >> 24, 3);
        assert_eq!((out[0].ebx >> 16) & 0xff, 4);
        assert_ne!(out[0].edx & EDX_HTT, 0);
        assert_ne!(out[0].ecx & ECX_HYPERVISOR, 0);
    }

    #[test]
    fn extended_topology_levels() {
        let out = vcpu_cpuid(&[leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)], 1, 3);
        assert_eq!((out[0].ebx, out[0].ecx >> 8, out[0].edx), (1, 1, 1));
        assert_eq!((out[1].eax, out[1].ebx, out[1].ecx >> 8), (2, 3, 2));
        assert_eq!(out[2].ecx >> 8, 0);
    }

    #[test]
    fn core_bits() {
        assert_eq!(core_id_bits(1), 0);
        assert_eq!(core_id_bits(2), 1);
        assert_eq!(core_id_bits(3), 2);
        assert_eq!(core_id_bits(8), 3);
    }
}
