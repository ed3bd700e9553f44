// SPDX-License-Identifier: Apache-2.0

//! SLIT ("system locality information table").
//!
//! The SLIT gives the relative distance between every two NUMA nodes (ACPI proximity domains,
//! "localities"), which Linux uses for its allocation fallback order and scheduler domains.
//! It is only written when there are at least two nodes: with one, there is nothing to say.
//!
//! Layout (ACPI 6.5, section 5.2.17), revision 1: the standard header (36 bytes), the number
//! of localities `n` as a qword at offset 36, then `n * n` one-byte distances from offset 44,
//! row by row: entry `[a * n + b]` is the distance from domain `a` to domain `b`.
//!
//! `acpi_tables` 0.2 has a `SLIT` type, but its `set_distance` always writes both `[a][b]` and
//! `[b][a]`, so it cannot hold an asymmetric matrix (ACPI and Linux allow one); the table is
//! assembled on the generic `Sdt` builder instead.

use acpi_tables::sdt::Sdt;

use crate::{
    AcpiConfig, Error, DEFAULT_REMOTE_DISTANCE, LOCAL_DISTANCE, MAX_REMOTE_DISTANCE,
    MIN_REMOTE_DISTANCE, OEM_ID, OEM_REVISION, OEM_TABLE_ID,
};

/// SLIT revision 1 (the only one).
const SLIT_REVISION: u8 = 1;
/// Standard header (36) + number of localities (8).
const SLIT_HEADER_LEN: u32 = 44;
/// Offset of the number of localities.
const LOCALITIES_OFFSET: usize = 36;

/// The distance matrix for `cfg`, indexed by proximity domain: the configured one after
/// checking it, or the default one when none is configured.
fn distances(cfg: &AcpiConfig) -> Result<Vec<Vec<u8>>, Error> {
    let n = cfg.numa.len();
    if cfg.numa_distances.is_empty() {
        return Ok((0..n)
            .map(|a| {
                (0..n)
                    .map(|b| {
                        if a == b {
                            LOCAL_DISTANCE
                        } else {
                            DEFAULT_REMOTE_DISTANCE
                        }
                    })
                    .collect()
            })
            .collect());
    }

    let invalid = |reason: String| Err(Error::InvalidNumaDistances { reason });
    if cfg.numa_distances.len() != n {
        return invalid(format!(
            "{} rows for {n} nodes; the matrix must be {n}x{n}",
            cfg.numa_distances.len()
        ));
    }
    for (a, row) in cfg.numa_distances.iter().enumerate() {
        if row.len() != n {
            return invalid(format!(
                "row {a} has {} entries; the matrix must be {n}x{n}",
                row.len()
            ));
        }
        for (b, &distance) in row.iter().enumerate() {
            if a == b && distance != LOCAL_DISTANCE {
                return invalid(format!(
                    "distance from node {a} to itself is {distance}, but it must be \
                     {LOCAL_DISTANCE}"
                ));
            }
            if a != b && !(MIN_REMOTE_DISTANCE..=MAX_REMOTE_DISTANCE).contains(&distance) {
                return invalid(format!(
                    "distance from node {a} to node {b} is {distance}, but it must be \
                     {MIN_REMOTE_DISTANCE}..={MAX_REMOTE_DISTANCE} (Linux ignores a SLIT \
                     with a distance of {LOCAL_DISTANCE} or less between two nodes)"
                ));
            }
        }
    }
    Ok(cfg.numa_distances.clone())
}

/// Builds the SLIT for `cfg` after checking its distances; `None` when there are fewer than
/// two NUMA nodes. Expects the nodes to be numbered 0..n (the SRAT's check).
pub(crate) fn build(cfg: &AcpiConfig) -> Result<Option<Vec<u8>>, Error> {
    let distances = distances(cfg)?;
    if distances.len() < 2 {
        return Ok(None);
    }

    let mut slit = Sdt::new(
        *b"SLIT",
        SLIT_HEADER_LEN,
        SLIT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    slit.write_u64(LOCALITIES_OFFSET, distances.len() as u64);
    for row in &distances {
        slit.append_slice(row);
    }
    Ok(Some(slit.as_slice().to_vec()))
}
