//! A vCPU's and a VM's state taken from one KVM VM and put into a fresh one: the guest goes
//! on where it stopped. This is what snapshot/restore and live migration stand on. A tiny
//! guest (32-bit protected mode, no paging: it runs on any KVM, this machine's KVM-PVM too)
//! counts in EAX and writes the count to port 0x10. It runs here and, through
//! scripts/run-tests.sh, in the nested test host (AMD SVM), where an OUT is only finished at
//! the next KVM_RUN.

use std::sync::Arc;

use arch::{BootEntry, BootProtocol};
use hypervisor::kvm::KvmHypervisor;
use hypervisor::{Hypervisor, MemoryRegion, Vcpu, VcpuState, Vm, VmExit, VmState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

const ENTRY: u64 = 0x10_0000;
const MEMORY: usize = 2 << 20;
/// xor eax, eax; 1: inc eax; out 0x10, al; jmp 1b
const COUNTER: [u8; 7] = [0x31, 0xc0, 0x40, 0xe6, 0x10, 0xeb, 0xfb];
/// IA32_SYSENTER_ESP: an MSR the guest does not touch, set to a value to find again.
const MARKED_MSR: u32 = 0x175;

struct Machine {
    vm: Arc<dyn Vm>,
    vcpu: Box<dyn Vcpu>,
    mem: GuestMemoryMmap,
}

/// A VM with an irqchip, `MEMORY` bytes of RAM holding `image`, and one configured vCPU.
fn machine(hypervisor: &KvmHypervisor, image: &[u8]) -> Machine {
    let vm = hypervisor.create_vm().expect("a VM");
    vm.create_platform_irqchip().expect("irqchip");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("RAM");
    let region = mem.iter().next().expect("one region");
    let host = region
        .get_host_address(vm_memory::MemoryRegionAddress(0))
        .expect("host address");
    vm.set_memory_region(MemoryRegion {
        slot: 0,
        guest_addr: 0,
        size: MEMORY as u64,
        host_addr: host as u64,
        log_dirty: false,
    })
    .expect("memslot");
    mem.write_slice(image, GuestAddress(0)).expect("image");
    let vcpu = vm.create_vcpu(0).expect("vCPU");
    let cpuid = hypervisor.supported_cpuid().expect("CPUID");
    arch::regs::configure_vcpu(&*vcpu, &cpuid, 0, 1).expect("configure");
    Machine { vm, vcpu, mem }
}

/// Runs until the guest writes to port 0x10; returns the byte.
fn next_count(vcpu: &mut dyn Vcpu) -> u8 {
    for _ in 0..100 {
        match vcpu.run().expect("KVM_RUN") {
            VmExit::IoOut(0x10, data) => return data[0],
            VmExit::Interrupted => continue,
            other => panic!("unexpected exit {other:?}"),
        }
    }
    panic!("no count in 100 exits")
}

fn msr(state: &VcpuState, index: u32) -> Option<u64> {
    state.msrs.iter().find(|m| m.index == index).map(|m| m.data)
}

#[test]
fn a_vcpu_and_its_vm_go_on_in_another_vm() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let hypervisor = KvmHypervisor::new().expect("KVM");
    let mut image = vec![0u8; MEMORY];
    image[ENTRY as usize..ENTRY as usize + COUNTER.len()].copy_from_slice(&COUNTER);
    let mut source = machine(&hypervisor, &image);
    let entry = BootEntry {
        protocol: BootProtocol::Pvh,
        entry_addr: GuestAddress(ENTRY),
    };
    arch::regs::setup_boot_registers(&*source.vcpu, &source.mem, &entry).expect("boot regs");
    for expected in 1..=3 {
        assert_eq!(next_count(&mut *source.vcpu), expected);
    }
    source
        .vcpu
        .set_msrs(&[(MARKED_MSR, 0xdead_beef)])
        .expect("mark an MSR");
    // The last exit was an OUT: KVM finishes it (on AMD, moves RIP past it) at the next
    // KVM_RUN, which must happen before the state is taken.
    source
        .vcpu
        .complete_pending_exit()
        .expect("complete the OUT");
    let vcpu_state = source.vcpu.state().expect("vCPU state");
    let vm_state: VmState = source.vm.state().expect("VM state");

    // KVM's own list of MSRs to save, not a fixed one: every MSR it lists that this host
    // can read is in the state.
    let listed = hypervisor.saved_msrs();
    assert!(
        vcpu_state.msrs.len() > 19 && vcpu_state.msrs.len() <= listed.len(),
        "{} MSRs saved of {} listed",
        vcpu_state.msrs.len(),
        listed.len()
    );
    assert!(vcpu_state.msrs.iter().all(|m| listed.contains(&m.index)));
    assert_eq!(msr(&vcpu_state, MARKED_MSR), Some(0xdead_beef));
    // The MTRR default type, set at boot and not in KVM's list, is carried too.
    let mtrr_def_type = msr(&vcpu_state, 0x2ff);
    assert_eq!(
        mtrr_def_type.map(|v| v & (1 << 11)),
        Some(1 << 11),
        "MTRRs on"
    );

    // The state survives serialization (what the snapshot file holds).
    let json = serde_json::to_vec(&(&vcpu_state, &vm_state)).expect("serialize");
    let (vcpu_state, vm_state): (VcpuState, VmState) =
        serde_json::from_slice(&json).expect("deserialize");

    // A fresh VM with a copy of the memory, and the state put in: the count goes on.
    let mut copy = vec![0u8; MEMORY];
    source
        .mem
        .read_slice(&mut copy, GuestAddress(0))
        .expect("read memory");
    drop(source);
    let mut target = machine(&hypervisor, &copy);
    target.vm.set_state(&vm_state).expect("set VM state");
    target.vcpu.set_state(&vcpu_state).expect("set vCPU state");
    assert_eq!(next_count(&mut *target.vcpu), 4, "the guest went on");
    assert_eq!(next_count(&mut *target.vcpu), 5);
    let after = target.vcpu.state().expect("state after");
    assert_eq!(msr(&after, MARKED_MSR), Some(0xdead_beef));
    assert_eq!(msr(&after, 0x2ff), mtrr_def_type);
    assert_eq!(after.regs.rax & 0xff, 5);
    assert_eq!(after.sregs.cs.selector, vcpu_state.sregs.cs.selector);
}
