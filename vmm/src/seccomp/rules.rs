//! Helpers for the rule files, and the rules every thread needs just to be a Rust thread in
//! this process.

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// One allowed system call and its argument conditions (an empty list: any arguments; more
/// than one rule: any of them).
pub(super) type Rule = (i64, Vec<SeccompRule>);
pub(super) type Rules = Vec<Rule>;
pub(super) type Result<T> = std::result::Result<T, BackendError>;

/// `nr` with any arguments.
pub(super) fn any(nr: i64) -> Rule {
    (nr, Vec::new())
}

/// `nr` when its argument `arg` (an `int` or `unsigned int`: the low 32 bits are compared)
/// is one of `values`.
pub(super) fn arg_in(nr: i64, arg: u8, values: &[u64]) -> Result<Rule> {
    let rules = values
        .iter()
        .map(|&v| {
            SeccompRule::new(vec![SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                v,
            )?])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((nr, rules))
}

/// `nr` when its argument `arg` has all of the bits in `bits`.
pub(super) fn arg_with_bits(nr: i64, arg: u8, bits: u64) -> Result<Rule> {
    let rule = SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(bits),
        bits,
    )?])?;
    Ok((nr, vec![rule]))
}

/// `nr` when its argument `arg` has none of the bits in `mask`.
pub(super) fn arg_without_bits(nr: i64, arg: u8, mask: u64) -> Result<Rule> {
    let rule = SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        0,
    )?])?;
    Ok((nr, vec![rule]))
}

/// `ioctl` with one of the request numbers `requests`.
pub(super) fn ioctl_in(requests: &[u64]) -> Result<Rule> {
    arg_in(libc::SYS_ioctl, 1, requests)
}

/// `madvise` with one of `advice`.
pub(super) fn madvise_in(advice: &[i32]) -> Result<Rule> {
    arg_in(libc::SYS_madvise, 2, &as_u64(advice))
}

/// `fcntl` with one of the commands `commands`.
pub(super) fn fcntl_in(commands: &[i32]) -> Result<Rule> {
    arg_in(libc::SYS_fcntl, 1, &as_u64(commands))
}

/// `prctl` with one of the options `options`.
pub(super) fn prctl_in(options: &[i32]) -> Result<Rule> {
    arg_in(libc::SYS_prctl, 0, &as_u64(options))
}

/// Integer constants from libc as the filter's u64 (the 32-bit comparison reads the low
/// half, so negative values cannot occur here but would still compare right).
pub(super) fn as_u64(values: &[i32]) -> Vec<u64> {
    values.iter().map(|&v| u64::from(v as u32)).collect()
}

/// What every thread does as a Rust thread of this process, whatever its job; the vmm and
/// vcpu filters add to this what a thread does before it installs its own filter.
pub(super) fn thread_runtime() -> Result<Rules> {
    Ok(vec![
        // malloc: the main arena grows with brk, other arenas and large blocks are mmaps.
        any(libc::SYS_brk),
        // Memory for malloc and thread stacks is never executable.
        arg_without_bits(libc::SYS_mmap, 2, libc::PROT_EXEC as u64)?,
        arg_without_bits(libc::SYS_mprotect, 2, libc::PROT_EXEC as u64)?,
        any(libc::SYS_munmap),
        // realloc() of a block that malloc mmapped (128 KiB and up by default: a large
        // request body or answer grows this way) moves or extends it with mremap. Mappings
        // keep their protection, so this cannot make memory executable.
        any(libc::SYS_mremap),
        // free() and thread exit hand unused pages back with MADV_DONTNEED.
        madvise_in(&[libc::MADV_DONTNEED])?,
        // Mutexes, condition variables, channels, thread join.
        any(libc::SYS_futex),
        // std's channels back off under contention with thread::yield_now (a reply sent while
        // the api thread waits on it, 50 clients at once).
        any(libc::SYS_sched_yield),
        // glibc counts the CPUs when it creates a malloc arena for a thread.
        any(libc::SYS_sched_getaffinity),
        // Thread exit: Rust removes its signal stack, glibc blocks signals, then exit.
        any(libc::SYS_sigaltstack),
        any(libc::SYS_rt_sigprocmask),
        any(libc::SYS_exit),
        // Returning from a signal handler (the SIGSYS report, the vCPU kick).
        any(libc::SYS_rt_sigreturn),
        // Dropping descriptors; Rust's std checks with F_GETFD that one is open before it
        // closes it (debug builds).
        any(libc::SYS_close),
        fcntl_in(&[libc::F_GETFD])?,
        // The log (stderr or --log-file), and the SIGSYS report.
        any(libc::SYS_write),
        // Instant::now where the vDSO does not answer.
        any(libc::SYS_clock_gettime),
        // HashMap seeds (std's RandomState asks once per thread).
        any(libc::SYS_getrandom),
        // The SIGSYS report raises SIGSYS again on its own thread to die by it; abort()
        // (a panic while panicking) raises SIGABRT the same way.
        any(libc::SYS_getpid),
        any(libc::SYS_gettid),
        arg_in(libc::SYS_tgkill, 2, &as_u64(&[libc::SIGSYS, libc::SIGABRT]))?,
    ])
}

/// What a thread does to start another thread before the new one installs its filter (the
/// new thread runs these under its parent's filter), and what installing a filter takes.
pub(super) fn thread_spawning() -> Result<Rules> {
    Ok(vec![
        // std::thread::spawn: pthread_create, which blocks signals around clone3, and falls
        // back to clone when clone3 answers ENOSYS (which a stacked filter makes it do: see
        // the module doc of seccomp). clone only with CLONE_VM | CLONE_THREAD: a thread, not
        // a process.
        any(libc::SYS_clone3),
        arg_with_bits(
            libc::SYS_clone,
            0,
            (libc::CLONE_VM | libc::CLONE_THREAD) as u64,
        )?,
        // The new thread's first calls: restartable sequences and the robust futex list
        // (glibc), its name (Rust, PR_SET_NAME), its signal stack (Rust, sigaltstack).
        any(libc::SYS_rseq),
        any(libc::SYS_set_robust_list),
        // The new thread names itself, then installs its own filter.
        prctl_in(&[libc::PR_SET_NAME, libc::PR_SET_NO_NEW_PRIVS])?,
        arg_in(
            libc::SYS_seccomp,
            0,
            &[u64::from(libc::SECCOMP_SET_MODE_FILTER)],
        )?,
    ])
}
