//! `accordion`: boot a Linux guest on KVM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};
use vmm::config::{ConsoleConfig, CpusConfig, MemoryConfig, PayloadConfig, VmConfig};
use vmm::{ExitStatus, VmmError};

fn cli() -> Command {
    Command::new("accordion")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A virtual machine monitor for Linux/KVM built around elastic guest memory")
        .arg(
            Arg::new("kernel")
                .long("kernel")
                .value_name("PATH")
                .required(true)
                .help("Kernel to boot: an ELF vmlinux with a PVH entry point, or a bzImage"),
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

fn config_from(m: &ArgMatches) -> Result<VmConfig, vmm::config::ConfigError> {
    Ok(VmConfig {
        cpus: CpusConfig::parse(&string(m, "cpus"))?,
        memory: MemoryConfig::parse(&string(m, "memory"))?,
        payload: PayloadConfig {
            kernel: PathBuf::from(string(m, "kernel")),
            initramfs: m.get_one::<String>("initramfs").map(PathBuf::from),
            cmdline: m.get_one::<String>("cmdline").cloned(),
        },
        serial: ConsoleConfig::parse("--serial", &string(m, "serial"))?,
        console: ConsoleConfig::parse("--console", &string(m, "console"))?,
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

    let config = match config_from(&matches) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match vmm::run_vm(config) {
        Ok(ExitStatus::PowerOff) => ExitCode::SUCCESS,
        Ok(ExitStatus::GuestFailure(reason)) => fail(reason),
        Err(VmmError::Config(e)) => fail(e),
        Err(e) => fail(e),
    }
}
