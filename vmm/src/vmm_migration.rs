//! The VMM thread's side of a live migration (docs/migration.md): starting either side's
//! `migration` thread, answering what it asks (pause and state on the source; build,
//! restore and start on the destination), and cleaning up when it ends, whichever way.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::{channel, Receiver};
use std::thread::JoinHandle;

use hypervisor::MemoryRegion;
use serde_json::json;

use super::{serial_output, Vmm};
use crate::api::{ApiError, ApiResult, Replier};
use crate::event_monitor::event_with;
use crate::migration::destination::{self, DestinationMessage};
use crate::migration::request::{ReceiveMigrationConfig, SendMigrationConfig};
use crate::migration::source::{self, Link, SourceMessage, SourcePlan};
use crate::migration::transport::Listener;
use crate::migration::{ConfigPayload, MigrationReport};
use crate::seccomp::{ThreadFilter, ThreadKind};
use crate::vm::Vm;

/// A migration under way.
pub(super) enum Migration {
    Outgoing(Box<Outgoing>),
    Incoming(Box<Incoming>),
}

pub(super) struct Outgoing {
    thread: Option<JoinHandle<()>>,
    messages: Receiver<SourceMessage>,
    /// The slots whose dirty log is on.
    slots: Vec<MemoryRegion>,
    /// The VM ran when the migration started (it runs again if the migration fails).
    was_running: bool,
    progress: Progress,
}

pub(super) struct Incoming {
    thread: Option<JoinHandle<()>>,
    messages: Receiver<DestinationMessage>,
    /// The `vm.receive-migration` call, answered when the migration ends.
    reply: Option<Replier>,
    /// The VM being built.
    vm: Option<Vm>,
    /// The listening socket, shut down to stop a thread still waiting for the sender.
    listener: Option<OwnedFd>,
    progress: Progress,
}

/// What `vm.info` shows of the migration under way.
#[derive(Clone, Debug, Default)]
struct Progress {
    phase: &'static str,
    pass: u64,
    bytes: u64,
    dirty_bytes: u64,
    dirty_rate: u64,
    estimated_downtime_ms: u64,
}

fn props(pairs: &[(&str, String)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn report_props(report: &MigrationReport) -> Option<BTreeMap<String, String>> {
    props(&[
        ("bytes", report.bytes.to_string()),
        ("passes", report.passes.to_string()),
        ("downtime_ms", report.downtime_ms.to_string()),
        ("total_ms", report.total_ms.to_string()),
    ])
}

impl Vmm {
    fn link<M>(&self) -> Result<(Link<M>, Receiver<M>), ApiError> {
        let (messages, receiver) = channel();
        let notify = self
            .migration_event
            .try_clone()
            .map_err(|e| ApiError::internal(format!("migration eventfd: {e}")))?;
        Ok((Link { messages, notify }, receiver))
    }

    /// Refuses what cannot run during a migration.
    pub(super) fn migration_conflict(&self, what: &str) -> Result<(), ApiError> {
        match &self.migration {
            None => Ok(()),
            Some(_) => Err(ApiError::conflict(format!(
                "{what} cannot run while a migration is under way; it can once the migration \
                 has ended (see vm.info's migration)"
            ))),
        }
    }

    /// `vm.send-migration`: freezes the devices, turns on dirty logging and starts the
    /// source's thread; answers at once, as Cloud Hypervisor does. The end shows in the
    /// events and in `vm.info`.
    pub(super) fn send_migration(&mut self, body: &SendMigrationConfig) -> ApiResult {
        let url = body
            .validate()
            .map_err(|e| ApiError::bad_request(format!("vm.send-migration: {e}")))?;
        self.migration_conflict("vm.send-migration")?;
        let (link, messages) = self.link()?;
        let filter = ThreadFilter::new(ThreadKind::Migration, self.seccomp)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let vm = self.running_vm()?;
        let local = if body.local {
            vm.memory_files().map_err(|e| {
                ApiError::bad_request(format!(
                    "vm.send-migration: local: the memory must be shared to pass it: {e}"
                ))
            })?
        } else {
            Vec::new()
        };
        let was_running = !vm.is_paused();
        let memory = vm
            .start_outgoing_migration(body.local)
            .map_err(|e| ApiError::internal(format!("vm.send-migration: {e}")))?;
        let slots = memory.slots.clone();
        let plan = SourcePlan {
            url,
            downtime: std::time::Duration::from_millis(body.downtime_ms),
            timeout: std::time::Duration::from_secs(body.timeout_s),
            strategy: body.timeout_strategy,
            config: memory.config,
            vm: memory.vm,
            slots: memory.slots,
            places: memory.places,
            devices: memory.devices,
            complete_paused: !was_running,
            local,
        };
        let thread = match source::start(plan, link, filter) {
            Ok(t) => t,
            Err(e) => {
                vm.end_outgoing_migration(&slots);
                return Err(ApiError::internal(format!(
                    "vm.send-migration: starting the migration thread: {e}"
                )));
            }
        };
        event_with(
            "vm",
            "migration-started",
            props(&[("destination_url", body.destination_url.clone())]),
        );
        self.migration = Some(Migration::Outgoing(Box::new(Outgoing {
            thread: Some(thread),
            messages,
            slots,
            was_running,
            progress: Progress {
                phase: "sending",
                ..Progress::default()
            },
        })));
        Ok(None)
    }

    /// `vm.receive-migration`: binds the socket and starts the destination's thread on a
    /// VMM without a VM. The call is answered when the migration ends.
    pub(super) fn receive_migration(
        &mut self,
        body: &ReceiveMigrationConfig,
        reply: Replier,
    ) -> Option<(Replier, ApiResult)> {
        let started = (|| {
            let url = body
                .validate()
                .map_err(|e| ApiError::bad_request(format!("vm.receive-migration: {e}")))?;
            self.migration_conflict("vm.receive-migration")?;
            if self.config.is_some() {
                return Err(ApiError::conflict(
                    "vm.receive-migration needs a VMM without a VM (PUT /api/v1/vm.delete first)",
                ));
            }
            let listener = Listener::bind(&url).map_err(|e| {
                ApiError::bad_request(format!(
                    "vm.receive-migration: cannot listen on {}: {e}",
                    body.receiver_url
                ))
            })?;
            let listening = match &listener {
                Listener::Unix(l, _) => l.as_fd().try_clone_to_owned(),
                Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            }
            .map_err(|e| ApiError::internal(format!("the migration socket: {e}")))?;
            let (link, messages) = self.link()?;
            let filter = ThreadFilter::new(ThreadKind::Migration, self.seccomp)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let thread = destination::start(listener, link, filter)
                .map_err(|e| ApiError::internal(format!("starting the migration thread: {e}")))?;
            Ok((thread, messages, listening))
        })();
        match started {
            Ok((thread, messages, listening)) => {
                event_with(
                    "vm",
                    "migration-receive-ready",
                    props(&[("receiver_url", body.receiver_url.clone())]),
                );
                self.migration = Some(Migration::Incoming(Box::new(Incoming {
                    thread: Some(thread),
                    messages,
                    reply: Some(reply),
                    vm: None,
                    listener: Some(listening),
                    progress: Progress {
                        phase: "waiting for the sender",
                        ..Progress::default()
                    },
                })));
                None
            }
            Err(e) => Some((reply, Err(e))),
        }
    }

    /// What `vm.info` says of the migration under way.
    pub(super) fn migration_info(&self) -> Option<serde_json::Value> {
        let (role, progress) = match self.migration.as_ref()? {
            Migration::Outgoing(o) => ("source", &o.progress),
            Migration::Incoming(i) => ("destination", &i.progress),
        };
        Some(json!({
            "role": role,
            "phase": progress.phase,
            "pass": progress.pass,
            "bytes": progress.bytes,
            "dirty_bytes": progress.dirty_bytes,
            "dirty_rate": progress.dirty_rate,
            "estimated_downtime_ms": progress.estimated_downtime_ms,
        }))
    }

    /// Handles what the migration thread said. Returns true when the VMM must exit (the VM
    /// moved to the destination).
    pub(super) fn migration_work(&mut self) -> bool {
        let _ = self.migration_event.read();
        loop {
            let exit = match self.migration.as_mut() {
                None => return false,
                Some(Migration::Outgoing(o)) => match o.messages.try_recv() {
                    Ok(message) => self.source_message(message),
                    Err(_) => return false,
                },
                Some(Migration::Incoming(i)) => match i.messages.try_recv() {
                    Ok(message) => {
                        self.destination_message(message);
                        false
                    }
                    Err(_) => return false,
                },
            };
            if exit {
                return true;
            }
        }
    }

    fn outgoing(&mut self) -> Option<&mut Outgoing> {
        match self.migration.as_mut() {
            Some(Migration::Outgoing(o)) => Some(o),
            _ => None,
        }
    }

    fn source_message(&mut self, message: SourceMessage) -> bool {
        match message {
            SourceMessage::Progress {
                pass,
                bytes,
                dirty_bytes,
                dirty_rate,
                estimated_downtime_ms,
            } => {
                if let Some(o) = self.outgoing() {
                    o.progress = Progress {
                        phase: "sending",
                        pass,
                        bytes,
                        dirty_bytes,
                        dirty_rate,
                        estimated_downtime_ms,
                    };
                }
                event_with(
                    "vm",
                    "migration-memory-iteration",
                    props(&[
                        ("pass", pass.to_string()),
                        ("bytes", bytes.to_string()),
                        ("dirty_bytes", dirty_bytes.to_string()),
                        ("dirty_rate", dirty_rate.to_string()),
                        ("estimated_downtime_ms", estimated_downtime_ms.to_string()),
                    ]),
                );
                false
            }
            SourceMessage::Pause(reply) => {
                let state = match self.vm.as_mut() {
                    Some(vm) => vm.pause_for_migration(),
                    None => Err("the VM is gone".to_string()),
                };
                if let Some(o) = self.outgoing() {
                    o.progress.phase = "paused: the last pass";
                }
                let _ = reply.send(state);
                false
            }
            SourceMessage::Finished(result) => {
                let Some(Migration::Outgoing(mut o)) = self.migration.take() else {
                    return false;
                };
                if let Some(t) = o.thread.take() {
                    let _ = t.join();
                }
                match result {
                    Ok(report) => {
                        log::info!(
                            "migration finished: {} bytes in {} passes, {} ms paused",
                            report.bytes,
                            report.passes,
                            report.downtime_ms
                        );
                        self.last_migration = Some(report);
                        event_with("vm", "migration-finished", report_props(&report));
                        // The VM runs on the destination now; this one ends, as Cloud
                        // Hypervisor's source does.
                        self.stop_vm();
                        true
                    }
                    Err(failure) => {
                        log::error!("migration failed: {}", failure.reason);
                        event_with(
                            "vm",
                            "migration-failed",
                            props(&[
                                ("reason", failure.reason.clone()),
                                ("outcome_unknown", failure.outcome_unknown.to_string()),
                            ]),
                        );
                        if let Some(vm) = self.vm.as_mut() {
                            vm.end_outgoing_migration(&o.slots);
                            if o.was_running && vm.is_paused() && !failure.outcome_unknown {
                                if let Err(e) = vm.resume() {
                                    log::error!("resuming after the failed migration: {e}");
                                }
                            }
                        }
                        if failure.outcome_unknown {
                            self.migration_unknown = Some(failure.reason);
                        }
                        false
                    }
                }
            }
        }
    }

    fn incoming(&mut self) -> Option<&mut Incoming> {
        match self.migration.as_mut() {
            Some(Migration::Incoming(i)) => Some(i),
            _ => None,
        }
    }

    fn destination_message(&mut self, message: DestinationMessage) {
        match message {
            DestinationMessage::Connected => {
                if let Some(i) = self.incoming() {
                    i.progress.phase = "receiving";
                }
                event_with("vm", "migration-receive-started", None);
            }
            DestinationMessage::Progress { requests, bytes } => {
                if let Some(i) = self.incoming() {
                    i.progress.pass = requests;
                    i.progress.bytes = bytes;
                }
            }
            DestinationMessage::Config(payload, files, reply) => {
                let built = ConfigPayload::parse(&payload).and_then(|payload| {
                    // An event a previous VM raised as it was being stopped is not this one's.
                    let _ = self.events.take();
                    let output = serial_output(&payload.config, 1).map_err(|e| e.to_string())?;
                    Vm::build_incoming(
                        &self.hypervisor,
                        &payload,
                        self.events.clone(),
                        output,
                        self.seccomp,
                        files,
                    )
                });
                let answer = match built {
                    Ok((vm, places)) => {
                        if let Some(i) = self.incoming() {
                            i.vm = Some(vm);
                        }
                        Ok(places)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
            DestinationMessage::State(payload, reply) => {
                let started = std::time::Instant::now();
                let answer = match self.incoming().and_then(|i| i.vm.as_mut()) {
                    Some(vm) => vm.restore_incoming(&payload),
                    None => Err("no VM was built (Config first)".into()),
                };
                log::info!(
                    "migration: the state ({} bytes) restored in {} ms",
                    payload.len(),
                    started.elapsed().as_millis()
                );
                let _ = reply.send(answer);
            }
            DestinationMessage::Complete { paused, reply } => {
                let started = std::time::Instant::now();
                let answer = match self.incoming().and_then(|i| i.vm.as_mut()) {
                    Some(vm) => vm.complete_incoming(paused),
                    None => Err("no VM was built (Config first)".into()),
                };
                log::info!(
                    "migration: the VM started in {} ms",
                    started.elapsed().as_millis()
                );
                let _ = reply.send(answer);
            }
            DestinationMessage::Finished(result) => {
                let Some(Migration::Incoming(mut i)) = self.migration.take() else {
                    return;
                };
                if let Some(t) = i.thread.take() {
                    let _ = t.join();
                }
                let answer = match (result, i.vm.take()) {
                    (Ok(report), Some(vm)) => {
                        self.config = Some(vm.config().clone());
                        self.boots = 1;
                        self.failure = None;
                        self.vm = Some(vm);
                        self.last_migration = Some(report);
                        self.watch_resizes();
                        event_with("vm", "migration-receive-finished", report_props(&report));
                        Ok(None)
                    }
                    (result, vm) => {
                        let reason = match result {
                            Err(e) => e,
                            Ok(_) => "the migration ended without a VM".into(),
                        };
                        if let Some(mut vm) = vm {
                            vm.shutdown();
                        }
                        log::error!("receiving a migration failed: {reason}");
                        event_with(
                            "vm",
                            "migration-receive-failed",
                            props(&[("reason", reason.clone())]),
                        );
                        Err(ApiError::bad_request(format!(
                            "vm.receive-migration: {reason}"
                        )))
                    }
                };
                if let Some(reply) = i.reply.take() {
                    reply.send(answer);
                }
            }
        }
    }

    /// Ends a migration under way because the VMM exits: the destination's thread is woken
    /// from waiting for a sender, and either thread is joined before the VM it writes or
    /// reads goes away.
    pub(super) fn abandon_migration(&mut self) {
        match self.migration.take() {
            None => {}
            Some(Migration::Incoming(mut i)) => {
                if let Some(fd) = i.listener.take() {
                    use std::os::fd::AsRawFd;
                    // SAFETY: shutdown(2) on a descriptor this owns; it wakes accept().
                    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
                }
                // Its questions are answered "going away" once the channel is dropped.
                drop(i.messages);
                if let Some(t) = i.thread.take() {
                    let _ = t.join();
                }
                if let Some(mut vm) = i.vm.take() {
                    vm.shutdown();
                }
                if let Some(reply) = i.reply.take() {
                    reply.send(Err(ApiError::internal(
                        "vm.receive-migration: the VMM is shutting down",
                    )));
                }
            }
            Some(Migration::Outgoing(mut o)) => {
                drop(o.messages);
                if let Some(t) = o.thread.take() {
                    let _ = t.join();
                }
                if let Some(vm) = self.vm.as_mut() {
                    vm.end_outgoing_migration(&o.slots);
                }
            }
        }
    }
}
