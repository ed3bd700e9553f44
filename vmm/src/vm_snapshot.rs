//! Saving a paused VM to a snapshot directory, and building a VM from one (see
//! `crate::snapshot` for the directory's files).

use std::fs::{self, File};
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::{Vm, VmError};
use crate::config::VmConfig;
use crate::devices::SerialOutput;
use crate::memory::devices::MemoryDevice;
use crate::seccomp::SeccompMode;
use crate::seccomp::{ThreadFilter, ThreadKind};
use crate::snapshot::memory_file::{self, HostRange};
use crate::snapshot::on_demand::{self, LazyRange};
use crate::snapshot::{
    DevicesState, MachineState, MemoryDeviceState, SnapshotError, VmSnapshot, FORMAT, MEMORY_FILE,
    STATE_FILE, VERSION,
};
use crate::vm_event::VmEventSignal;
use hypervisor::Hypervisor;
use std::sync::Arc;

/// How a restore brings guest memory back (Cloud Hypervisor's `memory_restore_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryRestoreMode {
    /// Read the whole memory file before the guest runs.
    #[default]
    Copy,
    /// Fault pages in from the file as the guest touches them.
    OnDemand,
}

/// What `vm.restore` and `--restore` ask for besides the directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Run the guest at once; otherwise it stays paused until `vm.resume`.
    pub resume: bool,
    pub mode: MemoryRestoreMode,
}

/// What a snapshot wrote or a restore read.
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapshotReport {
    /// Bytes of guest memory written to, or read from, the memory file.
    pub memory_bytes: u64,
    /// The memory file's length (its holes included).
    pub memory_file_len: u64,
    /// The state file's length.
    pub state_bytes: u64,
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

fn vm_error(e: VmError) -> SnapshotError {
    SnapshotError::Vm(e.to_string())
}

impl Vm {
    /// Writes the paused VM into `dir`, which must not exist. On failure nothing is left
    /// behind; either way the VM stays paused, as it was.
    pub fn snapshot(&mut self, dir: &Path) -> Result<SnapshotReport, SnapshotError> {
        if !self.paused || self.vcpus.is_none() {
            return Err(SnapshotError::NotPaused);
        }
        fs::create_dir(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SnapshotError::Exists(dir.display().to_string()),
            _ => io_error("cannot create the snapshot directory", dir)(e),
        })?;
        let devices: Vec<&MemoryDevice> = self.memory.devices().collect();
        let written = devices
            .iter()
            .try_for_each(|d| d.pause())
            .map_err(SnapshotError::Vm)
            .and_then(|()| self.write_files(dir));
        // Every device goes on (resuming one that was not paused does nothing).
        for d in &devices {
            d.resume();
        }
        if written.is_err() {
            if let Err(e) = fs::remove_dir_all(dir) {
                log::warn!("removing the partial snapshot {}: {e}", dir.display());
            }
        }
        written
    }

    /// Boot RAM as the VMM maps it.
    pub(crate) fn boot_ram_ranges(&self) -> Vec<HostRange> {
        self.memory
            .guest_memory()
            .iter()
            .filter_map(|region| {
                let host = region.get_host_address(MemoryRegionAddress(0)).ok()?;
                Some(HostRange {
                    gpa: region.start_addr().0,
                    host: host as u64,
                    len: region.len(),
                })
            })
            .collect()
    }

    /// The paused machine's state: the in-kernel devices and clock, each vCPU, the
    /// emulated devices; and the guest memory to save with it (boot RAM, plugged blocks).
    /// The virtio-mem devices must be paused.
    pub(crate) fn machine_state(&self) -> Result<(MachineState, Vec<HostRange>), SnapshotError> {
        let vcpus = self
            .vcpus
            .as_ref()
            .ok_or(SnapshotError::NotPaused)?
            .states()
            .map_err(SnapshotError::Vm)?;
        let vm = self
            .vm
            .state()
            .map_err(|e| SnapshotError::Vm(e.to_string()))?;
        let mut ranges = self.boot_ram_ranges();
        let mut memory_devices = Vec::new();
        for d in self.memory.devices() {
            let (pci, mem) = d.saved().map_err(SnapshotError::Vm)?;
            ranges.extend(d.plugged_host_ranges(&mem));
            memory_devices.push(MemoryDeviceState {
                id: d.id.clone(),
                pci,
                mem,
            });
        }
        let serial = self
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            .into();
        let ged_pending = self.ged.lock().unwrap_or_else(|e| e.into_inner()).pending();
        let devices = DevicesState {
            serial,
            ged_pending,
            pci_config_address: self.pci.config_address(),
            memory_devices,
        };
        Ok((MachineState { vm, vcpus, devices }, ranges))
    }

    fn write_files(&self, dir: &Path) -> Result<SnapshotReport, SnapshotError> {
        let (machine, ranges) = self.machine_state()?;
        let memory_path = dir.join(MEMORY_FILE);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&memory_path)
            .map_err(io_error("cannot create", &memory_path))?;
        // SAFETY: boot RAM stays mapped for the VM's life. The plugged ranges come from the
        // paused devices' own state: plugged blocks are mapped readable, and no unplug can
        // happen while the device threads are stopped and the vCPUs parked.
        let (table, memory_bytes) = unsafe { memory_file::write_ranges(&file, &ranges) }
            .map_err(io_error("cannot write", &memory_path))?;
        file.sync_all()
            .map_err(io_error("cannot write", &memory_path))?;
        let memory_file_len = table.last().map_or(0, |r| r.offset + r.len);

        let snapshot = VmSnapshot {
            format: FORMAT.to_string(),
            version: VERSION,
            config: self.config.clone(),
            vm: machine.vm,
            vcpus: machine.vcpus,
            devices: machine.devices,
            memory: table,
        };
        let text = serde_json::to_vec(&snapshot)
            .map_err(|e| SnapshotError::Vm(format!("encoding the state: {e}")))?;
        let state_path = dir.join(STATE_FILE);
        write_new(&state_path, &text)?;
        Ok(SnapshotReport {
            memory_bytes,
            memory_file_len,
            state_bytes: text.len() as u64,
        })
    }

    /// Builds the VM saved in `dir` and starts its vCPUs, running or paused as `options`
    /// says. `serial_output` gives the serial port's output for the saved configuration.
    /// Nothing is left running on failure.
    pub fn restore(
        hypervisor: &dyn Hypervisor,
        dir: &Path,
        events: Arc<VmEventSignal>,
        serial_output: impl FnOnce(&VmConfig) -> Result<SerialOutput, String>,
        seccomp: SeccompMode,
        options: RestoreOptions,
    ) -> Result<(Vm, SnapshotReport), SnapshotError> {
        let state_path = dir.join(STATE_FILE);
        let memory_path = dir.join(MEMORY_FILE);
        let text = fs::read(&state_path).map_err(io_error("cannot read", &state_path))?;
        let memory_file =
            File::open(&memory_path).map_err(io_error("cannot open", &memory_path))?;
        let memory_file_len = memory_file
            .metadata()
            .map_err(io_error("cannot read", &memory_path))?
            .len();
        let snapshot =
            VmSnapshot::parse(&text, &state_path.display().to_string(), memory_file_len)?;
        let config = &snapshot.config;
        config
            .validate_machine()
            .map_err(|e| SnapshotError::Invalid(format!("its configuration: {e}")))?;
        let output = serial_output(config).map_err(SnapshotError::Vm)?;
        let mut vm = Vm::build(
            hypervisor,
            config,
            events,
            output,
            seccomp,
            Some(&snapshot.devices.memory_devices),
            Vec::new(),
        )
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let places = vm.restore_places(&snapshot)?;
        let memory_bytes = match options.mode {
            MemoryRestoreMode::Copy => load_memory(&places, &memory_file, &memory_path)?,
            MemoryRestoreMode::OnDemand => {
                let filter = ThreadFilter::new(ThreadKind::MemoryLoader, seccomp)
                    .map_err(|e| SnapshotError::Vm(e.to_string()))?;
                let page_size = if config.memory.hugepages
                    || config.memory.zones.iter().flatten().any(|z| z.hugepages)
                {
                    crate::memory::manager::host_huge_page_size()
                } else {
                    4096
                };
                vm.loader = Some(
                    on_demand::start(memory_file, places, page_size, filter)
                        .map_err(|e| SnapshotError::Vm(format!("OnDemand: {e}")))?,
                );
                0
            }
        };
        let machine = MachineState {
            vm: snapshot.vm,
            vcpus: snapshot.vcpus,
            devices: snapshot.devices,
        };
        vm.restore_machine(machine, !options.resume)?;
        Ok((
            vm,
            SnapshotReport {
                memory_bytes,
                memory_file_len,
                state_bytes: text.len() as u64,
            },
        ))
    }

    /// Brings the machine `state` (a snapshot's or a migration's) into this VM, built from
    /// the same configuration with its memory in place, and starts its vCPUs, parked when
    /// `paused`.
    pub(crate) fn restore_machine(
        &mut self,
        mut state: MachineState,
        paused: bool,
    ) -> Result<(), SnapshotError> {
        let count = self.config.cpus.boot_vcpus;
        if state.vcpus.len() != count as usize {
            return Err(SnapshotError::Invalid(format!(
                "{} vCPU states for a configuration of {count} vCPUs",
                state.vcpus.len()
            )));
        }
        let devices = &state.devices;
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_state(&(&devices.serial).into())
            .map_err(|e| SnapshotError::Invalid(format!("the serial port: {e}")))?;
        self.ged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_pending(devices.ged_pending);
        self.pci.set_config_address(devices.pci_config_address);
        let ids: Vec<&str> = self.memory.devices().map(|d| d.id.as_str()).collect();
        let saved_ids: Vec<&str> = devices
            .memory_devices
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        if ids != saved_ids {
            return Err(SnapshotError::Invalid(format!(
                "the state has virtio-mem devices {saved_ids:?}, the VM {ids:?}"
            )));
        }
        for (d, saved) in self.memory.devices().zip(&devices.memory_devices) {
            d.restore_function(&saved.pci, &self.pci)
                .map_err(SnapshotError::Invalid)?;
            d.start_restored().map_err(SnapshotError::Invalid)?;
        }
        // Each vCPU's TSC, then the clock, back to back as they were read (see
        // `write_files`), before anything else: KVM arms a restored LAPIC timer against the
        // TSC, and treats a second TSC write within a second of the first as the same one,
        // so the TSC does not go with the rest of the MSRs.
        let mut vcpus = Vec::with_capacity(count as usize);
        for (id, vcpu_state) in (0..count).zip(&state.vcpus) {
            let vcpu = self
                .vm
                .create_vcpu(id)
                .map_err(|e| SnapshotError::Vm(e.to_string()))?;
            check_cpu_features(vcpu.as_ref(), &self.supported_cpuid, id, count, vcpu_state)?;
            vcpus.push(vcpu);
        }
        for (vcpu, vcpu_state) in vcpus.iter().zip(state.vcpus.iter_mut()) {
            let tsc = vcpu_state
                .msrs
                .iter()
                .position(|m| m.index == arch::msrs::MSR_IA32_TSC)
                .map(|i| vcpu_state.msrs.remove(i).data);
            if let Some(tsc) = tsc {
                vcpu.set_msrs(&[(arch::msrs::MSR_IA32_TSC, tsc)])
                    .map_err(|e| SnapshotError::Vm(e.to_string()))?;
            }
        }
        self.vm
            .set_clock(&state.vm.clock)
            .map_err(|e| SnapshotError::Invalid(format!("the clock: {e}")))?;
        for (id, (vcpu, vcpu_state)) in vcpus.iter().zip(&state.vcpus).enumerate() {
            vcpu.set_state(vcpu_state)
                .map_err(|e| SnapshotError::Invalid(format!("vcpu{id}'s state: {e}")))?;
        }
        self.vm
            .set_state(&state.vm)
            .map_err(|e| SnapshotError::Invalid(format!("the irqchip, PIT and clock: {e}")))?;
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .raise_pending_interrupt()
            .map_err(|e| SnapshotError::Vm(format!("the serial port's interrupt: {e}")))?;
        self.start_vcpus(vcpus, paused).map_err(vm_error)?;
        self.paused = paused;
        Ok(())
    }

    /// Where each range of the memory file goes: boot RAM or a plugged block of this new VM
    /// (the devices made theirs ready as they were created). Every range must lie in one.
    fn restore_places(&self, snapshot: &VmSnapshot) -> Result<Vec<LazyRange>, SnapshotError> {
        let mut places = self.boot_ram_ranges();
        for (d, saved) in self.memory.devices().zip(&snapshot.devices.memory_devices) {
            places.extend(d.plugged_host_ranges(&saved.mem));
        }
        snapshot
            .memory
            .iter()
            .map(|range| {
                let place = places
                    .iter()
                    .find(|p| {
                        range.gpa >= p.gpa
                            && range
                                .gpa
                                .checked_add(range.len)
                                .is_some_and(|end| end <= p.gpa + p.len)
                    })
                    .ok_or_else(|| {
                        SnapshotError::Invalid(format!(
                            "memory range {:#x}+{:#x} is neither boot RAM nor plugged virtio-mem memory",
                            range.gpa, range.len
                        ))
                    })?;
                Ok(LazyRange {
                    saved: *range,
                    host: place.host + (range.gpa - place.gpa),
                })
            })
            .collect()
    }
}

/// Reads the memory file into `places` (from [`Vm::restore_places`]); returns the bytes
/// read.
fn load_memory(places: &[LazyRange], file: &File, path: &Path) -> Result<u64, SnapshotError> {
    let mut read = 0;
    for place in places {
        // SAFETY: the place lies in boot RAM or a plugged block of the VM being restored
        // (`restore_places` checked it), mapped writable, still all zeros, and nothing
        // runs in that VM yet.
        read += unsafe { memory_file::read_range(file, &place.saved, place.host) }
            .map_err(io_error("cannot read", path))?;
    }
    Ok(read)
}

/// Whether vCPU `id` of this host can run a guest that ran with `saved`'s CPUID: what the
/// vCPU has in effect once given this host's CPUID (which KVM may extend, as KVM-PVM does)
/// must hold every feature bit the saved one has.
fn check_cpu_features(
    vcpu: &dyn hypervisor::Vcpu,
    supported: &[hypervisor::CpuIdEntry],
    id: u32,
    count: u32,
    saved: &hypervisor::VcpuState,
) -> Result<(), SnapshotError> {
    let vm_error = |e: hypervisor::HypervisorError| SnapshotError::Vm(e.to_string());
    vcpu.set_cpuid(&arch::cpuid::vcpu_cpuid(supported, id, count))
        .map_err(vm_error)?;
    let here = vcpu.cpuid().map_err(vm_error)?;
    let missing = arch::cpuid::missing_features(&saved.cpuid, &here);
    if missing.is_empty() {
        return Ok(());
    }
    Err(SnapshotError::Host(format!(
        "vcpu{id} ran with CPU features this host's KVM does not offer: {}",
        missing.join(", ")
    )))
}

/// Creates `path` (it must not exist) with `bytes`, on disk when this returns.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Write;
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("cannot create", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cannot write", path))
}
