//! One virtual machine: its memory, devices and vCPUs, built from a `VmConfig`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use hypervisor::Hypervisor;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusError, Buses};
use crate::config::VmConfig;
use crate::devices::{acpi_power, AcpiPowerDevice, I8042Device, SerialDevice, SerialOutput};
use crate::memory_manager::{MemoryError, MemoryManager};
use crate::vcpu_manager::{VcpuContext, VcpuManager};
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
/// interrupt: the DSDT describes them (`\_SB_.GED_`). Placeholder: no device answers at this
/// port yet, so the guest reads 0xff there, and nothing signals the GSI.
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

/// A created VM; `boot` loads the payload and starts the vCPUs.
pub struct Vm {
    config: VmConfig,
    vm: Arc<dyn hypervisor::Vm>,
    supported_cpuid: Vec<hypervisor::CpuIdEntry>,
    memory: MemoryManager,
    buses: Arc<Buses>,
    serial: Arc<Mutex<SerialDevice>>,
    events: Arc<VmEventSignal>,
    vcpus: Option<VcpuManager>,
}

impl Vm {
    pub fn new(
        hypervisor: &dyn Hypervisor,
        config: &VmConfig,
        events: Arc<VmEventSignal>,
        serial_output: SerialOutput,
    ) -> Result<Self, VmError> {
        let vm = hypervisor.create_vm()?;
        vm.create_platform_irqchip()?;
        let memory = MemoryManager::new(&vm, config.memory.size)?;
        let buses = Arc::new(Buses::default());

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(io_err("serial irqfd"))?;
        vm.register_irqfd(&serial_irq, COM1_GSI)?;
        let serial = Arc::new(Mutex::new(
            SerialDevice::new(serial_irq, serial_output).map_err(io_err("serial output"))?,
        ));
        buses
            .pio
            .insert(serial.clone(), u64::from(COM1_PORT), COM1_PORT_COUNT)?;
        buses.pio.insert(
            Arc::new(Mutex::new(I8042Device::new(events.clone()))),
            u64::from(I8042_PORT),
            I8042_PORT_COUNT,
        )?;
        buses.pio.insert(
            Arc::new(Mutex::new(AcpiPowerDevice::new(
                events.clone(),
                acpi::S5_SLEEP_TYPE,
            ))),
            u64::from(ACPI_POWER_PORT),
            acpi_power::PORT_COUNT,
        )?;

        Ok(Vm {
            config: config.clone(),
            vm,
            supported_cpuid: hypervisor.supported_cpuid()?,
            memory,
            buses,
            serial,
            events,
            vcpus: None,
        })
    }

    fn acpi_config(&self) -> acpi::AcpiConfig {
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
            pci: None,
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
        let ctx = VcpuContext {
            buses: self.buses.clone(),
            events: self.events.clone(),
            memory: mem.clone(),
            stop: Arc::new(AtomicBool::new(false)),
        };
        self.vcpus = Some(VcpuManager::start(vcpus, ctx).map_err(io_err("vCPU thread"))?);
        Ok(())
    }

    /// Stops the vCPUs; the VM can then be dropped.
    pub fn shutdown(&mut self) {
        if let Some(mut vcpus) = self.vcpus.take() {
            vcpus.stop();
        }
    }

    pub fn serial(&self) -> &Arc<Mutex<SerialDevice>> {
        &self.serial
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}
