//! The body of the `snapshot_state` cargo-fuzz target (vmm/fuzz): the decoders a restore
//! runs on a snapshot's `state.json`, on arbitrary input. The first byte picks the decoder:
//!
//! - 0: the whole state file (`VmSnapshot::parse`: format, version, memory table);
//! - 1: a virtio-mem device's memory state, against a device of the region it names
//!   (`VirtioMemState::from_saved`);
//! - 2: a PCI function's configuration space (`PciConfiguration::restore`);
//! - 3: an MSI-X table (`MsixConfig::restore`).
//!
//! Nothing may panic; what is accepted must be a state the device can be in: a restored
//! virtio-mem state saves back to the same runs (merged) and keeps its plugged blocks in
//! its usable region, a restored configuration space reads back what was saved in every
//! writable bit, and a restored MSI-X table saves back as it came.

use std::sync::Arc;

use pci::{MsiError, MsiInterruptGroup, MsiMessage, MsixConfig, MsixState, PciConfiguration};
use virtio_devices::mem::{MemDeviceState, MemGeometry, VirtioMemState};

use super::VmSnapshot;

/// An interrupt group that routes nothing.
struct NoRoutes;

impl MsiInterruptGroup for NoRoutes {
    fn update(&self, _vector: u16, _msg: MsiMessage, _masked: bool) -> Result<(), MsiError> {
        Ok(())
    }
    fn trigger(&self, _vector: u16) -> Result<(), MsiError> {
        Ok(())
    }
}

/// Runs one input through the decoder its first byte picks.
pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(snapshot) = VmSnapshot::parse(rest, "state.json", 1 << 40) {
                let mut end = 0;
                for r in &snapshot.memory {
                    assert!(r.offset >= end && r.len > 0, "{r:?}");
                    end = r.offset + r.len;
                }
            }
        }
        1 => memory_device(rest),
        2 => configuration_space(rest),
        _ => msix(rest),
    }
}

fn memory_device(json: &[u8]) {
    let Ok(saved) = serde_json::from_slice::<MemDeviceState>(json) else {
        return;
    };
    let Ok(geometry) = MemGeometry::new(saved.addr, saved.region_size, saved.block_size) else {
        return;
    };
    let Ok(state) = VirtioMemState::from_saved(geometry, saved.node_id, &saved) else {
        return;
    };
    let again = state.saved();
    let blocks = |runs: &[[u64; 2]]| runs.iter().map(|r| r[1]).sum::<u64>();
    assert_eq!(blocks(&again.plugged), blocks(&saved.plugged));
    assert_eq!(again.requested_size, saved.requested_size);
    assert!(state.plugged_size() <= state.usable_region_size());
    let back = VirtioMemState::from_saved(geometry, saved.node_id, &again)
        .expect("a saved state restores");
    assert_eq!(back.saved(), again);
}

fn function() -> PciConfiguration {
    let mut config = PciConfiguration::new(&pci::PciHeader {
        vendor_id: 0x1af4,
        device_id: 0x1058,
        revision_id: 1,
        prog_if: 0,
        subclass: 0x80,
        class_code: 0x05,
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x1058,
    });
    config
        .add_bar(&pci::BarRegion {
            index: 0,
            addr: 0x1_0000_0000,
            size: 0x8000,
            kind: pci::BarKind::Memory64,
            prefetchable: false,
        })
        .expect("a fresh function takes its BAR");
    config
}

fn configuration_space(json: &[u8]) {
    let Ok(saved) = serde_json::from_slice::<pci::PciConfigurationState>(json) else {
        return;
    };
    let mut config = function();
    if config.restore(&saved).is_ok() {
        // A restored space restores again, to the same registers.
        let state = config.state();
        let mut again = function();
        again.restore(&state).expect("a restored space restores");
        assert_eq!(again.state(), state);
    }
}

fn msix(json: &[u8]) {
    let Ok(saved) = serde_json::from_slice::<MsixState>(json) else {
        return;
    };
    let Ok(mut table) = MsixConfig::new(2, Arc::new(NoRoutes)) else {
        return;
    };
    if table.restore(&saved).is_ok() {
        assert_eq!(table.state(), saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders_take_saved_states_and_pseudo_random_bytes() {
        let mem = serde_json::json!({
            "addr": 1u64 << 32, "region_size": 1u64 << 30, "block_size": 2u64 << 20,
            "node_id": null, "requested_size": 64u64 << 20, "usable_region_size": 320u64 << 20,
            "plugged": [[0, 3], [3, 2], [10, 1]]
        });
        let mut input = vec![1u8];
        input.extend(mem.to_string().as_bytes());
        run(&input);
        let mut input = vec![2u8];
        input.extend(serde_json::to_vec(&function().state()).unwrap());
        run(&input);
        let table = MsixConfig::new(2, Arc::new(NoRoutes)).unwrap();
        let mut input = vec![3u8];
        input.extend(serde_json::to_vec(&table.state()).unwrap());
        run(&input);
        // xorshift: deterministic noise, and the same noise after a valid prefix.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            run(&bytes);
            let mut prefixed = input[..input.len() / 2].to_vec();
            prefixed.extend(&bytes);
            run(&prefixed);
        }
    }
}
