//! A guest that cannot go on ends the VMM with a non-zero status and a log line that gives
//! the exit reason, RIP and the instruction bytes there. These run tiny hand-made kernels
//! (32-bit protected-mode code), which run on any KVM, the host's KVM-PVM included.

mod common;

use common::{tiny_elf_kernel, TempDir, Vmm, EXIT_TIMEOUT};

fn run_tiny(tag: &str, code: &[u8]) -> (std::process::ExitStatus, String) {
    let dir = TempDir::new(tag);
    let k = dir.path("kernel");
    std::fs::write(&k, tiny_elf_kernel(code, 0x1000, true)).unwrap();
    let mut vmm = Vmm::spawn(
        tag,
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "size=64M",
            "--serial",
            "off",
        ],
    );
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    (status, vmm.stderr())
}

#[test]
fn triple_fault_is_reported_with_rip_and_bytes() {
    // ud2 with an empty IDT: #UD -> #GP -> #DF -> triple fault.
    let (status, stderr) = run_tiny("triple-fault", &[0x0f, 0x0b]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("triple fault"), "{stderr}");
    // Intel VMX and KVM-PVM keep the faulting state; KVM on AMD SVM resets the vCPU on a
    // shutdown intercept, and then the log must say so rather than print the reset RIP.
    if stderr.contains("KVM on AMD resets a vCPU on shutdown") {
        assert!(!stderr.contains("instruction bytes at RIP"), "{stderr}");
    } else {
        assert!(stderr.contains("RIP=0x100000"), "{stderr}");
        assert!(
            stderr.contains("instruction bytes at RIP: 0f 0b"),
            "{stderr}"
        );
    }
}

#[test]
fn internal_error_is_reported_with_rip() {
    // mov eax, 0xd0000000; jmp eax: fetching code from the MMIO hole cannot be emulated.
    let (status, stderr) = run_tiny(
        "internal-error",
        &[0xb8, 0x00, 0x00, 0x00, 0xd0, 0xff, 0xe0],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("KVM internal error"), "{stderr}");
    assert!(stderr.contains("RIP=0xd0000000"), "{stderr}");
    assert!(stderr.contains("instruction bytes at RIP"), "{stderr}");
}
