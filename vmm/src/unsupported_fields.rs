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

/// The first of `fields` (Cloud Hypervisor's, for what Accordion does not have) set to
/// anything but null or an empty list, as `"NAME: not supported by Accordion (...)"`.
pub fn first_not_neutral(fields: &[(&str, &Value)]) -> Result<(), String> {
    for (name, value) in fields {
        let neutral = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if !neutral {
            return Err(format!(
                "{name}: not supported by Accordion (only null or [] is accepted)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConsoleMode, VmConfig};
    use serde_json::json;

    /// What a CH client sends when it writes out every field CH's `VmConfig` has (v53's
    /// fields, and the older `sgx_epc`, `generic-vhost-user`, `serial.iommu` and
    /// `platform.iommu_address_width`), those Accordion lacks at their defaults.
    fn ch_body() -> Value {
        serde_json::from_str(include_str!("testdata/ch_vm_create.json")).expect("fixture")
    }

    /// Each object with a table: where it is in `ch_body`, its path in messages, the table.
    const PLACES: &[(&str, &str, &[Field])] = &[
        ("", "", VM),
        ("/cpus", "cpus", CPUS),
        ("/memory", "memory", MEMORY),
        ("/memory/zones/0", "memory.zones[0]", MEMORY_ZONE),
        ("/payload", "payload", PAYLOAD),
        ("/serial", "serial", SERIAL),
        ("/console", "console", CONSOLE),
        ("/numa/0", "numa[0]", NUMA),
    ];

    fn refusal(mut body: Value) -> UnsupportedField {
        strip_neutral_fields(&mut body).expect_err("should be refused")
    }

    #[test]
    fn a_full_ch_body_at_neutral_values_is_accepted() {
        let mut body = ch_body();
        strip_neutral_fields(&mut body).unwrap();
        let config: VmConfig = serde_json::from_value(body).unwrap();
        assert_eq!((config.cpus.boot_vcpus, config.cpus.max_vcpus), (2, 2));
        assert_eq!(config.memory.boot_ram(), 1 << 30);
        assert_eq!(config.serial.mode, ConsoleMode::Tty);
        assert_eq!(config.console.mode, ConsoleMode::Off);
        assert_eq!(config.numa.as_ref().map(Vec::len), Some(1));
        assert_eq!(
            config.payload.kernel,
            std::path::Path::new("/var/lib/vms/vm1/vmlinux")
        );
        // What validation says, short of the files (absent here).
        let e = config.validate().unwrap_err();
        assert_eq!(e.option, "--kernel", "{e}");
    }

    /// The fixture has every field of every table, so the test above covers them all.
    #[test]
    fn the_fixture_has_every_field() {
        fn has_all(object: &Value, path: &str, fields: &[Field]) {
            for &(name, neutral) in fields {
                let value = object
                    .get(name)
                    .unwrap_or_else(|| panic!("fixture lacks {}", join(path, name)));
                if let (Object(members), false) = (neutral, value.is_null()) {
                    has_all(value, &join(path, name), members);
                }
            }
        }
        let body = ch_body();
        for &(pointer, path, fields) in PLACES {
            has_all(body.pointer(pointer).unwrap(), path, fields);
        }
    }

    #[test]
    fn every_field_is_refused_by_path_unless_neutral() {
        // Sets the field at `pointer`/`name` (and, inside objects, each member) to a value
        // no field takes as neutral, and expects it named.
        fn refuse_each(pointer: &str, path: &str, fields: &[Field]) {
            for &(name, neutral) in fields {
                let (pointer, path) = (format!("{pointer}/{name}"), join(path, name));
                let mut body = ch_body();
                *body.pointer_mut(&pointer).unwrap() = json!("not neutral");
                let e = refusal(body);
                assert_eq!(e.path(), path, "{e}");
                assert!(e.to_string().starts_with(&format!("{path}: not supported")));
                if let Object(members) = neutral {
                    refuse_each(&pointer, &path, members);
                }
            }
        }
        for &(pointer, path, fields) in PLACES {
            refuse_each(pointer, path, fields);
        }
    }

    #[test]
    fn refusals_say_what_is_accepted() {
        let refused = |patch: Value| {
            let mut body = json!({"payload": {"kernel": "/k"}});
            merge(&mut body, patch);
            refusal(body).to_string()
        };
        for (patch, message) in [
            (
                json!({"iommu": true}),
                "iommu: not supported by Accordion (only false is accepted)",
            ),
            (
                json!({"disks": [{"path": "/img"}]}),
                "disks: not supported by Accordion (only [] is accepted)",
            ),
            (
                json!({"vsock": {"cid": 3, "socket": "/v"}}),
                "vsock: not supported by Accordion (only null is accepted)",
            ),
            (
                json!({"memory": {"mergeable": true}}),
                "memory.mergeable: not supported by Accordion (only false is accepted)",
            ),
            (
                json!({"cpus": {"max_phys_bits": 40}}),
                "cpus.max_phys_bits: not supported by Accordion (only 46 is accepted)",
            ),
            (
                json!({"rng": {"src": "/dev/random"}}),
                "rng.src: not supported by Accordion (only \"/dev/urandom\" is accepted)",
            ),
            (
                json!({"rng": "/dev/urandom"}),
                "rng: not supported by Accordion (only an object of defaults is accepted)",
            ),
            (
                json!({"platform": {"uuid": "0d4c6c43-bd1f-4c40-a5b2-12dba6ad1c4d"}}),
                "platform.uuid: not supported by Accordion (only null is accepted)",
            ),
            (json!({"rng": {"bogus": 1}}), "rng.bogus: unknown field"),
            (
                json!({"payload": {"firmware": "/fw"}}),
                "payload.firmware: not supported by Accordion (only null is accepted)",
            ),
            (
                json!({"serial": {"mode": "Tty", "socket": "/s"}}),
                "serial.socket: not supported by Accordion (only null is accepted)",
            ),
            (
                json!({"console": {"mode": "Off", "pci_segment": 1}}),
                "console.pci_segment: not supported by Accordion (only 0 is accepted)",
            ),
            (
                json!({"memory": {"size": 0, "zones": [{"id": "a", "size": 1}, {"id": "b", "size": 1, "file": "/f"}]}}),
                "memory.zones[1].file: not supported by Accordion (only null is accepted)",
            ),
            (
                json!({"numa": [{"guest_numa_id": 0, "device_id": "x"}]}),
                "numa[0].device_id: not supported by Accordion (only null is accepted)",
            ),
        ] {
            assert_eq!(refused(patch), message);
        }
    }

    /// Adds `patch`'s members to `body`, merging objects.
    fn merge(body: &mut Value, patch: Value) {
        match (body, patch) {
            (Value::Object(b), Value::Object(p)) => {
                for (k, v) in p {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }

    #[test]
    fn null_and_empty_objects_are_neutral_and_unknown_fields_are_left_to_serde() {
        let mut body = json!({
            "payload": {"kernel": "/k"},
            "rng": null, "platform": {}, "debug_console": null, "cpus": {"features": {}},
            "iommu": null, "bogus": true, "memory": {"zones": "not a list"},
        });
        strip_neutral_fields(&mut body).unwrap();
        assert_eq!(
            body,
            json!({"payload": {"kernel": "/k"}, "cpus": {}, "bogus": true,
                   "memory": {"zones": "not a list"}})
        );
        // Bodies of the wrong shape are left as they are.
        for mut odd in [json!([]), json!(1), json!({"cpus": 2})] {
            let before = odd.clone();
            strip_neutral_fields(&mut odd).unwrap();
            assert_eq!(odd, before);
        }
    }

    /// What `vm.info` reports as `config` is accepted again by `vm.create`, also after
    /// coming through a full CH body.
    #[test]
    fn round_trip() {
        let mut body = ch_body();
        strip_neutral_fields(&mut body).unwrap();
        let config: VmConfig = serde_json::from_value(body).unwrap();
        let mut info = serde_json::to_value(&config).unwrap();
        strip_neutral_fields(&mut info).unwrap();
        assert_eq!(serde_json::from_value::<VmConfig>(info).unwrap(), config);
    }
}
