//! The memory file of a snapshot (`memory-ranges`): guest memory by ranges, one after the
//! other, each at the file offset the state file records. Only boot RAM and plugged
//! virtio-mem blocks are ever written, and pages that are all zeros are left as holes, so the
//! file takes no more disk than the memory the guest has written.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use serde::{Deserialize, Serialize};

/// The unit of zero detection: a page.
const PAGE: usize = 4096;
/// How much is read or written at once.
const CHUNK: usize = 4 << 20;

/// One range of guest memory in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRange {
    /// Guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub len: u64,
    /// Where in the file it starts.
    pub offset: u64,
}

/// Guest memory the VMM can read or write: `len` bytes at `host` for guest address `gpa`.
#[derive(Clone, Copy, Debug)]
pub struct HostRange {
    pub gpa: u64,
    pub host: u64,
    pub len: u64,
}

/// Writes `ranges` one after the other from offset 0 and sizes the file to hold them; pages
/// of zeros are skipped (holes). Returns the table of ranges and the bytes written.
///
/// # Safety
/// Every range must be mapped readable in this process for the whole call, and nothing may
/// unmap or protect it meanwhile (the guest and the devices are paused).
pub unsafe fn write_ranges(
    file: &File,
    ranges: &[HostRange],
) -> io::Result<(Vec<SavedRange>, u64)> {
    let mut table = Vec::with_capacity(ranges.len());
    let mut offset = 0u64;
    let mut written = 0u64;
    for r in ranges {
        let mut done = 0u64;
        while done < r.len {
            let n = (r.len - done).min(CHUNK as u64) as usize;
            // SAFETY: the caller guarantees [host, host + len) is mapped readable and stays
            // so; `done + n <= len`.
            let chunk = unsafe { std::slice::from_raw_parts((r.host + done) as *const u8, n) };
            written += write_nonzero_pages(file, chunk, offset + done)?;
            done += n as u64;
        }
        table.push(SavedRange {
            gpa: r.gpa,
            len: r.len,
            offset,
        });
        offset += r.len;
    }
    file.set_len(offset)?;
    Ok((table, written))
}

/// Writes the runs of pages of `chunk` that are not all zeros at `at` + their offset.
fn write_nonzero_pages(file: &File, chunk: &[u8], at: u64) -> io::Result<u64> {
    let mut written = 0u64;
    let mut run: Option<usize> = None;
    let pages = chunk.len().div_ceil(PAGE);
    for page in 0..=pages {
        let data =
            (page < pages).then(|| &chunk[page * PAGE..((page + 1) * PAGE).min(chunk.len())]);
        let zero = data.is_none_or(is_zero);
        match (run, zero) {
            (None, false) => run = Some(page),
            (Some(start), true) => {
                let bytes = &chunk[start * PAGE..(page * PAGE).min(chunk.len())];
                file.write_all_at(bytes, at + (start * PAGE) as u64)?;
                written += bytes.len() as u64;
                run = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

fn is_zero(bytes: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to splits off what is not aligned.
        unsafe { bytes.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Reads `range` of the file into guest memory at `host`. Only the parts of the file that
/// hold data are read (`SEEK_DATA`/`SEEK_HOLE`): a hole is zeros, which fresh guest memory
/// already is, and reading it would only make the host allocate pages. Returns the bytes
/// read.
///
/// # Safety
/// `[host, host + range.len)` must be mapped writable in this process, hold fresh
/// (all-zero) memory, and nothing else may use it meanwhile.
pub unsafe fn read_range(file: &File, range: &SavedRange, host: u64) -> io::Result<u64> {
    let end = range.offset + range.len;
    let mut pos = range.offset;
    let mut read = 0u64;
    while pos < end {
        let Some(data) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        if data >= end {
            break;
        }
        let hole = seek(file, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        let mut at = data;
        while at < hole {
            let n = (hole - at).min(CHUNK as u64) as usize;
            // SAFETY: the caller guarantees the destination is mapped writable and unused;
            // `at - range.offset + n <= range.len`.
            let dest = unsafe {
                std::slice::from_raw_parts_mut((host + (at - range.offset)) as *mut u8, n)
            };
            file.read_exact_at(dest, at)?;
            at += n as u64;
        }
        read += hole - data;
        pos = hole;
    }
    Ok(read)
}

/// `lseek(fd, from, whence)`; `None` for ENXIO (no data, or no hole, past `from`).
fn seek(file: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let from =
        libc::off_t::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a descriptor this File owns; it changes only the file position,
    // which nothing here relies on (reads are positioned).
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    if at < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn ranges_round_trip_and_zero_pages_are_holes() {
        let dir = std::env::temp_dir().join(format!("accordion-memfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory-ranges");
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();

        let mut a = vec![0u8; 8 << 20];
        a[5] = 1;
        a[(6 << 20) + 100] = 2;
        let mut b = vec![0u8; 3 * PAGE + 10];
        b[3 * PAGE + 9] = 3;
        let ranges = [
            HostRange {
                gpa: 0x1000_0000,
                host: a.as_ptr() as u64,
                len: a.len() as u64,
            },
            HostRange {
                gpa: 0x2000_0000,
                host: b.as_ptr() as u64,
                len: b.len() as u64,
            },
        ];
        // SAFETY: both vectors live across the call.
        let (table, written) = unsafe { write_ranges(&file, &ranges) }.unwrap();
        assert_eq!(
            written,
            (2 * PAGE + 10) as u64,
            "three pages of data, the last one short"
        );
        assert_eq!(table[1].offset, a.len() as u64);
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), (a.len() + b.len()) as u64);
        assert!(
            meta.blocks() * 512 <= 64 << 10,
            "{} blocks allocated",
            meta.blocks()
        );

        let mut a2 = vec![0u8; a.len()];
        let mut b2 = vec![0u8; b.len()];
        // SAFETY: fresh zeroed vectors of the ranges' lengths.
        let got = unsafe { read_range(&file, &table[0], a2.as_mut_ptr() as u64) }.unwrap()
            + unsafe { read_range(&file, &table[1], b2.as_mut_ptr() as u64) }.unwrap();
        assert_eq!((a2, b2), (a, b));
        assert!(got <= 64 << 10, "read {got} bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
