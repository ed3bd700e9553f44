//! Guest memory: boot RAM (the layout's ranges, split among memory zones, one memslot per
//! range) and one device region per virtio-mem device. Device regions are reserved with
//! `MAP_NORESERVE` and, unless a zone says `unplugged_inaccessible=off`, `PROT_NONE`: they
//! cost nothing until the guest plugs blocks, and their memslots are added by the device's
//! backend as blocks are plugged ([`super::protected`]). The memslot numbers of each region
//! are reserved here, and checked against what KVM supports.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use hypervisor::MemoryRegion;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress,
};

use super::access::{AccessibleMemory, RegionMapping};
use super::devices::{DeviceContext, MemoryDevice, MemoryDeviceError};
use super::resize::ResizeError;
use crate::config::VmConfig;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {size} bytes of guest memory: {reason}")]
    Allocate { size: u64, reason: String },
    #[error("cannot map guest memory at {addr:#x} into the VM: {source}")]
    Map {
        addr: u64,
        #[source]
        source: hypervisor::HypervisorError,
    },
    #[error("--memory: the virtio-mem regions do not fit in the guest's address space")]
    Layout,
    #[error("the memory layout needs {needed} memslots and KVM supports {max}: use a larger slot_size= on --memory or --memory-zone")]
    TooManySlots { needed: u64, max: u64 },
    #[error("--memory: hugepages=on: block_size={block_size} is not a multiple of this host's huge page size ({huge_page_size}); use block_size={huge_page_size} or a multiple")]
    HugePageBlock {
        block_size: u64,
        huge_page_size: u64,
    },
    #[error("the VMM's view of guest memory: {0}")]
    View(String),
    #[error("the memory layout ends at {end:#x} (virtio-mem regions and the 64-bit PCI window), beyond the {bits}-bit physical addresses this host's CPUs (and so KVM) can map: make hotplug_size smaller")]
    AddressSpace { end: u64, bits: u32 },
    #[error("{0}")]
    SavedDevices(String),
    #[error("{0}")]
    Device(#[from] MemoryDeviceError),
}

/// How a mapping is backed, for discarding unplugged blocks: private anonymous memory, or a
/// memfd (hugetlb or not) mapped shared or private from offset 0. One type with the device's
/// discard backend, which acts on it.
pub use virtio_devices::mem::Backing;
use virtio_devices::mem::MemGeometry;

/// One virtio-mem device's region of guest physical memory.
#[derive(Clone, Debug)]
pub struct DeviceRegion {
    pub addr: u64,
    pub size: u64,
    /// Plugged at boot.
    pub hotplugged_size: u64,
    pub block_size: u64,
    pub host_addr: u64,
    pub backing: Backing,
    pub page_size: u64,
    pub prefault: bool,
    /// The size of each memslot the region is cut into.
    pub slot_size: u64,
    /// KVM memslot number of the region's first slot (the rest follow).
    pub first_slot: u32,
    /// Unplugged memory is `PROT_NONE` and slots are mapped as blocks are plugged
    /// (`unplugged_inaccessible=on`, the default).
    pub protect: bool,
    /// The `mmap` flags of the host mapping.
    pub mmap_flags: i32,
}

/// Where a memory zone is: its boot RAM on one node, and possibly a virtio-mem region.
/// Placed from the configuration alone (no host memory, no KVM), so resizes and layouts can
/// be checked without a VM.
#[derive(Clone, Debug)]
pub struct ZoneLayout {
    /// The `--memory-zone` id, or `default` for `--memory`.
    pub id: String,
    /// Guest NUMA node (0 without `--numa`).
    pub node: u32,
    /// Boot RAM ranges (start, size) of this zone.
    pub boot_ranges: Vec<(u64, u64)>,
    /// The virtio-mem device's region, if the zone has `hotplug_size`.
    pub region: Option<DeviceRegion>,
}

impl DeviceRegion {
    /// The region's shape as its device sees it: the rules a requested size must follow.
    pub fn geometry(&self) -> Result<MemGeometry, virtio_devices::mem::SetupError> {
        MemGeometry::new(self.addr, self.size, self.block_size)
    }
}

impl ZoneLayout {
    /// Boot RAM of the zone in bytes.
    pub fn boot_size(&self) -> u64 {
        self.boot_ranges.iter().map(|r| r.1).sum()
    }
}

impl AsRef<ZoneLayout> for ZoneLayout {
    fn as_ref(&self) -> &ZoneLayout {
        self
    }
}

/// A memory zone of a running VM: its layout (with its region, slot size and backing) and
/// the virtio-mem device that plugs its region.
pub struct MemoryZone {
    pub layout: ZoneLayout,
    /// Set for every zone with a region once [`MemoryManager::add_devices`] has run.
    pub device: Option<MemoryDevice>,
}

impl AsRef<ZoneLayout> for MemoryZone {
    fn as_ref(&self) -> &ZoneLayout {
        &self.layout
    }
}

/// Owns guest memory, the memslots that expose it, and each zone's virtio-mem device.
pub struct MemoryManager {
    /// Boot RAM only: what the boot loader writes.
    guest_memory: GuestMemoryMmap,
    /// What the VMM's threads may touch: boot RAM and plugged device memory.
    access: Arc<AccessibleMemory>,
    ram_size: u64,
    zones: Vec<MemoryZone>,
    slots: Vec<MemoryRegion>,
    mmio64_start: u64,
}

/// What a zone asks for, before placement.
struct ZoneRequest {
    id: String,
    node: u32,
    boot_size: u64,
    hotplug: Option<(u64, u64)>,
    shared: bool,
    hugepages: bool,
    prefault: bool,
    slot_size: Option<u64>,
    protect: bool,
}

fn zone_requests(config: &VmConfig) -> Vec<ZoneRequest> {
    let m = &config.memory;
    let node_of = |zone: &str| {
        config
            .numa
            .iter()
            .flatten()
            .find(|n| n.memory_zones.iter().flatten().any(|z| z == zone))
            .map(|n| n.guest_numa_id)
            .unwrap_or(0)
    };
    match &m.zones {
        Some(zones) => zones
            .iter()
            .map(|z| ZoneRequest {
                id: z.id.clone(),
                node: node_of(&z.id),
                boot_size: z.size,
                hotplug: z.hotplug_size.map(|h| (h, z.hotplugged_size.unwrap_or(0))),
                shared: z.shared || m.shared,
                hugepages: z.hugepages || m.hugepages,
                prefault: z.prefault || m.prefault,
                slot_size: z.slot_size.or(m.slot_size),
                protect: z.unplugged_inaccessible.unwrap_or(m.unplugged_inaccessible),
            })
            .collect(),
        None => vec![ZoneRequest {
            id: "default".into(),
            node: 0,
            boot_size: m.size,
            hotplug: m.hotplug_size.map(|h| (h, m.hotplugged_size.unwrap_or(0))),
            shared: m.shared,
            hugepages: m.hugepages,
            prefault: m.prefault,
            slot_size: m.slot_size,
            protect: m.unplugged_inaccessible,
        }],
    }
}

/// Splits the boot RAM ranges among zones of `sizes` bytes, in order.
fn split_ranges(ranges: &[(u64, u64)], sizes: &[u64]) -> Vec<Vec<(u64, u64)>> {
    let mut out = Vec::with_capacity(sizes.len());
    let mut iter = ranges.iter().copied();
    let mut current = iter.next();
    for &size in sizes {
        let mut left = size;
        let mut mine = Vec::new();
        while left > 0 {
            let Some((start, len)) = current else { break };
            let take = left.min(len);
            mine.push((start, take));
            left -= take;
            current = if take == len {
                iter.next()
            } else {
                Some((start + take, len - take))
            };
        }
        out.push(mine);
    }
    out
}

/// The host's default huge page size (`Hugepagesize` in /proc/meminfo), which a hugetlb
/// memfd without a size flag uses; 2 MiB when it cannot be read.
pub fn host_huge_page_size() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| parse_huge_page_size(&m))
        .unwrap_or(2 << 20)
}

fn parse_huge_page_size(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024).filter(|size| size.is_power_of_two())
}

/// How a guest memory mapping is backed.
#[derive(Clone, Copy)]
struct Backed {
    /// A shared memfd rather than private memory.
    shared: bool,
    /// hugetlb pages.
    hugepages: bool,
    /// Transparent huge pages asked for (true) or refused (false); hugetlb has its own.
    thp: bool,
}

/// Maps `size` bytes: private anonymous, or a memfd (hugetlb with `hugepages`) mapped shared.
/// `extra_flags`: `MAP_NORESERVE` for device regions, `MAP_POPULATE` for prefaulted boot RAM.
/// `prot`: read-write, or `PROT_NONE` for a protected device region.
/// `given`: the memfd to map instead of a new one (a local migration's, which holds the
/// guest's memory already); it must be shared memory of exactly `size` bytes.
fn map(
    name: &std::ffi::CStr,
    size: u64,
    backed: Backed,
    extra_flags: i32,
    prot: i32,
    given: Option<File>,
) -> Result<(vm_memory::mmap::MmapRegion, Backing), MemoryError> {
    let Backed {
        shared, hugepages, ..
    } = backed;
    let fail = |reason: String| MemoryError::Allocate { size, reason };
    let len = usize::try_from(size).map_err(|_| fail("too large for this host".into()))?;
    let mut flags = extra_flags;
    let (file, backing) =
        if shared || hugepages {
            let file =
                match given {
                    Some(file) => {
                        let given_len = file
                            .metadata()
                            .map_err(|e| fail(format!("the memory file passed: {e}")))?
                            .len();
                        if !shared || given_len != size {
                            return Err(fail(format!(
                        "the memory file passed is {given_len} bytes{}; this mapping needs \
                         {size} bytes of shared memory",
                        if shared { "" } else { " and the zone is private" }
                    )));
                        }
                        // The memory is in it already: no MAP_POPULATE, no new pages.
                        flags &= !libc::MAP_POPULATE;
                        Arc::new(file)
                    }
                    None => {
                        let mut memfd_flags = libc::MFD_CLOEXEC;
                        if hugepages {
                            memfd_flags |= libc::MFD_HUGETLB;
                        }
                        // SAFETY: `name` is a NUL-terminated C string; memfd_create returns a new
                        // descriptor or -1.
                        let fd = unsafe { libc::memfd_create(name.as_ptr(), memfd_flags) };
                        if fd < 0 {
                            return Err(fail(format!(
                                "memfd_create: {}",
                                std::io::Error::last_os_error()
                            )));
                        }
                        // SAFETY: `fd` is the new descriptor from memfd_create, owned from here on.
                        let file = Arc::new(unsafe { File::from_raw_fd(fd) });
                        file.set_len(size)
                            .map_err(|e| fail(format!("sizing the memfd: {e}")))?;
                        file
                    }
                };
            if shared {
                flags |= libc::MAP_SHARED;
                (
                    Some(file.clone()),
                    Backing::SharedFile {
                        file,
                        file_offset: 0,
                    },
                )
            } else {
                flags |= libc::MAP_PRIVATE;
                (
                    Some(file.clone()),
                    Backing::PrivateFile {
                        file,
                        file_offset: 0,
                    },
                )
            }
        } else {
            if given.is_some() {
                return Err(fail(
                    "a memory file was passed for private anonymous memory".to_string(),
                ));
            }
            flags |= libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            (None, Backing::PrivateAnonymous)
        };
    let mut builder = MmapRegionBuilder::new(len)
        .with_mmap_prot(prot)
        .with_mmap_flags(flags);
    if let Some(file) = &file {
        builder = builder.with_file_offset(FileOffset::from_arc(file.clone(), 0));
    }
    let region = builder.build().map_err(|e| {
        fail(if hugepages {
            format!(
                "{e} (are enough {} KiB huge pages reserved in /proc/sys/vm/nr_hugepages?)",
                host_huge_page_size() >> 10
            )
        } else {
            e.to_string()
        })
    })?;
    if !hugepages {
        advise_huge_pages(&region, backed.thp);
    }
    Ok((region, backing))
}

/// Asks the host for transparent huge pages on `region` (`thp`), as QEMU and Cloud
/// Hypervisor do for guest RAM, or refuses them. Where THP is `madvise` (Ubuntu's
/// default), guest memory would otherwise get 4 KiB pages, and where it is `always`, a
/// fragmented host falls back to 4 KiB pages rather than compact. With 4 KiB pages, KVM
/// maps the guest's memory 4 KiB at a time too: a fault per 4 KiB the guest first touches,
/// and a TLB entry per 4 KiB afterwards. (In the nested test host, boots that ran late in
/// a long benchmark reached init 1.4x later than Cloud Hypervisor's.) A host without THP
/// refuses the advice; that costs nothing but the pages.
fn advise_huge_pages(region: &vm_memory::mmap::MmapRegion, thp: bool) {
    let (advice, name) = if thp {
        (libc::MADV_HUGEPAGE, "MADV_HUGEPAGE")
    } else {
        (libc::MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE")
    };
    // SAFETY: the range is exactly the mapping `region` owns; the advice changes how the
    // kernel backs it, never its contents.
    let ret = unsafe { libc::madvise(region.as_ptr().cast(), region.size(), advice) };
    if ret != 0 {
        log::debug!(
            "madvise({name}) on guest memory: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The zones `config` describes, placed in the guest's address space without mapping
/// anything: each zone's boot RAM ranges, and its virtio-mem region's address, size and block
/// size; also where the 64-bit PCI window starts. Device regions have no host mapping yet
/// (`host_addr` 0, private anonymous): [`MemoryManager::new`] maps what this places. Resizes
/// can be planned against these zones without a VM (the API fuzz harness does).
pub fn place_zones(config: &VmConfig) -> Result<(Vec<ZoneLayout>, u64), MemoryError> {
    place(&zone_requests(config), config)
}

fn place(
    requests: &[ZoneRequest],
    config: &VmConfig,
) -> Result<(Vec<ZoneLayout>, u64), MemoryError> {
    let ram_size = config.memory.boot_ram();
    let block_size = config.memory.block_size;
    let boot_ranges = arch::layout::ram_ranges(ram_size);
    let sizes: Vec<u64> = requests.iter().map(|z| z.boot_size).collect();
    let per_zone = split_ranges(&boot_ranges, &sizes);
    let hotplug_sizes: Vec<u64> = requests
        .iter()
        .filter_map(|z| z.hotplug.map(|h| h.0))
        .collect();
    let (device_starts, mmio64_start) =
        arch::layout::place_device_regions(ram_size, block_size, &hotplug_sizes)
            .ok_or(MemoryError::Layout)?;
    let mut starts = device_starts.into_iter();
    let mut zones = Vec::with_capacity(requests.len());
    // Boot RAM takes the first memslots, one per range; device regions follow.
    let mut next_slot = boot_ranges.len() as u64;
    let huge_page_size = host_huge_page_size();
    if requests.iter().any(|r| r.hugepages && r.hotplug.is_some())
        && !block_size.is_multiple_of(huge_page_size)
    {
        return Err(MemoryError::HugePageBlock {
            block_size,
            huge_page_size,
        });
    }
    for (request, ranges) in requests.iter().zip(per_zone) {
        let region = match request.hotplug {
            Some((size, hotplugged_size)) => {
                let slot_size = request
                    .slot_size
                    .unwrap_or_else(|| super::slots::default_slot_size(size, block_size));
                let first_slot = next_slot;
                next_slot += size.div_ceil(slot_size);
                Some(DeviceRegion {
                    slot_size,
                    first_slot: u32::try_from(first_slot).map_err(|_| {
                        MemoryError::TooManySlots {
                            needed: next_slot,
                            max: u64::from(u32::MAX),
                        }
                    })?,
                    protect: request.protect,
                    mmap_flags: 0,
                    addr: starts.next().ok_or(MemoryError::Layout)?,
                    size,
                    hotplugged_size,
                    block_size,
                    host_addr: 0,
                    backing: Backing::PrivateAnonymous,
                    page_size: if request.hugepages {
                        huge_page_size
                    } else {
                        4096
                    },
                    prefault: request.prefault,
                })
            }
            None => None,
        };
        zones.push(ZoneLayout {
            id: request.id.clone(),
            node: request.node,
            boot_ranges: ranges,
            region,
        });
    }
    Ok((zones, mmio64_start))
}

impl MemoryManager {
    /// Allocates boot RAM and the virtio-mem regions `config` asks for (placed by
    /// [`place_zones`]), and maps boot RAM into `vm`. Device regions get their memslots from
    /// their backends as blocks are plugged; all of them must fit in `max_memslots`.
    /// `phys_bits` is the guest-physical address width KVM can map.
    pub fn new(
        vm: &Arc<dyn hypervisor::Vm>,
        config: &VmConfig,
        max_memslots: u32,
        phys_bits: u32,
        files: Vec<File>,
    ) -> Result<Self, MemoryError> {
        let requests = zone_requests(config);
        let ram_size = config.memory.boot_ram();
        let (mut zones, mmio64_start) = place(&requests, config)?;
        check_address_width(mmio64_start, phys_bits)?;
        let needed = zones
            .iter()
            .filter_map(|z| z.region.as_ref())
            .map(|d| u64::from(d.first_slot) + d.size.div_ceil(d.slot_size))
            .max()
            .unwrap_or(0);
        if needed > u64::from(max_memslots) {
            return Err(MemoryError::TooManySlots {
                needed,
                max: u64::from(max_memslots),
            });
        }

        let mut regions = Vec::new();
        // Boot RAM: one mapping per range; shared, hugepages or prefaulted if any zone wants it.
        let any = |want: fn(&ZoneRequest) -> bool| requests.iter().any(want);
        let populate = if any(|z| z.prefault) {
            libc::MAP_POPULATE
        } else {
            0
        };
        let read_write = libc::PROT_READ | libc::PROT_WRITE;
        // A local migration's memory files, in `backing_files` order.
        let passed = files.len();
        let mut files = files.into_iter();
        for (start, size) in arch::layout::ram_ranges(ram_size) {
            let backed = Backed {
                shared: any(|z| z.shared),
                hugepages: any(|z| z.hugepages),
                thp: config.memory.thp,
            };
            let (mapping, _) = map(
                c"accordion-boot-ram",
                size,
                backed,
                populate,
                read_write,
                files.next(),
            )?;
            regions.push(Arc::new(
                GuestRegionMmap::new(mapping, GuestAddress(start)).ok_or(MemoryError::Layout)?,
            ));
        }
        let mut device_mappings = Vec::new();
        let mut owners: Vec<Arc<dyn std::any::Any + Send + Sync>> = Vec::new();
        for (zone, request) in zones.iter_mut().zip(&requests) {
            if let Some(device) = zone.region.as_mut() {
                let prot = if device.protect {
                    libc::PROT_NONE
                } else {
                    read_write
                };
                // The memfd's name shows in /proc/PID/maps, to tell regions apart.
                let name = std::ffi::CString::new(format!("accordion-virtio-mem-{}", zone.id))
                    .map_err(|_| MemoryError::Allocate {
                        size: device.size,
                        reason: format!("zone id {:?} has a NUL byte", zone.id),
                    })?;
                let backed = Backed {
                    shared: request.shared,
                    hugepages: request.hugepages,
                    thp: config.memory.thp,
                };
                let (mapping, backing) = map(
                    &name,
                    device.size,
                    backed,
                    libc::MAP_NORESERVE,
                    prot,
                    files.next(),
                )?;
                device.host_addr = mapping.as_ptr() as u64;
                device.backing = backing;
                device.mmap_flags = mapping.flags();
                device_mappings.push(RegionMapping {
                    guest_addr: device.addr,
                    host_addr: device.host_addr,
                    size: device.size,
                    mmap_flags: device.mmap_flags,
                });
                owners.push(Arc::new(mapping));
            }
        }
        if files.next().is_some() {
            return Err(MemoryError::Allocate {
                size: ram_size,
                reason: format!("{passed} memory files were passed, more than this VM maps"),
            });
        }
        let guest_memory = GuestMemoryMmap::from_arc_regions(regions.clone()).map_err(|e| {
            MemoryError::Allocate {
                size: ram_size,
                reason: e.to_string(),
            }
        })?;
        let slots = map_into_vm(vm, &guest_memory)?;
        let access = Arc::new(AccessibleMemory::new(regions, device_mappings, owners)?);
        Ok(MemoryManager {
            guest_memory,
            access,
            ram_size,
            zones: zones
                .into_iter()
                .map(|layout| MemoryZone {
                    layout,
                    device: None,
                })
                .collect(),
            slots,
            mmio64_start,
        })
    }

    /// Creates the virtio-mem device of each zone that has a region, and puts it on the PCI
    /// bus. Nothing is plugged until a driver asks; or, with `saved` (a snapshot's devices,
    /// in zone order), each device starts in its saved state.
    pub fn add_devices(
        &mut self,
        mut ctx: DeviceContext<'_>,
        saved: Option<&[crate::snapshot::MemoryDeviceState]>,
    ) -> Result<(), MemoryError> {
        let with_region = self.zones.iter().filter(|z| z.layout.region.is_some());
        if let Some(saved) = saved {
            let ids: Vec<&str> = with_region.map(|z| z.layout.id.as_str()).collect();
            let saved_ids: Vec<&str> = saved.iter().map(|d| d.id.as_str()).collect();
            if ids != saved_ids {
                return Err(MemoryError::SavedDevices(format!(
                    "the snapshot has virtio-mem devices {saved_ids:?}, its configuration {ids:?}"
                )));
            }
        }
        let mut index = 0;
        for zone in &mut self.zones {
            let Some(region) = &zone.layout.region else {
                continue;
            };
            let device = super::devices::create(
                &mut ctx,
                &self.access,
                index,
                &zone.layout.id,
                zone.layout.node,
                region,
                saved.and_then(|s| s.get(index)).map(|d| &d.mem),
            )?;
            zone.device = Some(device);
            index += 1;
        }
        Ok(())
    }

    /// The files behind guest memory, for a local migration to pass: each boot RAM range,
    /// then each zone's virtio-mem region (the order [`MemoryManager::new`] takes them
    /// in). Every one must be shared memory; the error names the first that is not.
    pub fn backing_files(&self) -> Result<Vec<File>, String> {
        let mut files = Vec::new();
        for region in self.guest_memory.iter() {
            let shared = region.flags() & libc::MAP_SHARED != 0;
            match region.file_offset() {
                Some(file) if shared => files.push(
                    file.file()
                        .try_clone()
                        .map_err(|e| format!("the boot RAM's memory file: {e}"))?,
                ),
                _ => {
                    return Err(
                        "boot RAM is private memory (start the VM with shared=on)".to_string()
                    )
                }
            }
        }
        for zone in &self.zones {
            let Some(region) = &zone.layout.region else {
                continue;
            };
            match &region.backing {
                Backing::SharedFile { file, .. } => files.push(
                    file.try_clone()
                        .map_err(|e| format!("zone {}'s memory file: {e}", zone.layout.id))?,
                ),
                _ => {
                    return Err(format!(
                        "zone {}'s virtio-mem region is private memory (start it with \
                         shared=on)",
                        zone.layout.id
                    ))
                }
            }
        }
        Ok(files)
    }

    /// Boot RAM's KVM memslots, as mapped.
    pub fn boot_slots(&self) -> &[MemoryRegion] {
        &self.slots
    }

    /// The devices, in zone order.
    pub fn devices(&self) -> impl Iterator<Item = &MemoryDevice> {
        self.zones.iter().filter_map(|z| z.device.as_ref())
    }

    /// Asks zone `id`'s device for `desired_ram` minus the zone's boot RAM (what
    /// `vm.resize-zone` and `vm.resize` want); returns that requested size at once, without
    /// waiting for the guest. The device's geometry is the one validation.
    pub fn resize_zone(&self, id: &str, desired_ram: u64) -> Result<u64, ResizeError> {
        super::resize::resize_zone_with(&self.zones, id, desired_ram, |zone, requested| {
            let device = zone
                .device
                .as_ref()
                .ok_or_else(|| ResizeError::NoDevice(id.to_string()))?;
            device
                .handle
                .resize(requested)
                .map_err(|e| ResizeError::refused_by_device(e, &zone.layout, desired_ram))
        })
    }

    /// Guest RAM in bytes: boot RAM and what the guest has plugged.
    pub fn actual_size(&self) -> u64 {
        self.ram_size + self.devices().map(MemoryDevice::plugged_size).sum::<u64>()
    }

    /// What the VMM's threads may read and write: boot RAM and plugged device memory.
    pub fn access(&self) -> &Arc<AccessibleMemory> {
        &self.access
    }

    /// Boot RAM, for the boot loader and the ACPI tables.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.guest_memory
    }

    /// Boot RAM in bytes.
    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    pub fn zones(&self) -> &[MemoryZone] {
        &self.zones
    }

    pub fn slots(&self) -> &[MemoryRegion] {
        &self.slots
    }

    /// Where the 64-bit PCI window starts (after the device regions).
    pub fn mmio64_start(&self) -> u64 {
        self.mmio64_start
    }
}

/// The layout (everything up to the end of the 64-bit PCI window) must fit the host's
/// physical address width: KVM cannot map a guest-physical address the CPU cannot.
fn check_address_width(mmio64_start: u64, phys_bits: u32) -> Result<(), MemoryError> {
    let end = mmio64_start.saturating_add(arch::layout::PCI_MMIO64_SIZE);
    let limit = 1u64.checked_shl(phys_bits).unwrap_or(u64::MAX);
    if end > limit {
        return Err(MemoryError::AddressSpace {
            end,
            bits: phys_bits,
        });
    }
    Ok(())
}

fn map_into_vm(
    vm: &Arc<dyn hypervisor::Vm>,
    guest_memory: &GuestMemoryMmap,
) -> Result<Vec<MemoryRegion>, MemoryError> {
    let mut slots = Vec::new();
    for (slot, region) in guest_memory.iter().enumerate() {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| MemoryError::Allocate {
                size: region.len(),
                reason: e.to_string(),
            })?;
        let r = MemoryRegion {
            slot: slot as u32,
            guest_addr: region.start_addr().0,
            size: region.len(),
            host_addr: host as u64,
            log_dirty: false,
        };
        vm.set_memory_region(r).map_err(|source| MemoryError::Map {
            addr: r.guest_addr,
            source,
        })?;
        slots.push(r);
    }
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_huge_page_size_comes_from_meminfo() {
        let meminfo = "HugePages_Total:       0\nHugepagesize:       2048 kB\n";
        assert_eq!(parse_huge_page_size(meminfo), Some(2 << 20));
        let gib = "Hugepagesize:    1048576 kB\n";
        assert_eq!(parse_huge_page_size(gib), Some(1 << 30));
        assert_eq!(parse_huge_page_size("MemTotal: 1 kB\n"), None);
        assert_eq!(parse_huge_page_size("Hugepagesize: 3 kB\n"), None);
    }

    #[test]
    fn the_layout_must_fit_the_physical_address_width() {
        let window = arch::layout::PCI_MMIO64_SIZE;
        assert!(check_address_width((1 << 40) - window, 40).is_ok());
        assert!(matches!(
            check_address_width((1 << 40) - window + 1, 40),
            Err(MemoryError::AddressSpace { bits: 40, .. })
        ));
        assert!(check_address_width(8 << 30, 64).is_ok());
    }

    #[test]
    fn boot_ranges_split_among_zones_in_order() {
        let ranges = arch::layout::ram_ranges(4 << 30); // [0, 3G) and [4G, 5G)
        let split = split_ranges(&ranges, &[2 << 30, 2 << 30]);
        assert_eq!(split[0], vec![(0, 2 << 30)]);
        assert_eq!(split[1], vec![(2 << 30, 1 << 30), (4 << 30, 1 << 30)]);
        let split = split_ranges(&arch::layout::ram_ranges(1 << 30), &[1 << 30]);
        assert_eq!(split, vec![vec![(0, 1 << 30)]]);
    }
}
