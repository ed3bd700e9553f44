//! Bad input is refused before any guest runs, with one line naming the problem.

mod common;

use common::{run_to_exit, tiny_elf_kernel, TempDir};

fn assert_refused(args: &[&str], needles: &[&str]) -> String {
    let (status, stderr) = run_to_exit(args);
    // docs/cli.md: exit status 1 for bad configuration or input.
    assert_eq!(
        status.code(),
        Some(1),
        "accordion {args:?} should fail with 1; stderr: {stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr of {args:?} lacks '{n}':\n{stderr}"
        );
    }
    stderr
}

#[test]
fn missing_kernel_is_named() {
    let stderr = assert_refused(
        &["--kernel", "/nonexistent/vmlinux"],
        &["--kernel", "/nonexistent/vmlinux", "No such file"],
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn kernel_that_is_a_directory_is_refused() {
    let dir = TempDir::new("kernel-dir");
    assert_refused(
        &["--kernel", dir.0.to_str().unwrap()],
        &["--kernel", "not a regular file"],
    );
}

#[test]
fn kernel_option_is_required() {
    // A malformed command line: exit status 2.
    let (status, stderr) = run_to_exit(&[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kernel"), "{stderr}");
}

#[test]
fn unknown_option_is_named() {
    let (status, stderr) = run_to_exit(&["--kernel", "/x", "--frobnicate"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--frobnicate"), "{stderr}");
}

#[test]
fn zero_vcpus_is_refused() {
    let dir = TempDir::new("zero-vcpus");
    let k = dir.path("k");
    std::fs::write(&k, tiny_elf_kernel(&[0xf4], 0x1000, true)).unwrap();
    let stderr = assert_refused(
        &["--kernel", k.to_str().unwrap(), "--cpus", "boot=0"],
        &["--cpus", "boot=0"],
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn bad_sizes_and_parameters_name_the_option() {
    let dir = TempDir::new("bad-sizes");
    let k = dir.path("k");
    std::fs::write(&k, tiny_elf_kernel(&[0xf4], 0x1000, true)).unwrap();
    let k = k.to_str().unwrap();
    assert_refused(
        &["--kernel", k, "--memory", "size=12Q"],
        &["--memory", "12Q"],
    );
    assert_refused(
        &["--kernel", k, "--memory", "size=1M"],
        &["--memory", "minimum"],
    );
    assert_refused(
        &["--kernel", k, "--memory", "bogus=1"],
        &["--memory", "bogus"],
    );
    assert_refused(&["--kernel", k, "--cpus", "boot=x"], &["--cpus"]);
    assert_refused(&["--kernel", k, "--serial", "pty"], &["--serial", "pty"]);
    assert_refused(&["--kernel", k, "--console", "tty"], &["--console"]);
}

#[test]
fn file_that_is_no_kernel_is_refused() {
    let dir = TempDir::new("not-a-kernel");
    let k = dir.path("random.bin");
    std::fs::write(&k, vec![0x5au8; 64 * 1024]).unwrap();
    assert_refused(
        &["--kernel", k.to_str().unwrap()],
        &["random.bin", "neither a PVH ELF vmlinux nor a bzImage"],
    );
}

#[test]
fn elf_without_pvh_note_is_refused() {
    let dir = TempDir::new("no-pvh");
    let k = dir.path("vmlinux-no-pvh");
    std::fs::write(&k, tiny_elf_kernel(&[0xf4], 0x1000, false)).unwrap();
    assert_refused(
        &["--kernel", k.to_str().unwrap()],
        &["vmlinux-no-pvh", "PVH"],
    );
}

#[test]
fn kernel_larger_than_memory_is_refused() {
    let dir = TempDir::new("too-small");
    let k = dir.path("big-kernel");
    // The segment reaches 96 MiB; the VM gets 64 MiB.
    std::fs::write(&k, tiny_elf_kernel(&[0xf4], 95 << 20, true)).unwrap();
    assert_refused(
        &["--kernel", k.to_str().unwrap(), "--memory", "size=64M"],
        &["guest memory too small", "kernel"],
    );
}

#[test]
fn initramfs_that_does_not_fit_is_refused() {
    let dir = TempDir::new("initramfs-too-big");
    let k = dir.path("k");
    std::fs::write(&k, tiny_elf_kernel(&[0xf4], 0x1000, true)).unwrap();
    let initramfs = dir.path("initramfs");
    std::fs::write(&initramfs, vec![0u8; 40 << 20]).unwrap();
    assert_refused(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initramfs",
            initramfs.to_str().unwrap(),
            "--memory",
            "size=32M",
        ],
        &["guest memory too small", "initramfs"],
    );
}

#[test]
fn bad_seccomp_value_is_named() {
    let stderr = assert_refused(
        &["--kernel", "/x", "--seccomp", "maybe"],
        &["--seccomp", "maybe"],
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}
