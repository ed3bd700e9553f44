//! Guest memory layout with virtio-mem regions: what the guest learns from the SRAT.
//! (Resizing comes with the virtio-mem device.)

mod common;

use common::{field, guest, Vmm, BOOT_TIMEOUT, EXIT_TIMEOUT, READY};

#[test]
#[ignore = "boots Linux: needs real KVM, run through scripts/run-tests.sh"]
fn hotplug_region_is_in_the_srat_and_not_in_ram() {
    // 512 MiB of boot RAM ends below 4 GiB: the 2 GiB region starts at 4 GiB.
    let mut vmm = Vmm::boot_guest(
        "srat-hotplug",
        &guest().vmlinux,
        "",
        &[
            "--memory",
            "size=512M,hotplug_method=virtio-mem,hotplug_size=2G",
        ],
    );
    let ready = vmm.wait_for(READY, BOOT_TIMEOUT);
    let kb = field(&ready, "memtotal_kb").unwrap_or(0);
    assert!(
        kb < 512 * 1024,
        "the region must not be RAM at boot: MemTotal {kb} kB"
    );
    let done = vmm.run_command("dmesg | grep 'SRAT: Node'");
    assert_eq!(field(&done, "rc"), Some(0), "{done}");
    assert!(
        vmm.serial_lines()
            .iter()
            .any(|l| l.contains("[mem 0x100000000-0x17fffffff] hotplug")),
        "the guest did not see the hotplug range in the SRAT"
    );
    vmm.send("poweroff -f");
    assert!(vmm.wait_exit(EXIT_TIMEOUT).success());
}
