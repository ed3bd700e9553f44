//! Loads a Linux kernel, its initramfs and command line, and writes the boot information
//! for the protocol the image supports: PVH for an ELF `vmlinux` with the Xen PVH note, the
//! 64-bit Linux boot protocol for a bzImage.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, KernelLoader};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::e820::{e820_table, E820Entry};
use crate::layout::{
    low_ram_end, CMDLINE_MAX_SIZE, CMDLINE_START, HIGH_RAM_START, PVH_INFO_START,
    PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use crate::{Error, Result};

/// Which entry convention the kernel is started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootProtocol {
    /// 32-bit protected mode at the PVH entry, `%ebx` = `hvm_start_info`.
    Pvh,
    /// 64-bit mode at the bzImage's 64-bit entry, `%rsi` = `boot_params`.
    Linux64,
}

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub protocol: BootProtocol,
    pub entry_addr: GuestAddress,
}

/// What to boot.
#[derive(Clone, Copy, Debug)]
pub struct KernelPayload<'a> {
    pub kernel: &'a Path,
    pub initramfs: Option<&'a Path>,
    pub cmdline: &'a str,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
const BZIMAGE_MAGIC_OFFSET: u64 = 0x202;
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const BZIMAGE_PREF_ADDRESS_OFFSET: u64 = 0x258;
const BZIMAGE_INIT_SIZE_OFFSET: u64 = 0x260;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const PVH_START_INFO_MAGIC: u32 = 0x336e_c578;
/// Highest initramfs end for PVH (and the bzImage default): below 2 GiB.
const INITRD_ADDR_MAX_DEFAULT: u64 = 0x7fff_ffff;
const PAGE_SIZE: u64 = 4096;

/// `struct hvm_start_info` of the PVH ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_modlist_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HvmModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

// SAFETY: plain-old-data `repr(C)` structs of integers with no padding, valid for any bytes.
unsafe impl ByteValued for HvmStartInfo {}
// SAFETY: as above.
unsafe impl ByteValued for HvmModlistEntry {}
// SAFETY: as above.
unsafe impl ByteValued for HvmMemmapEntry {}

enum KernelFormat {
    Elf,
    BzImage,
}

fn read_at<const N: usize>(file: &mut File, offset: u64) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    file.seek(SeekFrom::Start(offset)).ok()?;
    file.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn detect_format(file: &mut File) -> Option<KernelFormat> {
    if read_at::<4>(file, 0).as_ref() == Some(ELF_MAGIC) {
        return Some(KernelFormat::Elf);
    }
    if read_at::<4>(file, BZIMAGE_MAGIC_OFFSET).as_ref() == Some(BZIMAGE_MAGIC) {
        return Some(KernelFormat::BzImage);
    }
    None
}

/// Highest physical address (exclusive) an ELF kernel's loadable segments reach.
fn elf_end(file: &mut File) -> Option<u64> {
    let phoff = u64::from_le_bytes(read_at::<8>(file, 0x20)?);
    let phentsize = u64::from(u16::from_le_bytes(read_at::<2>(file, 0x36)?));
    let phnum = u64::from(u16::from_le_bytes(read_at::<2>(file, 0x38)?));
    let mut end = 0u64;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_LOAD: u32 = 1;
        if u32::from_le_bytes(read_at::<4>(file, ph)?) != PT_LOAD {
            continue;
        }
        let paddr = u64::from_le_bytes(read_at::<8>(file, ph + 0x18)?);
        let memsz = u64::from_le_bytes(read_at::<8>(file, ph + 0x28)?);
        end = end.max(paddr.checked_add(memsz)?);
    }
    Some(end)
}

/// How far a bzImage reaches once it has decompressed itself.
fn bzimage_end(file: &mut File) -> Option<u64> {
    let pref = u64::from_le_bytes(read_at::<8>(file, BZIMAGE_PREF_ADDRESS_OFFSET)?);
    let init_size = u64::from(u32::from_le_bytes(read_at::<4>(
        file,
        BZIMAGE_INIT_SIZE_OFFSET,
    )?));
    pref.max(HIGH_RAM_START).checked_add(init_size)
}

fn check_fits(what: &'static str, needed: u64, ram_size: u64) -> Result<()> {
    let available = low_ram_end(ram_size);
    if needed > available {
        return Err(Error::MemoryTooSmall {
            what,
            needed,
            available,
        });
    }
    Ok(())
}

/// Loads everything `payload` names into `mem` (boot RAM of `ram_size` bytes) and writes the
/// boot information; returns where the boot vCPU starts.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    payload: &KernelPayload,
    rsdp_addr: GuestAddress,
) -> Result<BootEntry> {
    let kpath = payload.kernel.display().to_string();
    let mut kernel = File::open(payload.kernel).map_err(|source| Error::KernelRead {
        path: kpath.clone(),
        source,
    })?;
    let format = detect_format(&mut kernel).ok_or_else(|| Error::UnknownKernelFormat {
        path: kpath.clone(),
    })?;
    let load_err = |e: linux_loader::loader::Error| Error::KernelLoad {
        path: kpath.clone(),
        reason: e.to_string(),
    };

    let (entry, kernel_end, setup_header) = match format {
        KernelFormat::Elf => {
            let end = elf_end(&mut kernel).ok_or_else(|| Error::UnknownKernelFormat {
                path: kpath.clone(),
            })?;
            check_fits("kernel", end, ram_size)?;
            let r = Elf::load(mem, None, &mut kernel, Some(GuestAddress(HIGH_RAM_START)))
                .map_err(load_err)?;
            let PvhBootCapability::PvhEntryPresent(addr) = r.pvh_boot_cap else {
                return Err(Error::NoPvhEntry { path: kpath });
            };
            let entry = BootEntry {
                protocol: BootProtocol::Pvh,
                entry_addr: addr,
            };
            (entry, end.max(r.kernel_end), None)
        }
        KernelFormat::BzImage => {
            let end = bzimage_end(&mut kernel).ok_or_else(|| Error::UnknownKernelFormat {
                path: kpath.clone(),
            })?;
            check_fits("decompressed kernel", end, ram_size)?;
            kernel
                .seek(SeekFrom::Start(0))
                .map_err(|source| Error::KernelRead {
                    path: kpath.clone(),
                    source,
                })?;
            let r = BzImage::load(mem, None, &mut kernel, Some(GuestAddress(HIGH_RAM_START)))
                .map_err(load_err)?;
            let entry = BootEntry {
                protocol: BootProtocol::Linux64,
                entry_addr: GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
            };
            (entry, end, r.setup_header)
        }
    };

    let initrd_max = setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|&m| m != 0)
        .unwrap_or(INITRD_ADDR_MAX_DEFAULT);
    let initramfs = match payload.initramfs {
        Some(path) => Some(load_initramfs(mem, ram_size, path, kernel_end, initrd_max)?),
        None => None,
    };

    let cmdline =
        Cmdline::try_from(payload.cmdline, CMDLINE_MAX_SIZE).map_err(|e| Error::Cmdline {
            max: CMDLINE_MAX_SIZE - 1,
            reason: e.to_string(),
        })?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &cmdline).map_err(|e| Error::Cmdline {
        max: CMDLINE_MAX_SIZE - 1,
        reason: e.to_string(),
    })?;

    let e820 = e820_table(ram_size);
    match setup_header {
        None => write_pvh_start_info(mem, &e820, initramfs, rsdp_addr)?,
        Some(hdr) => {
            let mut params = boot_params {
                hdr,
                ..Default::default()
            };
            params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.cmd_line_ptr = CMDLINE_START as u32;
            params.hdr.cmdline_size = (payload.cmdline.len() + 1) as u32;
            if let Some((addr, size)) = initramfs {
                params.hdr.ramdisk_image = addr as u32;
                params.hdr.ramdisk_size = size as u32;
            }
            params.acpi_rsdp_addr = rsdp_addr.0;
            for (slot, e) in params.e820_table.iter_mut().zip(e820.iter()) {
                slot.addr = e.addr;
                slot.size = e.size;
                slot.r#type = e.kind;
            }
            params.e820_entries = e820.len().min(params.e820_table.len()) as u8;
            mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
                .map_err(|_| Error::GuestWrite {
                    what: "boot_params",
                    addr: ZERO_PAGE_START,
                })?;
        }
    }
    Ok(entry)
}

/// Places the initramfs as high as allowed in low RAM; returns (address, size).
fn load_initramfs(
    mem: &GuestMemoryMmap,
    ram_size: u64,
    path: &Path,
    kernel_end: u64,
    initrd_max: u64,
) -> Result<(u64, u64)> {
    let ipath = path.display().to_string();
    let read_err = |source| Error::InitramfsRead {
        path: ipath.clone(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let top = low_ram_end(ram_size).min(initrd_max.saturating_add(1));
    let needed = kernel_end.div_ceil(PAGE_SIZE) * PAGE_SIZE + size;
    if size > top || (top - size) & !(PAGE_SIZE - 1) < kernel_end {
        return Err(Error::MemoryTooSmall {
            what: "kernel and initramfs",
            needed,
            available: top,
        });
    }
    let addr = (top - size) & !(PAGE_SIZE - 1);
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|_| Error::GuestWrite {
            what: "initramfs",
            addr,
        })?;
    Ok((addr, size))
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    initramfs: Option<(u64, u64)>,
    rsdp_addr: GuestAddress,
) -> Result<()> {
    let write_err = |what, addr| move |_| Error::GuestWrite { what, addr };
    let mut info = HvmStartInfo {
        magic: PVH_START_INFO_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp_addr.0,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: e820.len().min(PVH_MEMMAP_MAX_ENTRIES) as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = initramfs {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
        let module = HvmModlistEntry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(PVH_MODLIST_START))
            .map_err(write_err("PVH module list", PVH_MODLIST_START))?;
    }
    for (i, e) in e820.iter().take(PVH_MEMMAP_MAX_ENTRIES).enumerate() {
        let addr = PVH_MEMMAP_START + (i * std::mem::size_of::<HvmMemmapEntry>()) as u64;
        let entry = HvmMemmapEntry {
            addr: e.addr,
            size: e.size,
            kind: e.kind,
            reserved: 0,
        };
        mem.write_obj(entry, GuestAddress(addr))
            .map_err(write_err("PVH memory map", addr))?;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(write_err("PVH start info", PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_structs_have_abi_sizes() {
        assert_eq!(std::mem::size_of::<HvmStartInfo>(), 56);
        assert_eq!(std::mem::size_of::<HvmModlistEntry>(), 32);
        assert_eq!(std::mem::size_of::<HvmMemmapEntry>(), 24);
    }

    #[test]
    fn unknown_file_is_rejected_by_name() {
        let dir = std::env::temp_dir().join(format!("accordion-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-a-kernel");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let payload = KernelPayload {
            kernel: &path,
            initramfs: None,
            cmdline: "",
        };
        let err = load_kernel(&mem, 64 << 20, &payload, GuestAddress(0xe0000)).unwrap_err();
        assert!(matches!(err, Error::UnknownKernelFormat { .. }), "{err}");
        assert!(err.to_string().contains("not-a-kernel"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
