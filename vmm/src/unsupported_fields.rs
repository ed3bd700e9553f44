//! Cloud Hypervisor's `VmConfig` fields that Accordion does not implement. CH's clients
//! (ch-remote, libvirt, the SDKs generated from CH's OpenAPI file) send many of them at
//! their neutral values (`"iommu": false`, `"disks": []`, `"rng": {"src": "/dev/urandom"}`).
//! `strip_neutral_fields` takes such fields out of a `vm.create` body before it is
//! deserialized into a `VmConfig`, and refuses, by its JSON path, any such field set to
//! something else. Fields CH does not have are left in place for serde to refuse.
//!
//! A field is neutral when it is null (not given) or holds CH's default for it: false for
//! most switches, an empty list for device lists, and the few defaults listed below.

use serde_json::{Map, Value};

/// A field Accordion accepts only at a neutral value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnsupportedField {
    #[error("{path}: not supported by Accordion (only {accepted} is accepted)")]
    NotNeutral { path: String, accepted: String },
    /// A member of an object that is wholly unsupported (`rng`, `platform`...) that CH's
    /// object does not have either.
    #[error("{path}: unknown field")]
    Unknown { path: String },
}

impl UnsupportedField {
    /// The JSON path of the field at fault, as `memory.zones[0].file`.
    pub fn path(&self) -> &str {
        match self {
            UnsupportedField::NotNeutral { path, .. } | UnsupportedField::Unknown { path } => path,
        }
    }
}

/// What a field may hold, besides null.
#[derive(Clone, Copy, Debug)]
enum Neutral {
    /// One of these values, written as compact JSON.
    Is(&'static [&'static str]),
    /// An object whose members are each neutral (absent ones are).
    Object(&'static [Field]),
}

type Field = (&'static str, Neutral);

use Neutral::{Is, Object};

const NULL: Neutral = Is(&[]);
const FALSE: Neutral = Is(&["false"]);
const TRUE: Neutral = Is(&["true"]);
const EMPTY: Neutral = Is(&["[]"]);
const ZERO: Neutral = Is(&["0"]);

/// Top-level fields of CH's `VmConfig` (as of v53, with a few older ones still sent).
const VM: &[Field] = &[
    ("rate_limit_groups", EMPTY),
    ("disks", EMPTY),
    ("net", EMPTY),
    ("rng", Object(RNG)),
    ("balloon", NULL),
    ("fs", EMPTY),
    ("generic_vhost_user", EMPTY),
    // CH's OpenAPI file spelled it so in v52 and v53.
    ("generic-vhost-user", EMPTY),
    ("pmem", EMPTY),
    ("debug_console", Object(DEBUG_CONSOLE)),
    ("devices", EMPTY),
    ("user_devices", EMPTY),
    ("vdpa", EMPTY),
    ("vsock", NULL),
    // Up to v47.
    ("sgx_epc", EMPTY),
    ("iommu", FALSE),
    ("watchdog", FALSE),
    ("rtc", NULL),
    ("pvpanic", FALSE),
    ("pci_segments", EMPTY),
    ("platform", Object(PLATFORM)),
    ("tpm", NULL),
    ("landlock_enable", FALSE),
    ("landlock_rules", EMPTY),
];

/// CH's default entropy device: `/dev/urandom`, on PCI segment 0.
const RNG: &[Field] = &[
    ("src", Is(&["\"/dev/urandom\""])),
    ("iommu", FALSE),
    ("id", NULL),
    ("pci_segment", ZERO),
    ("pci_device_id", NULL),
];

/// CH's default debug console: off, at port 0xe9.
const DEBUG_CONSOLE: &[Field] = &[
    ("mode", Is(&["\"Off\""])),
    ("file", NULL),
    ("iobase", Is(&["233"])),
];

const PLATFORM: &[Field] = &[
    ("num_pci_segments", Is(&["1"])),
    ("iommu_segments", EMPTY),
    ("iommu_address_width", Is(&["64"])),
    ("iommu_address_width_bits", Is(&["64"])),
    ("serial_number", NULL),
    ("system_serial_number", NULL),
    ("uuid", NULL),
    ("system_uuid", NULL),
    ("oem_strings", EMPTY),
    ("system_manufacturer", NULL),
    ("system_product_name", NULL),
    ("system_version", NULL),
    ("system_family", NULL),
    ("system_sku_number", NULL),
    ("chassis_asset_tag", NULL),
    ("tdx", FALSE),
    ("sev_snp", FALSE),
    ("iommufd", FALSE),
    ("vfio_p2p_dma", TRUE),
];

const CPUS: &[Field] = &[
    ("topology", NULL),
    ("kvm_hyperv", FALSE),
    ("max_phys_bits", Is(&["46"])),
    ("affinity", EMPTY),
    ("features", Object(&[("amx", FALSE)])),
    ("nested", TRUE),
    ("core_scheduling", Is(&["\"Vm\""])),
    // Not in CH's OpenAPI file, but in its `vm.info`.
    ("profile", Is(&["\"Host\""])),
];

const MEMORY: &[Field] = &[
    ("mergeable", FALSE),
    ("hugepage_size", NULL),
    ("reserve", FALSE),
    ("thp", TRUE),
];

const MEMORY_ZONE: &[Field] = &[
    ("file", NULL),
    ("mergeable", FALSE),
    ("hugepage_size", NULL),
    ("host_numa_node", NULL),
    ("reserve", FALSE),
];

const PAYLOAD: &[Field] = &[("firmware", NULL), ("igvm", NULL), ("host_data", NULL)];

/// CH's serial port had the console's `iommu` until v52.
const SERIAL: &[Field] = &[("socket", NULL), ("iommu", FALSE)];

const CONSOLE: &[Field] = &[
    ("socket", NULL),
    ("iommu", FALSE),
    ("id", NULL),
    ("pci_segment", ZERO),
    ("pci_device_id", NULL),
];

const NUMA: &[Field] = &[
    ("sgx_epc_sections", EMPTY),
    ("pci_segments", EMPTY),
    ("device_id", NULL),
];

/// Removes the neutral CH fields from the `vm.create` body `config`, or names the first one
/// that is not neutral. Parts of the wrong JSON type are left for serde to report.
pub fn strip_neutral_fields(config: &mut Value) -> Result<(), UnsupportedField> {
    strip(config, "", VM)?;
    for (key, fields) in [
        ("cpus", CPUS),
        ("memory", MEMORY),
        ("payload", PAYLOAD),
        ("serial", SERIAL),
        ("console", CONSOLE),
    ] {
        if let Some(object) = config.get_mut(key) {
            strip(object, key, fields)?;
        }
    }
    for (pointer, path, fields) in [
        ("/memory/zones", "memory.zones", MEMORY_ZONE),
        ("/numa", "numa", NUMA),
    ] {
        if let Some(items) = config.pointer_mut(pointer).and_then(Value::as_array_mut) {
            for (i, item) in items.iter_mut().enumerate() {
                strip(item, &format!("{path}[{i}]"), fields)?;
            }
        }
    }
    Ok(())
}

/// Checks and removes `fields` from `object` (at `path`).
fn strip(object: &mut Value, path: &str, fields: &[Field]) -> Result<(), UnsupportedField> {
    let Some(members) = object.as_object_mut() else {
        return Ok(());
    };
    for &(name, neutral) in fields {
        if let Some(value) = members.remove(name) {
            check(&value, &join(path, name), neutral)?;
        }
    }
    Ok(())
}

fn check(value: &Value, path: &str, neutral: Neutral) -> Result<(), UnsupportedField> {
    if value.is_null() {
        return Ok(());
    }
    let not_neutral = |accepted: String| UnsupportedField::NotNeutral {
        path: path.to_string(),
        accepted,
    };
    match neutral {
        Is(values) if values.contains(&value.to_string().as_str()) => Ok(()),
        Is([]) => Err(not_neutral("null".into())),
        Is(values) => Err(not_neutral(values.join(" or "))),
        Object(fields) => match value {
            Value::Object(members) => check_members(members, path, fields),
            _ => Err(not_neutral("an object of defaults".into())),
        },
    }
}

fn check_members(
    members: &Map<String, Value>,
    path: &str,
    fields: &[Field],
) -> Result<(), UnsupportedField> {
    for (name, value) in members {
        let path = join(path, name);
        match fields.iter().find(|(known, _)| known == name) {
            Some(&(_, neutral)) => check(value, &path, neutral)?,
            None => return Err(UnsupportedField::Unknown { path }),
        }
    }
    Ok(())
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}
