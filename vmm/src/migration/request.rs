//! The bodies of `vm.send-migration` and `vm.receive-migration`, with every field Cloud
//! Hypervisor's `ch-remote` sends; the ones Accordion does not implement are refused by
//! name unless they hold their neutral value.

use serde::Deserialize;
use serde_json::Value;

use super::transport::MigrationUrl;

/// What to do when `timeout_s` passes before the memory converged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum TimeoutStrategy {
    /// Give up; the source runs on.
    #[default]
    Cancel,
    /// Pause and finish anyway, however long the downtime.
    Ignore,
}

/// `memory_mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum MemoryMode {
    #[default]
    Precopy,
    Postcopy,
}

fn default_downtime_ms() -> u64 {
    300
}

fn default_timeout_s() -> u64 {
    3600
}

fn default_connections() -> u64 {
    1
}

/// `vm.send-migration`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMigrationConfig {
    pub destination_url: String,
    /// Pass the memory's file descriptors instead of copying it (unix sockets, shared
    /// memory).
    #[serde(default)]
    pub local: bool,
    /// The longest pause the guest may see, in ms (Cloud Hypervisor's and QEMU's 300).
    #[serde(default = "default_downtime_ms")]
    pub downtime_ms: u64,
    /// How long the copy passes may take.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    #[serde(default)]
    pub timeout_strategy: TimeoutStrategy,
    #[serde(default)]
    preserve_source: bool,
    #[serde(default = "default_connections")]
    connections: u64,
    #[serde(default)]
    tls_dir: Value,
    #[serde(default)]
    memory_mode: MemoryMode,
}

impl SendMigrationConfig {
    /// The destination, once every field is checked; errors name the field.
    pub fn validate(&self) -> Result<MigrationUrl, String> {
        let url = MigrationUrl::parse(&self.destination_url, "destination_url")?;
        if self.downtime_ms == 0 {
            return Err("downtime_ms: must be more than 0".into());
        }
        if self.timeout_s == 0 {
            return Err("timeout_s: must be more than 0".into());
        }
        if !self.tls_dir.is_null() {
            return Err("tls_dir: TLS is not supported by Accordion (only null)".into());
        }
        if self.connections != 1 {
            return Err(format!(
                "connections: {}: Accordion migrates over one connection (only 1)",
                self.connections
            ));
        }
        if self.memory_mode == MemoryMode::Postcopy {
            return Err(
                "memory_mode: Postcopy is not supported by Accordion (only Precopy)".into(),
            );
        }
        if self.preserve_source {
            return Err("preserve_source: not supported by Accordion (only false)".into());
        }
        if self.local && !url.is_unix() {
            return Err("local: a local migration needs a unix: destination_url".into());
        }
        Ok(url)
    }
}

/// `vm.receive-migration`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveMigrationConfig {
    pub receiver_url: String,
    #[serde(default)]
    tls_dir: Value,
    #[serde(default)]
    memory_mode: MemoryMode,
    #[serde(default)]
    vfio_fds: Value,
    #[serde(default)]
    iommufd_fd: Value,
    #[serde(default)]
    zone_updates: Value,
    #[serde(default)]
    net_fds: Value,
}

impl ReceiveMigrationConfig {
    /// Where to listen, once every field is checked; errors name the field.
    pub fn validate(&self) -> Result<MigrationUrl, String> {
        let url = MigrationUrl::parse(&self.receiver_url, "receiver_url")?;
        if self.memory_mode == MemoryMode::Postcopy {
            return Err(
                "memory_mode: Postcopy is not supported by Accordion (only Precopy)".into(),
            );
        }
        crate::unsupported_fields::first_not_neutral(&[
            ("tls_dir", &self.tls_dir),
            ("vfio_fds", &self.vfio_fds),
            ("iommufd_fd", &self.iommufd_fd),
            ("zone_updates", &self.zone_updates),
            ("net_fds", &self.net_fds),
        ])?;
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(body: &str) -> Result<MigrationUrl, String> {
        serde_json::from_str::<SendMigrationConfig>(body)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn ch_remotes_whole_send_body_is_accepted() {
        let body = r#"{"destination_url":"unix:/tmp/m","local":false,"preserve_source":false,
            "downtime_ms":300,"timeout_s":3600,"timeout_strategy":"Cancel","connections":1,
            "tls_dir":null,"memory_mode":"Precopy"}"#;
        assert_eq!(send(body), Ok(MigrationUrl::Unix("/tmp/m".into())));
        assert!(send(r#"{"destination_url":"tcp:127.0.0.1:6000"}"#).is_ok());
    }

    #[test]
    fn unsupported_send_fields_are_refused_by_name() {
        for (body, field) in [
            (
                r#"{"destination_url":"tcp:10.0.0.1:1","tls_dir":"/etc/tls"}"#,
                "tls_dir",
            ),
            (
                r#"{"destination_url":"tcp:10.0.0.1:1","connections":2}"#,
                "connections",
            ),
            (
                r#"{"destination_url":"tcp:10.0.0.1:1","memory_mode":"Postcopy"}"#,
                "memory_mode",
            ),
            (
                r#"{"destination_url":"unix:/m","preserve_source":true}"#,
                "preserve_source",
            ),
            (
                r#"{"destination_url":"tcp:10.0.0.1:1","local":true}"#,
                "local",
            ),
            (
                r#"{"destination_url":"tcp:10.0.0.1:1","downtime_ms":0}"#,
                "downtime_ms",
            ),
            (
                r#"{"destination_url":"tcp:10.0.0.1:1","timeout_s":0}"#,
                "timeout_s",
            ),
            (r#"{"destination_url":"ftp:h"}"#, "destination_url"),
            (
                r#"{"destination_url":"tcp:example.com:1"}"#,
                "destination_url",
            ),
        ] {
            let e = send(body).unwrap_err();
            assert!(e.starts_with(field), "{body}: {e}");
        }
    }

    #[test]
    fn receive_bodies() {
        let body = r#"{"receiver_url":"unix:/tmp/m","tls_dir":null,"memory_mode":"Precopy",
            "vfio_fds":null,"iommufd_fd":null,"zone_updates":[]}"#;
        let c: ReceiveMigrationConfig = serde_json::from_str(body).unwrap();
        assert!(c.validate().is_ok());
        let c: ReceiveMigrationConfig =
            serde_json::from_str(r#"{"receiver_url":"unix:/m","zone_updates":[{"id":"a"}]}"#)
                .unwrap();
        assert!(c.validate().unwrap_err().starts_with("zone_updates"));
    }
}

/// `accordion-remote send-migration`'s and `receive-migration`'s option strings, in
/// `ch-remote`'s syntax, as the JSON bodies `ch-remote` sends.
pub mod cli {
    use serde_json::{json, Value};

    use crate::config::{ConfigError, OptionParser};

    fn flag(option: &str, p: &OptionParser<'_>, key: &str) -> Result<bool, ConfigError> {
        match p.get(key) {
            None | Some("off" | "false") => Ok(false),
            Some("on" | "true") => Ok(true),
            Some(v) => Err(ConfigError::new(
                option,
                format!("{key}={v}: expected on or off"),
            )),
        }
    }

    fn number(
        option: &str,
        p: &OptionParser<'_>,
        key: &str,
        default: u64,
    ) -> Result<u64, ConfigError> {
        p.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| ConfigError::new(option, format!("{key}={v}: expected a number")))
        })
    }

    fn required<'a>(option: &str, p: &OptionParser<'a>, key: &str) -> Result<&'a str, ConfigError> {
        p.get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError::new(option, format!("{key}= is required")))
    }

    fn memory_mode(option: &str, p: &OptionParser<'_>) -> Result<&'static str, ConfigError> {
        match p.get("memory_mode") {
            None => Ok("Precopy"),
            Some(v) if v.eq_ignore_ascii_case("precopy") => Ok("Precopy"),
            Some(v) if v.eq_ignore_ascii_case("postcopy") => Ok("Postcopy"),
            Some(v) => Err(ConfigError::new(
                option,
                format!("memory_mode={v}: expected precopy or postcopy"),
            )),
        }
    }

    /// `destination_url=URL[,local=on][,downtime_ms=N][,timeout_s=N]
    /// [,timeout_strategy=cancel|ignore][,connections=N][,tls_dir=DIR]
    /// [,memory_mode=precopy][,preserve_source=on]`.
    pub fn send_body(value: &str) -> Result<Value, ConfigError> {
        const OPTION: &str = "send-migration";
        let p = OptionParser::parse(
            OPTION,
            value,
            &[
                "destination_url",
                "local",
                "downtime_ms",
                "timeout_s",
                "timeout_strategy",
                "connections",
                "tls_dir",
                "memory_mode",
                "preserve_source",
            ],
        )?;
        let strategy = match p.get("timeout_strategy") {
            None => "Cancel",
            Some(v) if v.eq_ignore_ascii_case("cancel") => "Cancel",
            Some(v) if v.eq_ignore_ascii_case("ignore") => "Ignore",
            Some(v) => {
                return Err(ConfigError::new(
                    OPTION,
                    format!("timeout_strategy={v}: expected cancel or ignore"),
                ))
            }
        };
        Ok(json!({
            "destination_url": required(OPTION, &p, "destination_url")?,
            "local": flag(OPTION, &p, "local")?,
            "preserve_source": flag(OPTION, &p, "preserve_source")?,
            "downtime_ms": number(OPTION, &p, "downtime_ms", super::default_downtime_ms())?,
            "timeout_s": number(OPTION, &p, "timeout_s", super::default_timeout_s())?,
            "timeout_strategy": strategy,
            "connections": number(OPTION, &p, "connections", 1)?,
            "tls_dir": p.get("tls_dir"),
            "memory_mode": memory_mode(OPTION, &p)?,
        }))
    }

    /// `receiver_url=URL[,tls_dir=DIR][,memory_mode=precopy]`.
    pub fn receive_body(value: &str) -> Result<Value, ConfigError> {
        const OPTION: &str = "receive-migration";
        let p = OptionParser::parse(OPTION, value, &["receiver_url", "tls_dir", "memory_mode"])?;
        Ok(json!({
            "receiver_url": required(OPTION, &p, "receiver_url")?,
            "tls_dir": p.get("tls_dir"),
            "memory_mode": memory_mode(OPTION, &p)?,
        }))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn option_strings_become_ch_remotes_bodies() {
            let body =
                send_body("destination_url=unix:/tmp/m,downtime_ms=50,timeout_strategy=ignore")
                    .unwrap();
            let config: super::super::SendMigrationConfig = serde_json::from_value(body).unwrap();
            assert_eq!(config.downtime_ms, 50);
            assert_eq!(
                config.timeout_strategy,
                super::super::TimeoutStrategy::Ignore
            );
            assert!(config.validate().is_ok());
            let e = send_body("destination_url=unix:/m,bogus=1").unwrap_err();
            assert!(e.to_string().contains("bogus"), "{e}");
            let e = send_body("local=on").unwrap_err();
            assert!(e.to_string().contains("destination_url"), "{e}");
            let body = receive_body("receiver_url=tcp:0.0.0.0:6000").unwrap();
            let config: super::super::ReceiveMigrationConfig =
                serde_json::from_value(body).unwrap();
            assert!(config.validate().is_ok());
        }
    }
}
