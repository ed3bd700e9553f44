//! `vm.resize` and `vm.resize-zone`: turning a desired RAM size into a virtio-mem device's
//! requested size, with every rule checked before anything changes. The answer never waits
//! for the guest or for the device thread.

use serde::Deserialize;

use crate::api::ApiError;
use crate::memory::manager::MemoryZone;

/// Body of `vm.resize`, as Cloud Hypervisor's `VmResizeData`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmResize {
    /// Total guest RAM wanted: boot RAM plus what virtio-mem should plug.
    #[serde(default)]
    pub desired_ram: Option<u64>,
    /// vCPU hotplug: not supported; only accepted absent or null.
    #[serde(default)]
    pub desired_vcpus: Option<u32>,
    /// Balloon: not supported; only accepted absent or null.
    #[serde(default)]
    pub desired_balloon: Option<u64>,
}

/// Body of `vm.resize-zone`, as Cloud Hypervisor's `VmResizeZoneData`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmResizeZone {
    pub id: String,
    /// The zone's total RAM wanted: its boot RAM plus what its device should plug.
    pub desired_ram: u64,
}

/// Which zone's device gets which requested size (bytes to plug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizePlan {
    pub zone: usize,
    pub requested_size: u64,
}

/// Why a resize is refused; nothing changed. The API answers each with 400 and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    #[error("desired_vcpus: vCPU hotplug is not supported")]
    VcpusUnsupported,
    #[error("desired_balloon: there is no balloon device; memory is resized with virtio-mem")]
    BalloonUnsupported,
    #[error("vm.resize needs desired_ram")]
    NoDesiredRam,
    #[error("this VM's memory is in --memory-zone zones: resize each with vm.resize-zone")]
    UseResizeZone,
    #[error("no memory zone with id {0}")]
    UnknownZone(String),
    #[error("memory zone {0} has no virtio-mem device (give it hotplug_size)")]
    NoDevice(String),
    #[error("desired_ram {desired} is below the boot RAM of {boot} bytes, which virtio-mem cannot take away")]
    BelowBootRam { desired: u64, boot: u64 },
    #[error("desired_ram {desired} minus boot RAM is not a multiple of the virtio-mem block size ({block_size} bytes)")]
    NotBlockMultiple { desired: u64, block_size: u64 },
    #[error(
        "desired_ram {desired} exceeds boot RAM plus the virtio-mem region: at most {max} bytes"
    )]
    ExceedsRegion { desired: u64, max: u64 },
    /// The device refused what the plan allowed (its geometry is the same, so this is a
    /// bug, reported rather than hidden).
    #[error("virtio-mem {zone}: {source}")]
    Device {
        zone: String,
        #[source]
        source: virtio_devices::mem::ResizeError,
    },
}

impl From<ResizeError> for ApiError {
    fn from(e: ResizeError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

fn plan_for_zone(index: usize, zone: &MemoryZone, desired: u64) -> Result<ResizePlan, ResizeError> {
    let device = zone
        .device
        .as_ref()
        .ok_or_else(|| ResizeError::NoDevice(zone.id.clone()))?;
    let boot: u64 = zone.boot_ranges.iter().map(|r| r.1).sum();
    let requested = desired
        .checked_sub(boot)
        .ok_or(ResizeError::BelowBootRam { desired, boot })?;
    if !requested.is_multiple_of(device.block_size) {
        return Err(ResizeError::NotBlockMultiple {
            desired,
            block_size: device.block_size,
        });
    }
    if requested > device.size {
        return Err(ResizeError::ExceedsRegion {
            desired,
            max: boot + device.size,
        });
    }
    Ok(ResizePlan {
        zone: index,
        requested_size: requested,
    })
}

/// `vm.resize`: the whole VM's RAM, through the default zone's device.
pub fn plan_resize(zones: &[MemoryZone], body: &VmResize) -> Result<ResizePlan, ResizeError> {
    if body.desired_vcpus.is_some() {
        return Err(ResizeError::VcpusUnsupported);
    }
    if body.desired_balloon.is_some() {
        return Err(ResizeError::BalloonUnsupported);
    }
    let desired = body.desired_ram.ok_or(ResizeError::NoDesiredRam)?;
    match zones {
        [zone] if zone.id == "default" => plan_for_zone(0, zone, desired),
        _ => Err(ResizeError::UseResizeZone),
    }
}

/// `vm.resize-zone`: one zone's RAM, through its device.
pub fn plan_resize_zone(
    zones: &[MemoryZone],
    body: &VmResizeZone,
) -> Result<ResizePlan, ResizeError> {
    let (index, zone) = zones
        .iter()
        .enumerate()
        .find(|(_, z)| z.id == body.id)
        .ok_or_else(|| ResizeError::UnknownZone(body.id.clone()))?;
    plan_for_zone(index, zone, body.desired_ram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::manager::{Backing, DeviceRegion};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn zone(id: &str, boot: u64, region: Option<u64>) -> MemoryZone {
        MemoryZone {
            id: id.into(),
            node: 0,
            boot_ranges: vec![(0, boot)],
            device: region.map(|size| DeviceRegion {
                addr: 4 * GIB,
                size,
                hotplugged_size: 0,
                block_size: 2 * MIB,
                host_addr: 0,
                backing: Backing::PrivateAnonymous,
                page_size: 4096,
                prefault: false,
                slot_size: 128 * MIB,
                first_slot: 2,
                protect: true,
                mmap_flags: 0,
            }),
        }
    }

    fn resize(ram: u64) -> VmResize {
        VmResize {
            desired_ram: Some(ram),
            desired_vcpus: None,
            desired_balloon: None,
        }
    }

    /// The API's answer to a refused plan: 400 and the error's text.
    fn message(r: Result<ResizePlan, ResizeError>) -> String {
        let e = ApiError::from(r.expect_err("should be refused"));
        assert_eq!(e.status, 400);
        e.message
    }

    #[test]
    fn resize_maps_total_ram_to_the_device() {
        let zones = [zone("default", GIB, Some(8 * GIB))];
        assert_eq!(
            plan_resize(&zones, &resize(3 * GIB)),
            Ok(ResizePlan {
                zone: 0,
                requested_size: 2 * GIB
            })
        );
        assert_eq!(plan_resize(&zones, &resize(GIB)).unwrap().requested_size, 0);
        assert_eq!(
            plan_resize(&zones, &resize(9 * GIB))
                .unwrap()
                .requested_size,
            8 * GIB
        );
    }

    #[test]
    fn every_bad_resize_is_a_400_with_the_reason() {
        let zones = [zone("default", GIB, Some(8 * GIB))];
        assert!(message(plan_resize(&zones, &resize(GIB + MIB)))
            .contains("multiple of the virtio-mem block size"));
        assert!(message(plan_resize(&zones, &resize(9 * GIB + 2 * MIB))).contains("exceeds"));
        assert!(message(plan_resize(&zones, &resize(GIB / 2))).contains("below the boot RAM"));
        let no_device = [zone("default", GIB, None)];
        assert!(message(plan_resize(&no_device, &resize(2 * GIB))).contains("no virtio-mem device"));
        let mut vcpus = resize(2 * GIB);
        vcpus.desired_vcpus = Some(4);
        assert!(message(plan_resize(&zones, &vcpus)).contains("desired_vcpus"));
        let none = VmResize {
            desired_ram: None,
            desired_vcpus: None,
            desired_balloon: None,
        };
        assert!(message(plan_resize(&zones, &none)).contains("desired_ram"));
        let zoned = [zone("mem0", GIB, Some(GIB)), zone("mem1", GIB, Some(GIB))];
        assert!(message(plan_resize(&zoned, &resize(3 * GIB))).contains("vm.resize-zone"));
        // One zone of the user's own is still a zone.
        let one_zone = [zone("mem0", GIB, Some(GIB))];
        assert!(message(plan_resize(&one_zone, &resize(2 * GIB))).contains("vm.resize-zone"));
    }

    #[test]
    fn resize_zone_names_its_zone() {
        let zones = [zone("mem0", GIB, Some(4 * GIB)), zone("mem1", GIB, None)];
        let body = |id: &str, ram| VmResizeZone {
            id: id.into(),
            desired_ram: ram,
        };
        assert_eq!(
            plan_resize_zone(&zones, &body("mem0", 2 * GIB)),
            Ok(ResizePlan {
                zone: 0,
                requested_size: GIB
            })
        );
        assert!(message(plan_resize_zone(&zones, &body("nope", GIB)))
            .contains("no memory zone with id nope"));
        assert!(message(plan_resize_zone(&zones, &body("mem1", 2 * GIB)))
            .contains("no virtio-mem device"));
        assert!(message(plan_resize_zone(&zones, &body("mem0", 6 * GIB))).contains("exceeds"));
    }

    #[test]
    fn bodies_refuse_unknown_fields() {
        assert!(serde_json::from_str::<VmResize>(r#"{"desired_ram": 1, "x": 2}"#).is_err());
        assert!(serde_json::from_str::<VmResize>(r#"{"desired_ram": "1G"}"#).is_err());
        assert!(serde_json::from_str::<VmResizeZone>(r#"{"desired_ram": 1}"#).is_err());
        let ok: VmResize =
            serde_json::from_str(r#"{"desired_ram": 1073741824, "desired_vcpus": null}"#).unwrap();
        assert_eq!(ok.desired_ram, Some(GIB));
    }
}
