//! `vm.resize` and `vm.resize-zone`: turning a desired RAM size into a virtio-mem device's
//! requested size, with every rule checked before anything changes. The answer never waits
//! for the guest or for the device thread.

use serde::Deserialize;

use crate::api::ApiError;
use crate::memory::manager::ZoneLayout;

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
}

impl ResizeError {
    /// The device's refusal of a requested size (its geometry is the one rule book), told
    /// in the API's terms: the zone's total RAM.
    pub fn refused_by_device(
        e: virtio_devices::mem::ResizeError,
        zone: &ZoneLayout,
        desired: u64,
    ) -> Self {
        use virtio_devices::mem::ResizeError as Device;
        match e {
            Device::NotBlockMultiple { block_size, .. } => ResizeError::NotBlockMultiple {
                desired,
                block_size,
            },
            Device::ExceedsRegion { region_size, .. } => ResizeError::ExceedsRegion {
                desired,
                max: zone.boot_size() + region_size,
            },
        }
    }
}

impl From<ResizeError> for ApiError {
    fn from(e: ResizeError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// Zone `id` of `zones` to `desired` bytes of RAM: its device is asked (`ask`) for what is
/// above the zone's boot RAM, and the device's geometry decides whether it can take it (the
/// one validation). Returns the requested size.
pub fn resize_zone_with<Z: AsRef<ZoneLayout>>(
    zones: &[Z],
    id: &str,
    desired: u64,
    ask: impl FnOnce(&Z, u64) -> Result<(), ResizeError>,
) -> Result<u64, ResizeError> {
    let zone = zones
        .iter()
        .find(|z| z.as_ref().id == id)
        .ok_or_else(|| ResizeError::UnknownZone(id.to_string()))?;
    let layout = zone.as_ref();
    if layout.region.is_none() {
        return Err(ResizeError::NoDevice(id.to_string()));
    }
    let boot = layout.boot_size();
    let requested = desired
        .checked_sub(boot)
        .ok_or(ResizeError::BelowBootRam { desired, boot })?;
    ask(zone, requested)?;
    Ok(requested)
}

/// As [`resize_zone_with`] for zones that have no device yet: checks against the geometry
/// their device would have, and changes nothing.
pub fn check_resize_zone(zones: &[ZoneLayout], id: &str, desired: u64) -> Result<u64, ResizeError> {
    resize_zone_with(zones, id, desired, |zone, requested| {
        let Some(Ok(geometry)) = zone.region.as_ref().map(|r| r.geometry()) else {
            return Err(ResizeError::NoDevice(id.to_string()));
        };
        geometry
            .check_requested_size(requested)
            .map_err(|e| ResizeError::refused_by_device(e, zone, desired))
    })
}

/// `vm.resize`: which zone (the only one, `default`) and how much RAM, from the body.
pub fn resize_target<'a>(
    zone_ids: impl IntoIterator<Item = &'a str>,
    body: &VmResize,
) -> Result<(&'static str, u64), ResizeError> {
    if body.desired_vcpus.is_some() {
        return Err(ResizeError::VcpusUnsupported);
    }
    if body.desired_balloon.is_some() {
        return Err(ResizeError::BalloonUnsupported);
    }
    let desired = body.desired_ram.ok_or(ResizeError::NoDesiredRam)?;
    let ids: Vec<&str> = zone_ids.into_iter().collect();
    match ids.as_slice() {
        ["default"] => Ok(("default", desired)),
        _ => Err(ResizeError::UseResizeZone),
    }
}

/// As [`check_resize_zone`] for `vm.resize`.
pub fn check_resize(zones: &[ZoneLayout], body: &VmResize) -> Result<u64, ResizeError> {
    let (id, desired) = resize_target(zones.iter().map(|z| z.id.as_str()), body)?;
    check_resize_zone(zones, id, desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::manager::{Backing, DeviceRegion};

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn zone(id: &str, boot: u64, region: Option<u64>) -> ZoneLayout {
        ZoneLayout {
            id: id.into(),
            node: 0,
            boot_ranges: vec![(0, boot)],
            region: region.map(|size| DeviceRegion {
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
    fn message(r: Result<u64, ResizeError>) -> String {
        let e = ApiError::from(r.expect_err("should be refused"));
        assert_eq!(e.status, 400);
        e.message
    }

    #[test]
    fn resize_maps_total_ram_to_the_device() {
        let zones = [zone("default", GIB, Some(8 * GIB))];
        assert_eq!(check_resize(&zones, &resize(3 * GIB)), Ok(2 * GIB));
        assert_eq!(check_resize(&zones, &resize(GIB)), Ok(0));
        assert_eq!(check_resize(&zones, &resize(9 * GIB)), Ok(8 * GIB));
    }

    #[test]
    fn every_bad_resize_is_a_400_with_the_reason() {
        let zones = [zone("default", GIB, Some(8 * GIB))];
        assert!(message(check_resize(&zones, &resize(GIB + MIB)))
            .contains("multiple of the virtio-mem block size"));
        assert!(message(check_resize(&zones, &resize(9 * GIB + 2 * MIB))).contains("exceeds"));
        assert!(message(check_resize(&zones, &resize(GIB / 2))).contains("below the boot RAM"));
        let no_device = [zone("default", GIB, None)];
        assert!(
            message(check_resize(&no_device, &resize(2 * GIB))).contains("no virtio-mem device")
        );
        let mut vcpus = resize(2 * GIB);
        vcpus.desired_vcpus = Some(4);
        assert!(message(check_resize(&zones, &vcpus)).contains("desired_vcpus"));
        let none = VmResize {
            desired_ram: None,
            desired_vcpus: None,
            desired_balloon: None,
        };
        assert!(message(check_resize(&zones, &none)).contains("desired_ram"));
        let zoned = [zone("mem0", GIB, Some(GIB)), zone("mem1", GIB, Some(GIB))];
        assert!(message(check_resize(&zoned, &resize(3 * GIB))).contains("vm.resize-zone"));
        // One zone of the user's own is still a zone.
        let one_zone = [zone("mem0", GIB, Some(GIB))];
        assert!(message(check_resize(&one_zone, &resize(2 * GIB))).contains("vm.resize-zone"));
    }

    #[test]
    fn resize_zone_names_its_zone() {
        let zones = [zone("mem0", GIB, Some(4 * GIB)), zone("mem1", GIB, None)];
        assert_eq!(check_resize_zone(&zones, "mem0", 2 * GIB), Ok(GIB));
        assert!(
            message(check_resize_zone(&zones, "nope", GIB)).contains("no memory zone with id nope")
        );
        assert!(
            message(check_resize_zone(&zones, "mem1", 2 * GIB)).contains("no virtio-mem device")
        );
        assert!(message(check_resize_zone(&zones, "mem0", 6 * GIB)).contains("exceeds"));
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
