//! The `vmm` thread (the main thread, after argument parsing): the control loop. At API
//! request it creates, boots, reboots and deletes VMs, so this filter is the broadest, as
//! Cloud Hypervisor's is: it opens and reads payload files, creates KVM VMs and vCPUs, maps
//! guest memory, and starts threads: the vCPU threads, and the virtio-mem device threads
//! when a driver starts its device (the vCPU that took the DRIVER_OK write hands that to
//! this thread). Both start under this filter, so it allows everything theirs allow too.

use super::kvm;
use super::rules::{
    any, arg_in, fcntl_in, ioctl_in, madvise_in, thread_runtime, thread_spawning, Result, Rules,
};

/// The KVM ioctls of building a VM and its vCPUs.
fn kvm_ioctls() -> Vec<u64> {
    let mut requests = vec![
        // KvmHypervisor::new: API version, capabilities and the MSRs a vCPU's state
        // carries; VM creation and CPUID.
        kvm::KVM_GET_API_VERSION(),
        kvm::KVM_CHECK_EXTENSION(),
        kvm::KVM_GET_MSR_INDEX_LIST(),
        kvm::KVM_CREATE_VM(),
        kvm::KVM_GET_SUPPORTED_CPUID(),
        kvm::KVM_GET_VCPU_MMAP_SIZE(),
        // The VM: irqchip, PIT, TSS, memory slots, irqfds, ioeventfds, MSI routes.
        kvm::KVM_CREATE_IRQCHIP(),
        kvm::KVM_CREATE_PIT2(),
        kvm::KVM_SET_TSS_ADDR(),
        kvm::KVM_SET_USER_MEMORY_REGION(),
        kvm::KVM_IRQFD(),
        kvm::KVM_IOEVENTFD(),
        kvm::KVM_SET_GSI_ROUTING(),
        // The vCPUs, set up for boot on this thread.
        kvm::KVM_CREATE_VCPU(),
        kvm::KVM_SET_CPUID2(),
        kvm::KVM_SET_MSRS(),
        kvm::KVM_GET_LAPIC(),
        kvm::KVM_SET_LAPIC(),
        kvm::KVM_SET_FPU(),
        kvm::KVM_GET_REGS(),
        kvm::KVM_SET_REGS(),
        kvm::KVM_GET_SREGS(),
        kvm::KVM_SET_SREGS(),
        // Snapshot and restore: the VM's and every vCPU's state (the vCPUs are parked).
        kvm::KVM_GET_IRQCHIP(),
        kvm::KVM_SET_IRQCHIP(),
        kvm::KVM_GET_CLOCK(),
        kvm::KVM_SET_CLOCK(),
        kvm::KVM_GET_PIT2(),
        kvm::KVM_SET_PIT2(),
        kvm::KVM_GET_MSRS(),
        kvm::KVM_GET_CPUID2(),
        kvm::KVM_GET_MP_STATE(),
        kvm::KVM_SET_MP_STATE(),
        kvm::KVM_GET_VCPU_EVENTS(),
        kvm::KVM_SET_VCPU_EVENTS(),
        kvm::KVM_GET_DEBUGREGS(),
        kvm::KVM_SET_DEBUGREGS(),
        kvm::KVM_GET_XSAVE(),
        kvm::KVM_SET_XSAVE(),
        kvm::KVM_GET_XCRS(),
        kvm::KVM_SET_XCRS(),
    ];
    requests.extend(super::vcpu::kvm_ioctls());
    requests
}

pub(super) fn rules() -> Result<Rules> {
    let mut rules = thread_runtime()?;
    rules.extend(thread_spawning()?);
    // The vCPU threads start under this filter, and so do the virtio-mem device threads
    // (the VMM thread starts them when a driver sets DRIVER_OK).
    rules.extend(super::vcpu::rules()?);
    rules.extend(super::virtio_mem::rules()?);
    // An OnDemand restore's loader starts under this filter.
    rules.extend(super::memory_loader::rules()?);
    // So does a live migration's thread.
    rules.extend(super::migration::rules()?);
    let mut ioctls = kvm_ioctls();
    // An OnDemand restore sets up its userfaultfd here.
    ioctls.extend(crate::snapshot::on_demand::setup_ioctls());
    ioctls.extend([
        // The terminal: raw mode for the serial console, and its restoration at exit.
        libc::TCGETS,
        libc::TCSETS,
        // Non-blocking descriptors.
        libc::FIONBIO,
    ]);
    rules.extend([
        ioctl_in(&ioctls)?,
        // Payload files (kernel, initramfs) from the command line or vm.create, the
        // --serial file, /dev/kvm for a new VM.
        any(libc::SYS_openat),
        any(libc::SYS_read),
        any(libc::SYS_pread64),
        any(libc::SYS_lseek),
        any(libc::SYS_statx),
        any(libc::SYS_newfstatat),
        any(libc::SYS_fstat),
        // The control loop over VM events, API requests and stdin.
        any(libc::SYS_epoll_create1),
        any(libc::SYS_epoll_ctl),
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_eventfd2),
        // Guest memory backed by a memfd (shared or hugetlb): create and size it.
        any(libc::SYS_memfd_create),
        any(libc::SYS_ftruncate),
        // Guest memory asks for transparent huge pages, or (thp=off) refuses them.
        madvise_in(&[libc::MADV_HUGEPAGE, libc::MADV_NOHUGEPAGE])?,
        // Descriptors: duplicated eventfds and the serial port's copy of stdout.
        fcntl_in(&[libc::F_DUPFD_CLOEXEC, libc::F_GETFD])?,
        any(libc::SYS_dup),
        // Kicking vCPU threads out of KVM_RUN with the kick signal.
        arg_in(
            libc::SYS_tgkill,
            2,
            &[u64::from(vmm_sys_util::signal::SIGRTMIN() as u32)],
        )?,
        // The once-a-second watch for stalled resizes.
        any(libc::SYS_timerfd_create),
        any(libc::SYS_timerfd_settime),
        // Pausing and stopping vCPUs polls every millisecond.
        any(libc::SYS_clock_nanosleep),
        // Snapshots: the directory and its two files (memory written positioned), synced;
        // a failed one is removed (which lists the directory). Restores read them back by
        // their data extents (lseek SEEK_DATA and SEEK_HOLE, above).
        any(libc::SYS_userfaultfd),
        any(libc::SYS_mkdir),
        any(libc::SYS_mkdirat),
        any(libc::SYS_pwrite64),
        any(libc::SYS_fsync),
        any(libc::SYS_getdents64),
        // Removing the API socket file at exit, and a failed snapshot.
        any(libc::SYS_unlink),
        any(libc::SYS_unlinkat),
        // A migration's destination binds its socket here (the thread accepts on it);
        // migrating turns dirty logging on and off on the memslots (above).
        any(libc::SYS_bind),
        any(libc::SYS_listen),
        // The end of the process.
        any(libc::SYS_exit_group),
    ]);
    Ok(rules)
}
