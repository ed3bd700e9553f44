//! `accordion-remote`: drives a running `accordion` through its REST API socket, as
//! Cloud Hypervisor's `ch-remote` does.

use std::path::PathBuf;
use std::process::ExitCode;

use api_client::ApiClient;
use clap::{Arg, ArgMatches, Command};

/// A subcommand, the endpoint it calls, and its HTTP method.
struct Endpoint {
    command: &'static str,
    endpoint: &'static str,
    method: &'static str,
    about: &'static str,
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        command: "ping",
        endpoint: "vmm.ping",
        method: "GET",
        about: "Check that the VMM answers; prints its version and pid",
    },
    Endpoint {
        command: "info",
        endpoint: "vm.info",
        method: "GET",
        about: "The VM's configuration, state and memory",
    },
    Endpoint {
        command: "counters",
        endpoint: "vm.counters",
        method: "GET",
        about: "Per-device counters",
    },
    Endpoint {
        command: "create",
        endpoint: "vm.create",
        method: "PUT",
        about: "Create a VM from a JSON configuration file (- for stdin)",
    },
    Endpoint {
        command: "boot",
        endpoint: "vm.boot",
        method: "PUT",
        about: "Boot the created VM",
    },
    Endpoint {
        command: "pause",
        endpoint: "vm.pause",
        method: "PUT",
        about: "Pause every vCPU",
    },
    Endpoint {
        command: "resume",
        endpoint: "vm.resume",
        method: "PUT",
        about: "Resume a paused VM",
    },
    Endpoint {
        command: "reboot",
        endpoint: "vm.reboot",
        method: "PUT",
        about: "Reset the VM: it boots again from its configuration",
    },
    Endpoint {
        command: "power-button",
        endpoint: "vm.power-button",
        method: "PUT",
        about: "Press the ACPI power button (the guest decides what to do)",
    },
    Endpoint {
        command: "shutdown",
        endpoint: "vm.shutdown",
        method: "PUT",
        about: "Stop the VM at once; its configuration stays, ready to boot again",
    },
    Endpoint {
        command: "delete",
        endpoint: "vm.delete",
        method: "PUT",
        about: "Stop the VM and forget its configuration",
    },
    Endpoint {
        command: "resize",
        endpoint: "vm.resize",
        method: "PUT",
        about: "Set the guest's total RAM (boot RAM plus virtio-mem); returns at once",
    },
    Endpoint {
        command: "resize-zone",
        endpoint: "vm.resize-zone",
        method: "PUT",
        about: "Set one memory zone's RAM (its boot RAM plus its virtio-mem device)",
    },
    Endpoint {
        command: "snapshot",
        endpoint: "vm.snapshot",
        method: "PUT",
        about: "Save the paused VM into a new directory (file:///DIR)",
    },
    Endpoint {
        command: "restore",
        endpoint: "vm.restore",
        method: "PUT",
        about: "Bring back a snapshot on a VMM without a VM",
    },
    Endpoint {
        command: "send-migration",
        endpoint: "vm.send-migration",
        method: "PUT",
        about:
            "Migrate the VM to another VMM (returns at once; the events and vm.info tell the end)",
    },
    Endpoint {
        command: "receive-migration",
        endpoint: "vm.receive-migration",
        method: "PUT",
        about: "Wait for a migrated VM on a VMM without one (returns when it has arrived)",
    },
    Endpoint {
        command: "shutdown-vmm",
        endpoint: "vmm.shutdown",
        method: "PUT",
        about: "Stop the VM and make the VMM exit",
    },
];

fn cli() -> Command {
    let mut cmd = Command::new("accordion-remote")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Control a running accordion VMM through its REST API")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("api-socket")
                .long("api-socket")
                .value_name("PATH")
                .required(true)
                .help("The VMM's API socket (accordion --api-socket path=PATH)"),
        );
    for e in ENDPOINTS {
        let mut sub = Command::new(e.command).about(e.about);
        match e.command {
            "create" => {
                sub = sub.arg(
                    Arg::new("file")
                        .value_name("FILE")
                        .required(true)
                        .help("The VM configuration as JSON (the body of vm.create)"),
                );
            }
            "resize" => {
                sub = sub.arg(
                    Arg::new("memory")
                        .long("memory")
                        .value_name("SIZE")
                        .required(true)
                        .help("Total guest RAM wanted, with an optional K, M or G suffix"),
                );
            }
            "resize-zone" => {
                sub = sub
                    .arg(
                        Arg::new("id")
                            .long("id")
                            .value_name("ZONE")
                            .required(true)
                            .help("The memory zone (--memory-zone id=)"),
                    )
                    .arg(
                        Arg::new("size")
                            .long("size")
                            .value_name("SIZE")
                            .required(true)
                            .help("The zone's RAM wanted, with an optional K, M or G suffix"),
                    );
            }
            "snapshot" => {
                sub = sub.arg(
                    Arg::new("destination_url")
                        .value_name("file:///DIR")
                        .required(true)
                        .help("Where to save; the directory must not exist"),
                );
            }
            "restore" => {
                sub = sub.arg(
                    Arg::new("restore_config")
                        .value_name("source_url=file:///DIR[,resume=on][,memory_restore_mode=copy]")
                        .required(true)
                        .help("The snapshot, as accordion --restore takes it"),
                );
            }
            "send-migration" => {
                sub = sub.arg(
                    Arg::new("send_migration_config")
                        .value_name(
                            "destination_url=unix:PATH|tcp:IP:PORT[,downtime_ms=N][,timeout_s=N][,timeout_strategy=cancel|ignore]",
                        )
                        .required(true)
                        .help("Where to, in ch-remote's syntax"),
                );
            }
            "receive-migration" => {
                sub = sub.arg(
                    Arg::new("receive_migration_config")
                        .value_name("receiver_url=unix:PATH|tcp:IP:PORT")
                        .required(true)
                        .help("Where to listen, in ch-remote's syntax"),
                );
            }
            _ => {}
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("accordion-remote: error: {message}");
    ExitCode::FAILURE
}

fn size_arg(args: &ArgMatches, name: &str) -> Result<u64, String> {
    let value = args.get_one::<String>(name).cloned().unwrap_or_default();
    vmm::config::parse_size(&value).map_err(|e| format!("--{name}: {e}"))
}

fn body_for(command: &str, args: &ArgMatches) -> Result<Option<String>, String> {
    match command {
        "create" => {}
        "resize" => {
            let ram = size_arg(args, "memory")?;
            return Ok(Some(serde_json::json!({ "desired_ram": ram }).to_string()));
        }
        "resize-zone" => {
            let id = args.get_one::<String>("id").cloned().unwrap_or_default();
            let ram = size_arg(args, "size")?;
            return Ok(Some(
                serde_json::json!({ "id": id, "desired_ram": ram }).to_string(),
            ));
        }
        "snapshot" => {
            let url = args
                .get_one::<String>("destination_url")
                .cloned()
                .unwrap_or_default();
            return Ok(Some(
                serde_json::json!({ "destination_url": url }).to_string(),
            ));
        }
        "restore" => {
            let value = args
                .get_one::<String>("restore_config")
                .cloned()
                .unwrap_or_default();
            let config =
                vmm::snapshot::request::RestoreConfig::parse(&value).map_err(|e| e.to_string())?;
            return Ok(Some(
                serde_json::json!({
                    "source_url": config.source_url,
                    "prefault": config.prefault,
                    "memory_restore_mode": config.memory_restore_mode,
                    "resume": config.resume,
                })
                .to_string(),
            ));
        }
        "send-migration" | "receive-migration" => {
            let key = format!("{}_config", command.replace('-', "_"));
            let value = args.get_one::<String>(&key).cloned().unwrap_or_default();
            let body = if command == "send-migration" {
                vmm::migration::request::cli::send_body(&value)
            } else {
                vmm::migration::request::cli::receive_body(&value)
            };
            return Ok(Some(body.map_err(|e| e.to_string())?.to_string()));
        }
        _ => return Ok(None),
    }
    let file = args.get_one::<String>("file").cloned().unwrap_or_default();
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
    } else {
        std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?
    };
    Ok(Some(text))
}

/// Pretty-prints a JSON body; anything else is printed as it came.
fn print_body(body: &str) {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match serde_json::to_string_pretty(&v) {
            Ok(pretty) => println!("{pretty}"),
            Err(_) => println!("{body}"),
        },
        Err(_) => println!("{body}"),
    }
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let socket = PathBuf::from(
        matches
            .get_one::<String>("api-socket")
            .cloned()
            .unwrap_or_default(),
    );
    let Some((command, args)) = matches.subcommand() else {
        return fail("no command given");
    };
    let Some(endpoint) = ENDPOINTS.iter().find(|e| e.command == command) else {
        return fail(format!("unknown command {command}"));
    };
    let body = match body_for(command, args) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut client = match ApiClient::connect(&socket) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.command(endpoint.method, endpoint.endpoint, body.as_deref()) {
        Ok(Some(body)) => {
            print_body(&body);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
