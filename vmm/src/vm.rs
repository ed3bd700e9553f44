//! One virtual machine: its memory, devices and vCPUs, built from a `VmConfig`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use hypervisor::Hypervisor;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{Bus, BusError, Buses};
use crate::config::VmConfig;
use crate::devices::serial::SerialCounters;
use crate::devices::serial_output::OutputQueue;
use crate::devices::{
    acpi_power, AcpiPowerDevice, GedDevice, I8042Device, SerialDevice, SerialOutput,
};
use crate::memory::manager::{MemoryError, MemoryManager};
use crate::pci_host::PciHost;
use crate::seccomp::{SeccompError, SeccompMode, ThreadFilter, ThreadKind};
use crate::vcpu_exits::ExitCounters;
use crate::vcpu_manager::{PauseGate, VcpuContext, VcpuManager};
use crate::vm_event::VmEventSignal;

/// Legacy I/O ports and interrupt lines.
pub const COM1_PORT: u16 = 0x3f8;
pub const COM1_PORT_COUNT: u64 = 8;
pub const COM1_GSI: u32 = 4;
pub const I8042_PORT: u16 = 0x60;
/// 0x60 (data) through 0x64 (command/status); 0x61 is the PIT's, handled in KVM.
pub const I8042_PORT_COUNT: u64 = 5;
pub const ACPI_POWER_PORT: u16 = 0x600;
/// The ACPI Generic Event Device's event register (`acpi::GED_PORT_COUNT` ports) and its
/// interrupt, as the DSDT describes them (`\_SB_.GED_`); the power button goes through it.
pub const GED_PORT: u16 = 0x610;
pub const GED_GSI: u32 = 5;
const IOAPIC_ID: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Hypervisor(#[from] hypervisor::HypervisorError),
    #[error("{0}")]
    Memory(#[from] MemoryError),
    #[error("{0}")]
    Arch(#[from] arch::Error),
    #[error("cannot build the ACPI tables: {0}")]
    Acpi(#[from] acpi::Error),
    #[error("device setup: {0}")]
    Bus(#[from] BusError),
    #[error("{0}")]
    Pci(#[from] crate::pci_host::PciHostError),
    #[error("{0}")]
    MemoryDevice(#[from] crate::memory::devices::MemoryDeviceError),
    #[error("{0}")]
    State(&'static str),
    #[error("{0}")]
    Seccomp(#[from] SeccompError),
    #[error("cannot pause: {0}")]
    Pause(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

#[path = "vm_snapshot.rs"]
mod snapshot;
pub use snapshot::{MemoryRestoreMode, RestoreOptions, SnapshotReport};
#[path = "vm_migration.rs"]
mod migration;
pub use migration::OutgoingMemory;

/// A created VM; `boot` loads the payload and starts the vCPUs.
pub struct Vm {
    /// An `OnDemand` restore's memory loader; stopped before guest memory goes.
    loader: Option<crate::snapshot::on_demand::OnDemandMemory>,
    config: VmConfig,
    vm: Arc<dyn hypervisor::Vm>,
    supported_cpuid: Vec<hypervisor::CpuIdEntry>,
    /// Guest memory and each zone's virtio-mem device; `shutdown`, run by `Drop`, stops the
    /// device threads before any of it is dropped.
    memory: MemoryManager,
    buses: Arc<Buses>,
    serial: Arc<Mutex<SerialDevice>>,
    serial_counters: Arc<SerialCounters>,
    /// The guest's serial output waiting for the control loop (none when it is off).
    serial_output: Option<Arc<OutputQueue>>,
    /// The vCPUs' exits since this boot.
    exits: Arc<ExitCounters>,
    ged: Arc<Mutex<GedDevice>>,
    pci: PciHost,
    events: Arc<VmEventSignal>,
    vcpus: Option<VcpuManager>,
    paused: bool,
    /// The vCPU threads' seccomp filter.
    vcpu_filter: ThreadFilter,
}

/// The guest-physical address width KVM reports (CPUID 0x80000008, EAX bits 7:0); 36, the
/// architectural minimum, when it reports none.
fn physical_address_bits(cpuid: &[hypervisor::CpuIdEntry]) -> u32 {
    cpuid
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map(|e| e.eax & 0xff)
        .filter(|&bits| bits >= 32)
        .unwrap_or(36)
}

impl Vm {
    pub fn new(
        hypervisor: &dyn Hypervisor,
        config: &VmConfig,
        events: Arc<VmEventSignal>,
        serial_output: SerialOutput,
        seccomp: SeccompMode,
    ) -> Result<Self, VmError> {
        Self::build(
            hypervisor,
            config,
            events,
            serial_output,
            seccomp,
            None,
            Vec::new(),
        )
    }

    /// A VM built from `config`, its virtio-mem devices in the states `saved` gives (a
    /// snapshot's or a migration's) or fresh, its memory in new memfds or in `files` (a
    /// local migration's, in `MemoryManager::backing_files` order). Nothing runs yet; the
    /// other devices' state comes with [`Vm::restore_machine`].
    #[allow(clippy::too_many_arguments)]
    fn build(
        hypervisor: &dyn Hypervisor,
        config: &VmConfig,
        events: Arc<VmEventSignal>,
        serial_output: SerialOutput,
        seccomp: SeccompMode,
        saved: Option<&[crate::snapshot::MemoryDeviceState]>,
        files: Vec<std::fs::File>,
    ) -> Result<Self, VmError> {
        // Compiled here, on the VMM thread, so that a bad filter fails the VM's creation.
        let vcpu_filter = ThreadFilter::new(ThreadKind::Vcpu, seccomp)?;
        let virtio_mem_filter = ThreadFilter::new(ThreadKind::VirtioMem, seccomp)?;
        let vm = hypervisor.create_vm()?;
        vm.create_platform_irqchip()?;
        let supported_cpuid = hypervisor.supported_cpuid()?;
        let mut memory = MemoryManager::new(
            &vm,
            config,
            hypervisor.max_memslots(),
            physical_address_bits(&supported_cpuid),
            files,
        )?;
        let buses = Arc::new(Buses::default());
        let mut pci = PciHost::new(&buses, memory.mmio64_start())?;
        let routing = Arc::new(pci::GsiRoutingTable::new(vm.clone()));
        memory.add_devices(
            crate::memory::devices::DeviceContext {
                vm: &vm,
                routing: &routing,
                pci: &mut pci,
                mmio: &buses.mmio,
                with_numa: config.numa.is_some(),
                seccomp: &virtio_mem_filter,
                device_work: {
                    let events = events.clone();
                    Arc::new(move || events.request_device_work())
                },
                stall_timeout: std::time::Duration::from_secs(config.memory.stall_timeout_s),
            },
            saved,
        )?;

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("serial irqfd"))?;
        vm.register_irqfd(&serial_irq, COM1_GSI)?;
        let serial_device = SerialDevice::new(
            serial_irq,
            serial_output,
            ThreadFilter::new(ThreadKind::SerialOutput, seccomp)?,
        )
        .map_err(io_err("serial output"))?;
        let serial_counters = serial_device.counters();
        let serial_output = serial_device.output();
        let serial = Arc::new(Mutex::new(serial_device));
        buses.pio.insert(
            "serial",
            serial.clone(),
            u64::from(COM1_PORT),
            COM1_PORT_COUNT,
        )?;
        buses.pio.insert(
            "i8042",
            Arc::new(Mutex::new(I8042Device::new(events.clone()))),
            u64::from(I8042_PORT),
            I8042_PORT_COUNT,
        )?;
        buses.pio.insert(
            "acpi-power",
            Arc::new(Mutex::new(AcpiPowerDevice::new(
                events.clone(),
                acpi::S5_SLEEP_TYPE,
            ))),
            u64::from(ACPI_POWER_PORT),
            acpi_power::PORT_COUNT,
        )?;
        let ged_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("GED irqfd"))?;
        vm.register_irqfd(&ged_irq, GED_GSI)?;
        let ged = Arc::new(Mutex::new(GedDevice::new(ged_irq)));
        buses.pio.insert(
            "ged",
            ged.clone(),
            u64::from(GED_PORT),
            acpi::GED_PORT_COUNT,
        )?;

        Ok(Vm {
            loader: None,
            config: config.clone(),
            vm,
            supported_cpuid,
            memory,
            buses,
            serial,
            serial_counters,
            serial_output,
            exits: Arc::default(),
            ged,
            pci,
            events,
            vcpus: None,
            paused: false,
            vcpu_filter,
        })
    }

    fn acpi_config(&self) -> acpi::AcpiConfig {
        let (numa, numa_distances) =
            crate::memory::numa::acpi_numa(&self.config, self.memory.zones());
        acpi::AcpiConfig {
            num_vcpus: self.config.cpus.boot_vcpus,
            ioapic_id: IOAPIC_ID,
            ioapic_addr: arch::layout::IOAPIC_START as u32,
            ioapic_gsi_base: 0,
            lapic_addr: arch::layout::APIC_START as u32,
            com1_port: COM1_PORT,
            com1_irq: COM1_GSI as u8,
            sleep_control_port: ACPI_POWER_PORT + acpi_power::SLEEP_CONTROL_OFFSET as u16,
            sleep_status_port: ACPI_POWER_PORT + acpi_power::SLEEP_STATUS_OFFSET as u16,
            reset_port: ACPI_POWER_PORT + acpi_power::RESET_OFFSET as u16,
            reset_value: acpi_power::RESET_VALUE,
            ged_port: GED_PORT,
            ged_irq: GED_GSI,
            pci: Some(self.pci.acpi_bridge()),
            numa,
            numa_distances,
        }
    }

    /// Writes the ACPI tables, loads the payload, and starts every vCPU.
    pub fn boot(&mut self) -> Result<(), VmError> {
        let mem = self.memory.guest_memory();
        let rsdp = acpi::create_acpi_tables(
            mem,
            GuestAddress(arch::layout::RSDP_POINTER),
            GuestAddress(arch::layout::ACPI_END),
            &self.acpi_config(),
        )?;
        arch::reset_vector::write_reset_vector(
            mem,
            ACPI_POWER_PORT + acpi_power::RESET_OFFSET as u16,
            acpi_power::RESET_VALUE,
        )?;
        let payload = &self.config.payload;
        let entry = arch::load_kernel(
            mem,
            self.memory.ram_size(),
            &arch::KernelPayload {
                kernel: &payload.kernel,
                initramfs: payload.initramfs.as_deref(),
                cmdline: payload.cmdline.as_deref().unwrap_or(""),
            },
            rsdp,
        )?;
        log::info!(
            "kernel loaded: {:?} entry at {:#x}",
            entry.protocol,
            entry.entry_addr.0
        );

        let count = self.config.cpus.boot_vcpus;
        let mut vcpus = Vec::with_capacity(count as usize);
        for id in 0..count {
            let vcpu = self.vm.create_vcpu(id)?;
            arch::regs::configure_vcpu(vcpu.as_ref(), &self.supported_cpuid, id, count)?;
            if id == 0 {
                arch::regs::setup_boot_registers(vcpu.as_ref(), mem, &entry)?;
            }
            vcpus.push(vcpu);
        }
        self.start_vcpus(vcpus, false)
    }

    /// Opens the serial output and starts one thread per vCPU, parked at once when `paused`.
    fn start_vcpus(
        &mut self,
        vcpus: Vec<Box<dyn hypervisor::Vcpu>>,
        paused: bool,
    ) -> Result<(), VmError> {
        let ctx = VcpuContext {
            buses: self.buses.clone(),
            events: self.events.clone(),
            memory: self.memory.access().view().clone(),
            stop: Arc::new(AtomicBool::new(false)),
            pause: Arc::new(PauseGate::default()),
            exits: self.exits.clone(),
            seccomp: self.vcpu_filter.clone(),
        };
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start_output()
            .map_err(io_err("the serial log file"))?;
        self.vcpus = Some(VcpuManager::start(vcpus, ctx, paused).map_err(io_err("vCPU thread"))?);
        Ok(())
    }

    /// Stops the vCPUs; the VM can then be dropped.
    pub fn shutdown(&mut self) {
        if let Some(mut vcpus) = self.vcpus.take() {
            vcpus.stop();
        }
        for device in self.memory.devices() {
            device.stop();
        }
        // Nothing touches guest memory any more.
        self.loader = None;
        self.paused = false;
        self.flush_serial();
    }

    /// Writes out the guest's serial output that is waiting.
    pub fn flush_serial(&self) {
        if let Some(output) = &self.serial_output {
            output.flush();
        }
    }

    pub fn serial(&self) -> &Arc<Mutex<SerialDevice>> {
        &self.serial
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Stops every vCPU where it is; the guest notices nothing but lost time.
    pub fn pause(&mut self) -> Result<(), VmError> {
        let vcpus = match (&self.vcpus, self.paused) {
            (Some(v), false) => v,
            (Some(_), true) => return Err(VmError::State("the VM is already paused")),
            (None, _) => return Err(VmError::State("the VM is not running")),
        };
        vcpus.pause().map_err(VmError::Pause)?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), VmError> {
        match (&self.vcpus, self.paused) {
            (Some(v), true) => v.resume(),
            (Some(_), false) => return Err(VmError::State("the VM is not paused")),
            (None, _) => return Err(VmError::State("the VM is not running")),
        }
        self.paused = false;
        Ok(())
    }

    /// Presses the ACPI power button; what follows is up to the guest.
    pub fn power_button(&self) -> Result<(), VmError> {
        if self.vcpus.is_none() {
            return Err(VmError::State("the VM is not running"));
        }
        self.ged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .notify(acpi::GED_EVENT_POWER_BUTTON)
            .map_err(io_err("GED interrupt"))
    }

    /// Counters for `vm.counters`: device (or group) name, then counter name and value.
    pub fn counters(&self) -> Vec<(String, Vec<(String, u64)>)> {
        use std::sync::atomic::Ordering::Relaxed;
        let named = |values: Vec<(&'static str, u64)>| {
            values
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect()
        };
        let mut all = vec![(
            "serial".to_string(),
            named(vec![
                ("tx_bytes", self.serial_counters.tx_bytes.load(Relaxed)),
                ("rx_bytes", self.serial_counters.rx_bytes.load(Relaxed)),
            ]),
        )];
        for d in self.memory.devices() {
            all.push((format!("virtio-mem-{}", d.id), named(d.counters())));
        }
        all.push(("vcpu-exits".to_string(), named(self.exits.counters())));
        all.push(("pio-accesses".to_string(), access_counters(&self.buses.pio)));
        all.push((
            "mmio-accesses".to_string(),
            access_counters(&self.buses.mmio),
        ));
        all
    }

    /// Guest RAM in bytes: boot RAM and what the guest has plugged.
    pub fn memory_actual_size(&self) -> u64 {
        self.memory.actual_size()
    }

    pub fn memory(&self) -> &MemoryManager {
        &self.memory
    }

    /// Reports stalled resizes; returns whether any device is still on its way.
    pub fn watch_resizes(&self) -> bool {
        // Every device is checked (each may report its stall), so no short circuit.
        let states: Vec<bool> = self.memory.devices().map(|d| d.watch_resize()).collect();
        states.contains(&true)
    }

    /// Starts and stops device threads the guest's drivers asked for (DRIVER_OK, reset).
    pub fn service_device_work(&self) {
        for device in self.memory.devices() {
            device.service_deferred();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A bus's accesses for `vm.counters`: `<range>` and `<range>_ns` for each named range,
/// and `unmapped` (where nothing answers).
fn access_counters(bus: &Bus) -> Vec<(String, u64)> {
    bus.access_counts()
        .into_iter()
        .flat_map(|r| {
            [
                (format!("{}_ns", r.name), r.handling_ns),
                (r.name, r.accesses),
            ]
        })
        .collect()
}
