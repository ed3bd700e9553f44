//! `accordion`: boot a Linux guest on KVM, and serve the REST API.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};
use vmm::api::socket::ApiSocketConfig;
use vmm::config::{
    ConfigError, ConsoleConfig, CpusConfig, MemoryConfig, MemoryZoneConfig, NumaConfig,
    OptionParser, PayloadConfig, VmConfig,
};
use vmm::seccomp::SeccompMode;
use vmm::{ExitStatus, VmmOptions};

fn cli() -> Command {
    Command::new("accordion")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A virtual machine monitor for Linux/KVM built around elastic guest memory")
        .arg(
            Arg::new("kernel")
                .long("kernel")
                .value_name("PATH")
                .required_unless_present("api-socket")
                .help(
                    "Kernel to boot: an ELF vmlinux with a PVH entry point, or a bzImage. \
                     Without it (and with --api-socket) the VMM waits for vm.create",
                ),
        )
        .arg(
            Arg::new("initramfs")
                .long("initramfs")
                .value_name("PATH")
                .help("Initramfs to load next to the kernel"),
        )
        .arg(
            Arg::new("cmdline")
                .long("cmdline")
                .value_name("STRING")
                .help("Kernel command line"),
        )
        .arg(
            Arg::new("cpus")
                .long("cpus")
                .value_name("boot=N")
                .default_value("boot=1")
                .help("Number of vCPUs at boot"),
        )
        .arg(
            Arg::new("memory")
                .long("memory")
                .value_name("size=SIZE")
                .default_value("size=512M")
                .help("Boot RAM; sizes take K, M or G suffixes"),
        )
        .arg(
            Arg::new("memory-zone")
                .long("memory-zone")
                .value_name("id=ID,size=SIZE[,hotplug_size=SIZE]...")
                .action(ArgAction::Append)
                .help("A memory zone (use with --memory size=0); repeat for more zones"),
        )
        .arg(
            Arg::new("numa")
                .long("numa")
                .value_name("guest_numa_id=N,cpus=LIST,memory_zones=ID[:ID]")
                .action(ArgAction::Append)
                .help("A guest NUMA node; repeat for more nodes"),
        )
        .arg(
            Arg::new("serial")
                .long("serial")
                .value_name("tty|file=PATH|off")
                .default_value("tty")
                .help("Where COM1 goes: the terminal (stdin feeds the guest), a file, or nowhere"),
        )
        .arg(
            Arg::new("console")
                .long("console")
                .value_name("off")
                .default_value("off")
                .help("virtio-console; only 'off' (Accordion's console is the serial port)"),
        )
        .arg(
            Arg::new("api-socket")
                .long("api-socket")
                .value_name("path=PATH|fd=N")
                .help("Serve the REST API on this unix socket (created with mode 0600)"),
        )
        .arg(
            Arg::new("restore")
                .long("restore")
                .value_name("source_url=file:///DIR[,resume=on][,memory_restore_mode=copy]")
                .help("Bring back the VM a snapshot directory holds (instead of --kernel)"),
        )
        .arg(
            Arg::new("event-monitor")
                .long("event-monitor")
                .value_name("path=PATH|fd=N")
                .help("Write lifecycle events here, one JSON object a line"),
        )
        .arg(
            Arg::new("seccomp")
                .long("seccomp")
                .value_name("true|false|log")
                .default_value("true")
                .help(
                    "Confine each thread to the system calls its job needs: true (a \
                     forbidden call stops the process, naming the thread and the call), log \
                     (the kernel logs it and lets it run), false (no filter)",
                ),
        )
        .arg(
            Arg::new("log-file")
                .long("log-file")
                .value_name("PATH")
                .help("Write the VMM's log here instead of stderr"),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .action(ArgAction::Count)
                .help("More log output (repeat for more)"),
        )
}

fn string(m: &ArgMatches, id: &str) -> String {
    m.get_one::<String>(id).cloned().unwrap_or_default()
}

/// `--event-monitor path=PATH` (created or truncated) or `fd=N` (an open descriptor).
fn event_monitor_from(value: &str) -> Result<File, ConfigError> {
    const OPTION: &str = "--event-monitor";
    let p = OptionParser::parse(OPTION, value, &["path", "fd"])?;
    match (p.get("path"), p.get_u32("fd")?) {
        (Some(path), None) if !path.is_empty() => {
            File::create(path).map_err(|e| ConfigError::new(OPTION, format!("{path}: {e}")))
        }
        (None, Some(fd)) => {
            let fd = i32::try_from(fd)
                .map_err(|_| ConfigError::new(OPTION, format!("fd={fd} is out of range")))?;
            // SAFETY: F_GETFD only asks whether `fd` is an open descriptor.
            if fd <= 2 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(ConfigError::new(
                    OPTION,
                    format!("fd={fd} is not an open descriptor other than stdin/out/err"),
                ));
            }
            // SAFETY: `fd` is open (checked above) and handed to us by our parent; nothing
            // else in this process uses it.
            Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
        }
        _ => Err(ConfigError::new(
            OPTION,
            "give exactly one of path=PATH or fd=N",
        )),
    }
}

fn options_from(m: &ArgMatches) -> Result<VmmOptions, ConfigError> {
    let seccomp = SeccompMode::parse(&string(m, "seccomp"))?;
    let api_socket = m
        .get_one::<String>("api-socket")
        .map(|v| ApiSocketConfig::parse(v))
        .transpose()?;
    let event_monitor = m
        .get_one::<String>("event-monitor")
        .map(|v| event_monitor_from(v))
        .transpose()?;
    let vm = m
        .contains_id("kernel")
        .then(|| config_from(m))
        .transpose()?;
    let restore = m
        .get_one::<String>("restore")
        .map(|v| vmm::snapshot::request::RestoreConfig::parse(v))
        .transpose()?;
    if vm.is_some() && restore.is_some() {
        return Err(ConfigError::new(
            "--restore",
            "cannot be given with --kernel: the snapshot holds the VM's configuration",
        ));
    }
    Ok(VmmOptions {
        vm,
        api_socket,
        event_monitor,
        seccomp,
        restore,
    })
}

fn config_from(m: &ArgMatches) -> Result<VmConfig, ConfigError> {
    Ok(VmConfig {
        cpus: CpusConfig::parse(&string(m, "cpus"))?,
        memory: MemoryConfig {
            zones: m
                .get_many::<String>("memory-zone")
                .map(|zones| zones.map(|z| MemoryZoneConfig::parse(z)).collect())
                .transpose()?,
            ..MemoryConfig::parse(&string(m, "memory"))?
        },
        payload: PayloadConfig {
            kernel: PathBuf::from(string(m, "kernel")),
            initramfs: m.get_one::<String>("initramfs").map(PathBuf::from),
            cmdline: m.get_one::<String>("cmdline").cloned(),
        },
        serial: ConsoleConfig::parse("--serial", &string(m, "serial"))?,
        console: ConsoleConfig::parse("--console", &string(m, "console"))?,
        numa: m
            .get_many::<String>("numa")
            .map(|nodes| nodes.map(|n| NumaConfig::parse(n)).collect())
            .transpose()?,
    })
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("accordion: error: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let matches = cli().get_matches();

    let log_file = match matches.get_one::<String>("log-file") {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(f),
            Err(e) => return fail(format!("--log-file: {path}: {e}")),
        },
        None => None,
    };
    let level = vmm::logger::level_for_verbosity(matches.get_count("verbose"));
    if let Err(e) = vmm::logger::init(level, log_file) {
        return fail(format!("cannot install the logger: {e}"));
    }

    let options = match options_from(&matches) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    match vmm::run(options) {
        Ok(ExitStatus::PowerOff | ExitStatus::VmmShutdown | ExitStatus::Migrated) => {
            ExitCode::SUCCESS
        }
        Ok(ExitStatus::GuestFailure(reason)) => fail(reason),
        // The shell's convention for a process ended by a signal; the VM was shut down.
        Ok(ExitStatus::Signal(signal)) => ExitCode::from(128u8.saturating_add(signal as u8)),
        // A configuration error already names its option.
        Err(vmm::VmmError::Config(e)) => fail(e),
        Err(e) => fail(e),
    }
}
