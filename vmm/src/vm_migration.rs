//! The VM's side of a live migration (see `crate::migration`): freezing the virtio-mem
//! devices and logging dirty memory on the source, building and starting the VM on the
//! destination.

use std::sync::Arc;

use hypervisor::{Hypervisor, MemoryRegion};

use super::Vm;
use crate::config::VmConfig;
use crate::devices::SerialOutput;
use crate::migration::{ConfigPayload, Place, StatePayload, FORMAT};
use crate::seccomp::SeccompMode;
use crate::snapshot::memory_file::HostRange;
use crate::snapshot::MemoryDeviceState;
use crate::vm_event::VmEventSignal;

/// What the source's migration thread works from, once the devices are frozen and dirty
/// logging is on.
pub struct OutgoingMemory {
    /// The `Config` payload.
    pub config: Vec<u8>,
    pub vm: Arc<dyn hypervisor::Vm>,
    /// The slots whose dirty log is on (to turn off again).
    pub slots: Vec<MemoryRegion>,
    /// Boot RAM and the frozen plugged blocks, by address.
    pub places: Vec<Place>,
    pub devices: Vec<virtio_devices::mem::VirtioMemHandle>,
}

fn places(ranges: Vec<HostRange>) -> Vec<Place> {
    let mut places: Vec<Place> = ranges
        .into_iter()
        .map(|r| Place {
            gpa: r.gpa,
            host: r.host,
            len: r.len,
        })
        .collect();
    places.sort_unstable_by_key(|p| p.gpa);
    places
}

impl Vm {
    /// The files behind guest memory, for a local migration (all must be shared).
    pub fn memory_files(&self) -> Result<Vec<std::fs::File>, String> {
        self.memory.backing_files()
    }

    /// Freezes the virtio-mem devices (BUSY), turns on dirty logging on every mapped slot
    /// (not for a `local` migration, which copies no memory) and the devices' write logs,
    /// and describes the memory to send. On failure everything is as it was.
    pub fn start_outgoing_migration(&mut self, local: bool) -> Result<OutgoingMemory, String> {
        let mut frozen = Vec::new();
        for d in self.memory.devices() {
            match d.freeze() {
                Ok((pci, mem)) => frozen.push(MemoryDeviceState {
                    id: d.id.clone(),
                    pci,
                    mem,
                }),
                Err(e) => {
                    self.memory
                        .devices()
                        .take(frozen.len())
                        .for_each(|d| d.thaw());
                    return Err(e);
                }
            }
        }
        let mut ranges = self.boot_ram_ranges();
        let mut slots = self.memory.boot_slots().to_vec();
        for (d, saved) in self.memory.devices().zip(&frozen) {
            ranges.extend(d.plugged_host_ranges(&saved.mem));
            slots.extend(d.mapped_slots(&saved.mem));
        }
        if local {
            slots.clear();
        }
        let payload = ConfigPayload {
            format: FORMAT.to_string(),
            version: crate::migration::protocol::VERSION,
            config: self.config.clone(),
            memory_devices: frozen,
        };
        let config = match serde_json::to_vec(&payload) {
            Ok(c) => c,
            Err(e) => {
                self.end_outgoing_migration(&[]);
                return Err(format!("encoding the configuration: {e}"));
            }
        };
        if let Err(e) = self.set_dirty_logging(&slots, true) {
            self.end_outgoing_migration(&slots);
            return Err(e);
        }
        let devices: Vec<_> = self.memory.devices().map(|d| d.handle.clone()).collect();
        for d in &devices {
            d.write_log().start();
        }
        Ok(OutgoingMemory {
            config,
            vm: self.vm.clone(),
            slots,
            places: places(ranges),
            devices,
        })
    }

    fn set_dirty_logging(&self, slots: &[MemoryRegion], on: bool) -> Result<(), String> {
        for slot in slots {
            self.vm
                .set_memory_region(MemoryRegion {
                    log_dirty: on,
                    ..*slot
                })
                .map_err(|e| {
                    format!(
                        "turning dirty logging {} on memslot {}: {e}",
                        if on { "on" } else { "off" },
                        slot.slot
                    )
                })?;
        }
        Ok(())
    }

    /// Undoes [`start_outgoing_migration`](Self::start_outgoing_migration): dirty logging
    /// off on `slots`, write logs stopped, the devices serve requests again (and interrupt
    /// the driver to retry).
    pub fn end_outgoing_migration(&mut self, slots: &[MemoryRegion]) {
        if let Err(e) = self.set_dirty_logging(slots, false) {
            log::error!("after the migration: {e}");
        }
        for d in self.memory.devices() {
            d.handle.write_log().stop();
            d.thaw();
        }
    }

    /// For the last pass: pauses the vCPUs (if they run) and the devices, and returns the
    /// `State` payload. The devices stay paused; on failure they run again, and so does the
    /// VM if this paused it.
    pub fn pause_for_migration(&mut self) -> Result<Vec<u8>, String> {
        let was_running = !self.paused;
        if was_running {
            self.pause().map_err(|e| e.to_string())?;
        }
        let state = self
            .memory
            .devices()
            .try_for_each(|d| d.pause())
            .and_then(|()| self.machine_state().map_err(|e| e.to_string()))
            .and_then(|(machine, _)| {
                serde_json::to_vec(&StatePayload { machine })
                    .map_err(|e| format!("encoding the state: {e}"))
            });
        if state.is_err() {
            for d in self.memory.devices() {
                d.resume();
            }
            if was_running {
                if let Err(e) = self.resume() {
                    log::error!("resuming after a failed migration: {e}");
                }
            }
        }
        state
    }

    /// Builds the VM a migration's `Config` describes, nothing running, and where its
    /// memory may be written: boot RAM and the plugged blocks (made ready as the devices
    /// were created).
    pub fn build_incoming(
        hypervisor: &dyn Hypervisor,
        payload: &ConfigPayload,
        events: Arc<VmEventSignal>,
        serial_output: SerialOutput,
        seccomp: SeccompMode,
        files: Vec<std::fs::File>,
    ) -> Result<(Vm, Vec<Place>), String> {
        let config: &VmConfig = &payload.config;
        config
            .validate_machine()
            .map_err(|e| format!("its configuration: {e}"))?;
        let vm = Vm::build(
            hypervisor,
            config,
            events,
            serial_output,
            seccomp,
            Some(&payload.memory_devices),
            files,
        )
        .map_err(|e| e.to_string())?;
        let mut ranges = vm.boot_ram_ranges();
        for (d, saved) in vm.memory.devices().zip(&payload.memory_devices) {
            ranges.extend(d.plugged_host_ranges(&saved.mem));
        }
        Ok((vm, places(ranges)))
    }

    /// Brings a migration's `State` into the VM [`build_incoming`](Self::build_incoming)
    /// made, its vCPUs parked. The virtio-mem devices must be in the frozen state the
    /// configuration carried.
    pub fn restore_incoming(&mut self, payload: &[u8]) -> Result<(), String> {
        let state: StatePayload = serde_json::from_slice(payload)
            .map_err(|e| format!("the state cannot be read: {e}"))?;
        for (d, saved) in self
            .memory
            .devices()
            .zip(&state.machine.devices.memory_devices)
        {
            let here = d.handle.status();
            let plugged: u64 =
                saved.mem.plugged.iter().map(|r| r[1]).sum::<u64>() * saved.mem.block_size;
            if here.plugged_size != plugged || here.requested_size != saved.mem.requested_size {
                return Err(format!(
                    "virtio-mem {}: the state has {plugged:#x} plugged and {:#x} requested, the \
                     configuration {:#x} and {:#x}: the device changed during the migration",
                    d.id, saved.mem.requested_size, here.plugged_size, here.requested_size
                ));
            }
        }
        self.restore_machine(state.machine, true)
            .map_err(|e| e.to_string())
    }

    /// The end of an incoming migration: the VM runs (unless `paused`), and each virtio-mem
    /// driver hears a configuration change, so that a request refused BUSY on the source is
    /// retried at once.
    pub fn complete_incoming(&mut self, paused: bool) -> Result<(), String> {
        if !paused {
            self.resume().map_err(|e| e.to_string())?;
        }
        for d in self.memory.devices() {
            d.thaw();
        }
        Ok(())
    }
}
