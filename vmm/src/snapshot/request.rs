//! The bodies of `vm.snapshot` and `vm.restore`, in Cloud Hypervisor's shapes, and
//! `--restore`'s option string.

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, OptionParser};
use crate::vm::{MemoryRestoreMode, RestoreOptions};

/// `vm.snapshot`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSnapshotConfig {
    pub destination_url: String,
}

/// `vm.restore`'s body, with every field Cloud Hypervisor's `RestoreConfig` has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    pub source_url: String,
    /// Load all of memory before the guest runs: with `OnDemand`, this makes it `Copy`.
    #[serde(default)]
    pub prefault: bool,
    #[serde(default)]
    pub memory_restore_mode: MemoryRestoreMode,
    #[serde(default)]
    pub resume: bool,
    /// Cloud Hypervisor's, for devices Accordion does not have: only null or empty.
    #[serde(default)]
    net_fds: Value,
    #[serde(default)]
    vfio_fds: Value,
    #[serde(default)]
    iommufd_fd: Value,
    #[serde(default)]
    zone_updates: Value,
}

impl RestoreConfig {
    /// Refuses, by name, a field Accordion does not implement set to anything but null or
    /// an empty list.
    pub fn check_unsupported(&self) -> Result<(), String> {
        crate::unsupported_fields::first_not_neutral(&[
            ("net_fds", &self.net_fds),
            ("vfio_fds", &self.vfio_fds),
            ("iommufd_fd", &self.iommufd_fd),
            ("zone_updates", &self.zone_updates),
        ])
        .map_err(|e| format!("vm.restore: {e}"))
    }

    /// What the VM is restored with.
    pub fn options(&self) -> RestoreOptions {
        RestoreOptions {
            resume: self.resume,
            mode: if self.prefault {
                MemoryRestoreMode::Copy
            } else {
                self.memory_restore_mode
            },
        }
    }

    /// `--restore source_url=file:///dir[,prefault=on|off][,memory_restore_mode=copy|ondemand][,resume=on|off]`.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        const OPTION: &str = "--restore";
        let p = OptionParser::parse(
            OPTION,
            value,
            &["source_url", "prefault", "memory_restore_mode", "resume"],
        )?;
        let flag = |key: &str| match p.get(key) {
            None | Some("off" | "false") => Ok(false),
            Some("on" | "true") => Ok(true),
            Some(v) => Err(ConfigError::new(
                OPTION,
                format!("{key}={v}: expected on or off"),
            )),
        };
        let memory_restore_mode = match p.get("memory_restore_mode") {
            None => MemoryRestoreMode::Copy,
            Some(v) if v.eq_ignore_ascii_case("copy") => MemoryRestoreMode::Copy,
            Some(v) if v.eq_ignore_ascii_case("ondemand") => MemoryRestoreMode::OnDemand,
            Some(v) => {
                return Err(ConfigError::new(
                    OPTION,
                    format!("memory_restore_mode={v}: expected copy or ondemand"),
                ))
            }
        };
        Ok(RestoreConfig {
            source_url: p
                .get("source_url")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::new(OPTION, "source_url= is required"))?
                .to_string(),
            prefault: flag("prefault")?,
            memory_restore_mode,
            resume: flag("resume")?,
            net_fds: Value::Null,
            vfio_fds: Value::Null,
            iommufd_fd: Value::Null,
            zone_updates: Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hypervisors_restore_body_is_accepted() {
        // What ch-remote v48+ sends for `restore source_url=file:///tmp/snap`.
        let body = r#"{"source_url":"file:///tmp/snap","prefault":false,"memory_restore_mode":"Copy","net_fds":null,"vfio_fds":null,"iommufd_fd":null,"resume":false,"zone_updates":[]}"#;
        let config: RestoreConfig = serde_json::from_str(body).unwrap();
        config.check_unsupported().unwrap();
        assert_eq!(config.source_url, "file:///tmp/snap");
        assert!(!config.options().resume);
    }

    #[test]
    fn unsupported_fields_are_named() {
        let body = r#"{"source_url":"file:///s","net_fds":[{"id":"n","fds":[3]}]}"#;
        let config: RestoreConfig = serde_json::from_str(body).unwrap();
        assert!(config.check_unsupported().unwrap_err().contains("net_fds"));
        let e = serde_json::from_str::<RestoreConfig>(r#"{"source_url":"file:///s","x":1}"#);
        assert!(e.unwrap_err().to_string().contains("unknown field `x`"));
    }

    #[test]
    fn the_command_line_option() {
        let c = RestoreConfig::parse(
            "source_url=file:///s,prefault=on,memory_restore_mode=OnDemand,resume=on",
        )
        .unwrap();
        assert_eq!(c.memory_restore_mode, MemoryRestoreMode::OnDemand);
        assert!(c.prefault && c.resume);
        for (bad, word) in [
            ("prefault=on", "source_url"),
            ("source_url=file:///s,resume=yes", "resume=yes"),
            ("source_url=file:///s,memory_restore_mode=lazy", "lazy"),
            ("source_url=file:///s,bogus=1", "bogus"),
        ] {
            let e = RestoreConfig::parse(bad).unwrap_err();
            assert_eq!(e.option, "--restore");
            assert!(e.to_string().contains(word), "{e}");
        }
    }
}
