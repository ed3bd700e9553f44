//! The VM configuration: one model for the command line and (later) the REST API, in Cloud
//! Hypervisor's shapes, and the parsers for its `key=value,...` option strings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A configuration problem, naming the option at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{option}: {reason}")]
pub struct ConfigError {
    pub option: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(option: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            option: option.to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ConfigError>;

/// The most vCPUs we offer: APIC ids must fit the 8-bit xAPIC id.
pub const MAX_VCPUS: u32 = 254;

/// vCPUs. `max_vcpus` is always a number (Cloud Hypervisor's clients require it), equal to
/// `boot_vcpus` unless given otherwise; validation refuses any other value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CpusJson")]
pub struct CpusConfig {
    pub boot_vcpus: u32,
    pub max_vcpus: u32,
}

/// `CpusConfig` as JSON may give it: both fields optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CpusJson {
    #[serde(default = "default_boot_vcpus")]
    boot_vcpus: u32,
    #[serde(default)]
    max_vcpus: Option<u32>,
}

impl From<CpusJson> for CpusConfig {
    fn from(json: CpusJson) -> Self {
        CpusConfig::new(json.boot_vcpus, json.max_vcpus)
    }
}

fn default_boot_vcpus() -> u32 {
    1
}

impl CpusConfig {
    /// `boot` vCPUs, and at most `max` (`boot` when not given).
    pub fn new(boot: u32, max: Option<u32>) -> Self {
        CpusConfig {
            boot_vcpus: boot,
            max_vcpus: max.unwrap_or(boot),
        }
    }
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig::new(default_boot_vcpus(), None)
    }
}

pub use crate::memory::config::{
    HotplugMethod, MemoryConfig, MemoryZoneConfig, NumaConfig, NumaDistance, DEFAULT_BLOCK_SIZE,
    DEFAULT_MEMORY_SIZE,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadConfig {
    pub kernel: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMode {
    /// Cloud Hypervisor calls it `Null` for the serial port.
    #[serde(alias = "Null")]
    Off,
    Tty,
    File,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub mode: ConsoleMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl ConsoleConfig {
    pub fn off() -> Self {
        ConsoleConfig {
            mode: ConsoleMode::Off,
            file: None,
        }
    }
}

/// The whole VM, as `--kernel` and friends or the body of `vm.create` describe it. In JSON
/// only `payload` is required; the rest defaults as in Cloud Hypervisor, except that the
/// serial port and the (unsupported) virtio-console default to off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub cpus: CpusConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    pub payload: PayloadConfig,
    #[serde(default = "ConsoleConfig::off")]
    pub serial: ConsoleConfig,
    #[serde(default = "ConsoleConfig::off")]
    pub console: ConsoleConfig,
    /// Guest NUMA nodes (`--numa`); none means one node with everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<Vec<NumaConfig>>,
}

/// `key=value,key=value` as Cloud Hypervisor writes its options. A bare word is a key with
/// an empty value (`--serial tty`).
pub struct OptionParser<'a> {
    option: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> OptionParser<'a> {
    /// Parses `value` of `option`, accepting only `known` keys.
    pub fn parse(option: &'a str, value: &'a str, known: &[&str]) -> Result<Self> {
        let mut pairs = Vec::new();
        for item in value.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            if !known.contains(&k) {
                return Err(ConfigError::new(
                    option,
                    format!(
                        "unknown parameter '{k}' (expected one of: {})",
                        known.join(", ")
                    ),
                ));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(ConfigError::new(
                    option,
                    format!("parameter '{k}' given twice"),
                ));
            }
            pairs.push((k, v));
        }
        Ok(OptionParser { option, pairs })
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn get_u32(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| {
                v.parse::<u32>().map_err(|_| {
                    ConfigError::new(self.option, format!("{key}={v} is not a whole number"))
                })
            })
            .transpose()
    }

    pub fn get_size(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                parse_size(v)
                    .map_err(|reason| ConfigError::new(self.option, format!("{key}: {reason}")))
            })
            .transpose()
    }
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (a number with an optional K, M or G suffix)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

impl CpusConfig {
    pub fn parse(value: &str) -> Result<Self> {
        let p = OptionParser::parse("--cpus", value, &["boot"])?;
        let boot_vcpus = p.get_u32("boot")?.unwrap_or(default_boot_vcpus());
        Ok(CpusConfig::new(boot_vcpus, None))
    }
}

impl ConsoleConfig {
    /// `off`, `tty` or `file=PATH`.
    pub fn parse(option: &str, value: &str) -> Result<Self> {
        let p = OptionParser::parse(option, value, &["off", "tty", "file"])?;
        let modes = ["off", "tty", "file"].iter().filter(|k| p.has(k)).count();
        if modes != 1 {
            return Err(ConfigError::new(
                option,
                "give exactly one of off, tty, file=PATH",
            ));
        }
        if p.has("off") {
            return Ok(ConsoleConfig::off());
        }
        if p.has("tty") {
            return Ok(ConsoleConfig {
                mode: ConsoleMode::Tty,
                file: None,
            });
        }
        match p.get("file") {
            Some(path) if !path.is_empty() => Ok(ConsoleConfig {
                mode: ConsoleMode::File,
                file: Some(PathBuf::from(path)),
            }),
            _ => Err(ConfigError::new(option, "file= needs a path")),
        }
    }
}

impl VmConfig {
    /// Checks everything that can be checked before a VM exists.
    pub fn validate(&self) -> Result<()> {
        self.validate_machine()?;
        check_readable("--kernel", &self.payload.kernel)?;
        if let Some(initramfs) = &self.payload.initramfs {
            check_readable("--initramfs", initramfs)?;
        }
        Ok(())
    }

    /// Everything [`validate`](Self::validate) checks but the payload files: what a
    /// snapshot's configuration must pass (its guest is past the kernel loader).
    pub fn validate_machine(&self) -> Result<()> {
        let boot = self.cpus.boot_vcpus;
        if boot == 0 {
            return Err(ConfigError::new(
                "--cpus",
                "boot=0: a VM needs at least one vCPU",
            ));
        }
        if boot > MAX_VCPUS {
            return Err(ConfigError::new(
                "--cpus",
                format!("boot={boot} is more than the {MAX_VCPUS} vCPUs supported"),
            ));
        }
        if self.cpus.max_vcpus != boot {
            return Err(ConfigError::new(
                "--cpus",
                "max_vcpus must equal boot_vcpus (vCPU hotplug is not supported)",
            ));
        }
        crate::memory::config::validate(self)?;
        let min = arch::layout::MIN_RAM_SIZE;
        if self.memory.boot_ram() < min {
            return Err(ConfigError::new(
                "--memory",
                format!(
                    "boot RAM of {} bytes is below the minimum of {} MiB",
                    self.memory.boot_ram(),
                    min >> 20
                ),
            ));
        }
        if !self.memory.size.is_multiple_of(4096) {
            return Err(ConfigError::new(
                "--memory",
                "size must be a multiple of 4 KiB",
            ));
        }
        if self.console.mode != ConsoleMode::Off {
            return Err(ConfigError::new(
                "--console",
                "only 'off' is supported: Accordion has no virtio-console device (use --serial)",
            ));
        }
        if self.serial.mode == ConsoleMode::File && self.serial.file.is_none() {
            return Err(ConfigError::new("--serial", "file mode needs a path"));
        }
        Ok(())
    }
}

fn check_readable(option: &str, path: &std::path::Path) -> Result<()> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError::new(option, format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(ConfigError::new(
            option,
            format!("{}: not a regular file", path.display()),
        ));
    }
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| ConfigError::new(option, format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn cpus_and_memory() {
        assert_eq!(CpusConfig::parse("boot=2").unwrap().boot_vcpus, 2);
        assert_eq!(MemoryConfig::parse("size=1G").unwrap().size, 1 << 30);
        let e = CpusConfig::parse("boot=two").unwrap_err();
        assert_eq!(e.option, "--cpus");
        let e = MemoryConfig::parse("sise=1G").unwrap_err();
        assert!(e.to_string().contains("unknown parameter 'sise'"), "{e}");
        assert!(CpusConfig::parse("boot=1,boot=2").is_err());
    }

    #[test]
    fn serial_modes() {
        assert_eq!(
            ConsoleConfig::parse("--serial", "tty").unwrap().mode,
            ConsoleMode::Tty
        );
        assert_eq!(
            ConsoleConfig::parse("--serial", "off").unwrap().mode,
            ConsoleMode::Off
        );
        let f = ConsoleConfig::parse("--serial", "file=/tmp/x").unwrap();
        assert_eq!(f.file.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert!(ConsoleConfig::parse("--serial", "tty,off").is_err());
        assert!(ConsoleConfig::parse("--serial", "file=").is_err());
        assert!(ConsoleConfig::parse("--serial", "pty").is_err());
    }

    fn config() -> VmConfig {
        VmConfig {
            cpus: CpusConfig::new(1, None),
            memory: MemoryConfig {
                size: 512 << 20,
                ..Default::default()
            },
            payload: PayloadConfig {
                kernel: PathBuf::from("/proc/self/exe"),
                initramfs: None,
                cmdline: None,
            },
            serial: ConsoleConfig::off(),
            console: ConsoleConfig::off(),
            numa: None,
        }
    }

    #[test]
    fn validation_names_the_option() {
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.cpus.boot_vcpus = 0;
        assert_eq!(c.validate().unwrap_err().option, "--cpus");
        let mut c = config();
        c.memory.size = 1 << 20;
        assert_eq!(c.validate().unwrap_err().option, "--memory");
        let mut c = config();
        c.payload.kernel = PathBuf::from("/nonexistent/vmlinux");
        let e = c.validate().unwrap_err();
        assert_eq!(e.option, "--kernel");
        assert!(e.reason.contains("/nonexistent/vmlinux"));
        let mut c = config();
        c.payload.kernel = PathBuf::from("/tmp");
        assert_eq!(c.validate().unwrap_err().option, "--kernel");
    }

    /// `vm.info` reports the config: it must have what CH's schemas require (`VmConfig`,
    /// `CpusConfig`, `MemoryConfig`, `MemoryZoneConfig`, `ConsoleConfig`, `NumaConfig`,
    /// `NumaDistance`), with their types, and no nulls (CH leaves unset fields out).
    #[test]
    fn serialized_config_has_what_ch_clients_require() {
        let config: VmConfig = serde_json::from_str(
            r#"{"cpus": {"boot_vcpus": 2}, "payload": {"kernel": "/k"},
                "memory": {"size": 0, "zones": [{"id": "mem0", "size": 1073741824}]},
                "numa": [{"guest_numa_id": 0, "distances": [{"destination": 0, "distance": 10}]}]}"#,
        )
        .unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["cpus"]["max_vcpus"], 2, "{json}");
        use serde_json::Value;
        type Check = fn(&Value) -> bool;
        let (number, string, object): (Check, Check, Check) =
            (Value::is_u64, Value::is_string, Value::is_object);
        let required = [
            ("/payload", object),
            ("/cpus/boot_vcpus", number),
            ("/cpus/max_vcpus", number),
            ("/memory/size", number),
            ("/memory/zones/0/id", string),
            ("/memory/zones/0/size", number),
            ("/serial/mode", string),
            ("/console/mode", string),
            ("/numa/0/guest_numa_id", number),
            ("/numa/0/distances/0/destination", number),
            ("/numa/0/distances/0/distance", number),
        ];
        for (pointer, ok) in required {
            let value = json.pointer(pointer);
            assert!(value.is_some_and(ok), "{pointer}: {value:?} in {json}");
        }
        fn no_nulls(v: &Value) -> bool {
            match v {
                Value::Null => false,
                Value::Array(a) => a.iter().all(no_nulls),
                Value::Object(o) => o.values().all(no_nulls),
                _ => true,
            }
        }
        assert!(no_nulls(&json), "{json}");
        // The command line's config too.
        let cli = serde_json::to_value(config_with_cpus("boot=3")).unwrap();
        assert_eq!(
            cli["cpus"],
            serde_json::json!({"boot_vcpus": 3, "max_vcpus": 3})
        );
    }

    fn config_with_cpus(cpus: &str) -> VmConfig {
        VmConfig {
            cpus: CpusConfig::parse(cpus).unwrap(),
            ..config()
        }
    }

    #[test]
    fn max_vcpus_defaults_to_boot_vcpus_and_must_equal_it() {
        let cpus = |json: &str| serde_json::from_str::<CpusConfig>(json).unwrap();
        assert_eq!(cpus("{}"), CpusConfig::new(1, Some(1)));
        assert_eq!(cpus(r#"{"boot_vcpus": 4}"#).max_vcpus, 4);
        assert_eq!(cpus(r#"{"boot_vcpus": 4, "max_vcpus": null}"#).max_vcpus, 4);
        let c = VmConfig {
            cpus: cpus(r#"{"boot_vcpus": 1, "max_vcpus": 2}"#),
            ..config()
        };
        assert!(c.validate().unwrap_err().reason.contains("max_vcpus"));
        assert!(serde_json::from_str::<CpusConfig>(r#"{"boot": 1}"#).is_err());
    }

    #[test]
    fn json_round_trip_rejects_unknown_fields() {
        let json = serde_json::to_string(&config()).unwrap();
        let back: VmConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config());
        let bad = json.replacen("\"boot_vcpus\"", "\"bogus\":1,\"boot_vcpus\"", 1);
        assert!(serde_json::from_str::<VmConfig>(&bad).is_err());
    }
}
