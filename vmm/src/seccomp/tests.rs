use std::collections::BTreeSet;

use super::*;

fn numbers(kind: ThreadKind) -> BTreeSet<i64> {
    kind.rule_map().unwrap().keys().copied().collect()
}

#[test]
fn every_filter_compiles_to_bpf_for_x86_64() {
    for kind in ThreadKind::ALL {
        for mode in [SeccompMode::Trap, SeccompMode::Log] {
            let filter = ThreadFilter::new(kind, mode).unwrap();
            let program = filter.program.expect("a program");
            // The architecture check, one jump per rule, the two actions: never tiny.
            assert!(
                program.len() > 20,
                "{}: {} instructions",
                kind.name(),
                program.len()
            );
            // Within the kernel's limit of 4096 instructions (BPF_MAXINSNS).
            assert!(program.len() <= 4096, "{}: {}", kind.name(), program.len());
        }
        assert!(ThreadFilter::new(kind, SeccompMode::Off)
            .unwrap()
            .program
            .is_none());
    }
}

/// The count docs/seccomp.md gives for `kind` (the `calls` column of its table row).
fn documented_count(kind: ThreadKind) -> usize {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/seccomp.md");
    let text = std::fs::read_to_string(file).expect("docs/seccomp.md");
    let row_start = format!("| `{}", kind.name());
    let row = text
        .lines()
        .find(|l| l.starts_with(&row_start))
        .unwrap_or_else(|| panic!("docs/seccomp.md has no row for {}", kind.name()));
    row.split('|')
        .nth(3)
        .and_then(|cell| cell.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in the row {row:?}"))
}

#[test]
fn allowed_syscall_counts_are_the_documented_ones() {
    for kind in ThreadKind::ALL {
        let names = kind.allowed_syscalls().unwrap();
        assert!(!names.contains(&"?"), "{}: an unnamed call", kind.name());
        assert_eq!(
            names.len(),
            documented_count(kind),
            "{}: docs/seccomp.md says otherwise; the filter allows {}",
            kind.name(),
            names.join(" ")
        );
        println!(
            "{}: {} system calls: {}",
            kind.name(),
            names.len(),
            names.join(" ")
        );
    }
}

/// A thread inherits its parent's filter, so a child's calls must pass the parent's.
#[test]
fn filters_of_spawned_threads_are_subsets_of_their_parents() {
    let (vmm, vcpu, mem, loader, migration) = (
        numbers(ThreadKind::Vmm),
        numbers(ThreadKind::Vcpu),
        numbers(ThreadKind::VirtioMem),
        numbers(ThreadKind::MemoryLoader),
        numbers(ThreadKind::Migration),
    );
    assert!(
        migration.is_subset(&vmm),
        "migration - vmm: {:?}",
        migration.difference(&vmm)
    );
    assert!(
        loader.is_subset(&vmm),
        "memory-loader - vmm: {:?}",
        loader.difference(&vmm)
    );
    assert!(
        vcpu.is_subset(&vmm),
        "vcpu - vmm: {:?}",
        vcpu.difference(&vmm)
    );
    assert!(
        mem.is_subset(&vmm),
        "virtio-mem - vmm: {:?}",
        mem.difference(&vmm)
    );
}

#[test]
fn dangerous_calls_are_in_no_filter() {
    for kind in ThreadKind::ALL {
        let allowed = numbers(kind);
        for nr in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_process_vm_writev,
            libc::SYS_mount,
            libc::SYS_bpf,
        ] {
            assert!(
                !allowed.contains(&nr),
                "{} allows {}",
                kind.name(),
                syscall_name(nr).unwrap()
            );
        }
    }
}

/// Only a live migration talks over sockets it makes: its thread, and the VMM thread that
/// starts it (and binds a destination's listener).
#[test]
fn only_migration_makes_sockets() {
    for kind in ThreadKind::ALL {
        let networked = matches!(kind, ThreadKind::Vmm | ThreadKind::Migration);
        for nr in [libc::SYS_socket, libc::SYS_connect] {
            assert_eq!(numbers(kind).contains(&nr), networked, "{}", kind.name());
        }
    }
}

#[test]
fn only_the_vmm_thread_opens_files() {
    for kind in ThreadKind::ALL {
        assert_eq!(
            numbers(kind).contains(&libc::SYS_openat),
            kind == ThreadKind::Vmm,
            "{}",
            kind.name()
        );
    }
}

#[test]
fn modes_parse() {
    assert_eq!(SeccompMode::parse("true").unwrap(), SeccompMode::Trap);
    assert_eq!(SeccompMode::parse("log").unwrap(), SeccompMode::Log);
    assert_eq!(SeccompMode::parse("false").unwrap(), SeccompMode::Off);
    assert_eq!(SeccompMode::default(), SeccompMode::Trap);
    let e = SeccompMode::parse("maybe").unwrap_err().to_string();
    assert!(e.contains("--seccomp") && e.contains("maybe"), "{e}");
}
