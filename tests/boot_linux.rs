//! Boots the real Linux test guest (scripts/build-guest.sh) and checks what a user would:
//! the CPU count and memory the guest sees, power-off, and reboot.

mod common;

use common::{field, guest, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

/// MemTotal is RAM minus what the kernel keeps for itself (its image, page structs,
/// reserved low memory): assert it lands within that band of the configured size.
fn assert_memtotal(line: &str, ram_mib: u64) {
    let kb = field(line, "memtotal_kb").unwrap_or_else(|| panic!("no memtotal_kb in: {line}"));
    let ram_kb = ram_mib * 1024;
    assert!(
        kb <= ram_kb,
        "MemTotal {kb} kB exceeds the {ram_mib} MiB configured"
    );
    assert!(
        kb * 100 >= ram_kb * 85,
        "MemTotal {kb} kB is far below {ram_mib} MiB"
    );
}

fn boot_and_power_off(tag: &str, kernel: &std::path::Path, cpus: u64, ram_mib: u64) {
    let mut vmm = Vmm::boot_guest(
        tag,
        kernel,
        "",
        &[
            "--cpus",
            &format!("boot={cpus}"),
            "--memory",
            &format!("size={ram_mib}M"),
        ],
    );
    let ready = vmm.wait_for(READY, BOOT_TIMEOUT);
    assert_eq!(field(&ready, "cpus"), Some(cpus), "{ready}");
    assert_memtotal(&ready, ram_mib);
    vmm.send("poweroff -f");
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "guest poweroff must exit 0, got {status}\n{}",
        vmm.stderr()
    );
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn pvh_vmlinux_one_vcpu_boots_and_powers_off() {
    boot_and_power_off("pvh-1cpu", &guest().vmlinux, 1, 512);
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn bzimage_two_vcpus_boots_and_powers_off() {
    boot_and_power_off("bzimage-2cpu", &guest().bzimage, 2, 1024);
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn pvh_two_vcpus_with_ram_above_4g() {
    // 4 GiB of boot RAM: 3 GiB below the 32-bit hole, 1 GiB above 4 GiB.
    boot_and_power_off("pvh-2cpu-4g", &guest().vmlinux, 2, 4096);
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn bzimage_one_vcpu_boots() {
    boot_and_power_off("bzimage-1cpu", &guest().bzimage, 1, 512);
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn guest_reboot_boots_again_then_powers_off() {
    // One vCPU, to keep it short: a 2-vCPU reboot is covered by memory.rs's two-zone test.
    // (2-vCPU reboots once died of triple faults in a 2-vCPU test host: QEMU's TCG running
    // stale live-patched code, see docs/testing.md "The nested test host".)
    let mut vmm = Vmm::boot_guest("reboot", &guest().vmlinux, "", &["--cpus", "boot=1"]);
    let first = vmm.wait_for(READY, BOOT_TIMEOUT);
    assert_eq!(field(&first, "cpus"), Some(1));
    vmm.send("reboot -f");
    let second = vmm.wait_for(READY, BOOT_TIMEOUT);
    assert_eq!(field(&second, "cpus"), Some(1), "{second}");
    vmm.send("poweroff -f");
    let status = vmm.wait_exit(EXIT_TIMEOUT);
    assert!(
        status.success(),
        "exit after reboot+poweroff: {status}\n{}",
        vmm.stderr()
    );
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn serial_to_file_and_shell_commands() {
    let g = guest();
    let dir = common::TempDir::new("serial-file");
    let log = dir.path("serial.log");
    let serial = format!("file={}", log.display());
    let cmdline = format!("{} accordion.action=poweroff", g.cmdline);
    let mut vmm = Vmm::spawn(
        "serial-file",
        &[
            "--kernel",
            g.vmlinux.to_str().unwrap(),
            "--initramfs",
            g.initramfs.to_str().unwrap(),
            "--cmdline",
            &cmdline,
            "--serial",
            &serial,
        ],
    );
    let status = vmm.wait_exit(BOOT_TIMEOUT);
    assert!(status.success(), "{status}\n{}", vmm.stderr());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(READY),
        "serial file lacks the ready marker:\n{text}"
    );
}

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn serial_input_longer_than_the_uart_fifo_arrives_whole() {
    // The UART's receive FIFO holds 64 bytes; a 300-byte line must reach the guest whole
    // and at once, not wait for the next keystroke.
    let mut vmm = Vmm::boot_guest("long-input", &guest().vmlinux, "", &[]);
    vmm.wait_for(READY, BOOT_TIMEOUT);
    let padding = "x".repeat(250);
    let done = vmm.run_command(&format!("v={padding}; echo long-line-${{#v}}-$((6*7))"));
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
    assert!(
        vmm.serial_lines().iter().any(|l| l == "long-line-250-42"),
        "the guest did not get the whole line"
    );
    vmm.send("poweroff -f");
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
}
