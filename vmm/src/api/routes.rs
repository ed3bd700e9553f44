//! The endpoints, and turning an HTTP request into an `ApiAction`. `ROUTES` is the one list
//! of what the server serves; the OpenAPI file is checked against it.

use super::{ApiAction, ApiError};
use crate::config::VmConfig;
use crate::unsupported_fields::strip_neutral_fields;

pub const API_PREFIX: &str = "/api/v1";

/// One endpoint: its HTTP method and its path under `API_PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

const fn route(method: &'static str, path: &'static str) -> Route {
    Route { method, path }
}

/// Every endpoint, with Cloud Hypervisor's methods.
pub const ROUTES: &[Route] = &[
    route("GET", "/vmm.ping"),
    route("PUT", "/vmm.shutdown"),
    route("PUT", "/vm.create"),
    route("PUT", "/vm.boot"),
    route("PUT", "/vm.delete"),
    route("GET", "/vm.info"),
    route("GET", "/vm.counters"),
    route("PUT", "/vm.pause"),
    route("PUT", "/vm.resume"),
    route("PUT", "/vm.shutdown"),
    route("PUT", "/vm.reboot"),
    route("PUT", "/vm.power-button"),
    route("PUT", "/vm.resize"),
    route("PUT", "/vm.resize-zone"),
    route("PUT", "/vm.snapshot"),
    route("PUT", "/vm.restore"),
    route("PUT", "/vm.send-migration"),
    route("PUT", "/vm.receive-migration"),
];

/// Why a request matched no action.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No such path: 404.
    NotFound(String),
    /// The path exists with another method: 405, with the method that is allowed.
    MethodNotAllowed { path: String, allowed: &'static str },
    /// The body is wrong: 400.
    BadRequest(ApiError),
}

/// Maps `method path` and the body to an action.
pub fn parse(method: &str, path: &str, body: &[u8]) -> Result<ApiAction, RouteError> {
    let endpoint = path
        .strip_prefix(API_PREFIX)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| RouteError::NotFound(path.to_string()))?;
    let route = ROUTES
        .iter()
        .find(|r| r.path == endpoint)
        .ok_or_else(|| RouteError::NotFound(path.to_string()))?;
    if route.method != method {
        return Err(RouteError::MethodNotAllowed {
            path: path.to_string(),
            allowed: route.method,
        });
    }
    Ok(match route.path {
        "/vmm.ping" => ApiAction::VmmPing,
        "/vmm.shutdown" => ApiAction::VmmShutdown,
        "/vm.create" => ApiAction::VmCreate(Box::new(
            parse_vm_config(body).map_err(RouteError::BadRequest)?,
        )),
        "/vm.boot" => ApiAction::VmBoot,
        "/vm.delete" => ApiAction::VmDelete,
        "/vm.info" => ApiAction::VmInfo,
        "/vm.counters" => ApiAction::VmCounters,
        "/vm.pause" => ApiAction::VmPause,
        "/vm.resume" => ApiAction::VmResume,
        "/vm.shutdown" => ApiAction::VmShutdown,
        "/vm.reboot" => ApiAction::VmReboot,
        "/vm.power-button" => ApiAction::VmPowerButton,
        "/vm.resize" => {
            ApiAction::VmResize(parse_body("vm.resize", body).map_err(RouteError::BadRequest)?)
        }
        "/vm.resize-zone" => ApiAction::VmResizeZone(
            parse_body("vm.resize-zone", body).map_err(RouteError::BadRequest)?,
        ),
        "/vm.snapshot" => {
            ApiAction::VmSnapshot(parse_body("vm.snapshot", body).map_err(RouteError::BadRequest)?)
        }
        "/vm.restore" => {
            let config: crate::snapshot::request::RestoreConfig =
                parse_body("vm.restore", body).map_err(RouteError::BadRequest)?;
            config
                .check_unsupported()
                .map_err(|e| RouteError::BadRequest(ApiError::bad_request(e)))?;
            ApiAction::VmRestore(Box::new(config))
        }
        "/vm.send-migration" => {
            let config: crate::migration::request::SendMigrationConfig =
                parse_body("vm.send-migration", body).map_err(RouteError::BadRequest)?;
            config.validate().map_err(|e| {
                RouteError::BadRequest(ApiError::bad_request(format!("vm.send-migration: {e}")))
            })?;
            ApiAction::VmSendMigration(Box::new(config))
        }
        "/vm.receive-migration" => {
            let config: crate::migration::request::ReceiveMigrationConfig =
                parse_body("vm.receive-migration", body).map_err(RouteError::BadRequest)?;
            config.validate().map_err(|e| {
                RouteError::BadRequest(ApiError::bad_request(format!("vm.receive-migration: {e}")))
            })?;
            ApiAction::VmReceiveMigration(Box::new(config))
        }
        // Every path of ROUTES has its arm above (`every_route_parses` checks it).
        other => return Err(RouteError::NotFound(other.to_string())),
    })
}

/// A JSON body of type `T`: `missing` when there is none, `invalid: <serde's message>`
/// (unknown field, wrong type) when it does not parse.
fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    missing: &str,
    invalid: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(missing));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{invalid}: {e}")))
}

/// The JSON body of a plain endpoint.
fn parse_body<T: serde::de::DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, ApiError> {
    parse_json(
        body,
        &format!("{endpoint} needs a JSON body"),
        &format!("invalid {endpoint} body"),
    )
}

/// The body of `vm.create`: a `VmConfig` in JSON, in which Cloud Hypervisor's fields that
/// Accordion does not implement are accepted at their neutral values and dropped (see
/// `unsupported_fields`). The VMM thread validates the result as the command line's is
/// (that looks at the payload files, which the `api` thread's seccomp filter does not let
/// it open).
fn parse_vm_config(body: &[u8]) -> Result<VmConfig, ApiError> {
    const INVALID: &str = "invalid VM configuration";
    let mut json: serde_json::Value = parse_json(
        body,
        "vm.create needs the VM configuration as its JSON body",
        INVALID,
    )?;
    strip_neutral_fields(&mut json)
        .map_err(|e| ApiError::bad_request(format!("vm.create: {e}")))?;
    serde_json::from_value(json).map_err(|e| ApiError::bad_request(format!("{INVALID}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(method: &str, path: &str, body: &str) -> RouteError {
        match parse(method, path, body.as_bytes()) {
            Ok(a) => panic!("{method} {path} gave {a:?}"),
            Err(e) => e,
        }
    }

    fn bad_request_message(method: &str, path: &str, body: &str) -> String {
        match err(method, path, body) {
            RouteError::BadRequest(e) => {
                assert_eq!(e.status, 400);
                e.message
            }
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn every_route_maps_to_its_action() {
        // (path, body, what the action must read as): the variant, and the body's values.
        let cases = [
            ("/vmm.ping", "", "VmmPing"),
            ("/vmm.shutdown", "", "VmmShutdown"),
            (
                "/vm.create",
                r#"{"payload":{"kernel":"/proc/self/exe"}}"#,
                "VmCreate(",
            ),
            ("/vm.boot", "", "VmBoot"),
            ("/vm.delete", "", "VmDelete"),
            ("/vm.info", "", "VmInfo"),
            ("/vm.counters", "", "VmCounters"),
            ("/vm.pause", "", "VmPause"),
            ("/vm.resume", "", "VmResume"),
            ("/vm.shutdown", "", "VmShutdown"),
            ("/vm.reboot", "", "VmReboot"),
            ("/vm.power-button", "", "VmPowerButton"),
            (
                "/vm.resize",
                r#"{"desired_ram":1073741824}"#,
                "VmResize(VmResize { desired_ram: Some(1073741824), desired_vcpus: None, desired_balloon: None })",
            ),
            (
                "/vm.resize-zone",
                r#"{"id":"mem0","desired_ram":1073741824}"#,
                r#"VmResizeZone(VmResizeZone { id: "mem0", desired_ram: 1073741824 })"#,
            ),
            (
                "/vm.snapshot",
                r#"{"destination_url":"file:///tmp/s"}"#,
                r#"VmSnapshot(VmSnapshotConfig { destination_url: "file:///tmp/s" })"#,
            ),
            (
                "/vm.restore",
                r#"{"source_url":"file:///tmp/s","resume":true}"#,
                r#"VmRestore(RestoreConfig { source_url: "file:///tmp/s", prefault: false, memory_restore_mode: Copy, resume: true, net_fds: Null, vfio_fds: Null, iommufd_fd: Null, zone_updates: Null })"#,
            ),
            (
                "/vm.send-migration",
                r#"{"destination_url":"unix:/tmp/m","downtime_ms":50}"#,
                r#"VmSendMigration(SendMigrationConfig { destination_url: "unix:/tmp/m", local: false, downtime_ms: 50, timeout_s: 3600, timeout_strategy: Cancel, preserve_source: false, connections: 1, tls_dir: Null, memory_mode: Precopy })"#,
            ),
            (
                "/vm.receive-migration",
                r#"{"receiver_url":"tcp:0.0.0.0:6000"}"#,
                r#"VmReceiveMigration(ReceiveMigrationConfig { receiver_url: "tcp:0.0.0.0:6000", tls_dir: Null, memory_mode: Precopy, vfio_fds: Null, iommufd_fd: Null, zone_updates: Null, net_fds: Null })"#,
            ),
        ];
        assert_eq!(cases.len(), ROUTES.len(), "a route without a case");
        for r in ROUTES {
            let (_, body, expected) = cases
                .iter()
                .find(|(path, _, _)| *path == r.path)
                .unwrap_or_else(|| panic!("no case for {}", r.path));
            let path = format!("{API_PREFIX}{}", r.path);
            let action =
                parse(r.method, &path, body.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            // The action names the endpoint it came from (in messages such as a 409).
            assert_eq!(format!("/{}", action.endpoint()), r.path);
            let action = format!("{action:?}");
            let exact = !expected.ends_with('(');
            assert!(
                if exact {
                    action == *expected
                } else {
                    action.starts_with(expected)
                },
                "{path} gave {action}, not {expected}"
            );
        }
        let ApiAction::VmCreate(config) =
            parse("PUT", "/api/v1/vm.create", cases[2].1.as_bytes()).unwrap()
        else {
            panic!("vm.create")
        };
        assert_eq!(
            config.payload.kernel,
            std::path::PathBuf::from("/proc/self/exe")
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert!(matches!(
            err("GET", "/api/v1/vm.nope", ""),
            RouteError::NotFound(_)
        ));
        assert!(matches!(
            err("GET", "/api/v2/vmm.ping", ""),
            RouteError::NotFound(_)
        ));
        assert!(matches!(err("GET", "/api/v1", ""), RouteError::NotFound(_)));
        assert_eq!(
            err("PUT", "/api/v1/vmm.ping", ""),
            RouteError::MethodNotAllowed {
                path: "/api/v1/vmm.ping".into(),
                allowed: "GET"
            }
        );
        assert!(matches!(
            err("GET", "/api/v1/vm.boot", ""),
            RouteError::MethodNotAllowed { allowed: "PUT", .. }
        ));
    }

    #[test]
    fn create_bodies_are_checked() {
        let m = bad_request_message("PUT", "/api/v1/vm.create", "");
        assert!(m.contains("JSON body"), "{m}");
        let m = bad_request_message("PUT", "/api/v1/vm.create", "{not json");
        assert!(m.contains("invalid VM configuration"), "{m}");
        let m = bad_request_message(
            "PUT",
            "/api/v1/vm.create",
            r#"{"payload":{"kernel":"/proc/self/exe"},"bogus":1}"#,
        );
        assert!(m.contains("unknown field `bogus`"), "{m}");
        let m = bad_request_message(
            "PUT",
            "/api/v1/vm.create",
            r#"{"payload":{"kernel":"/proc/self/exe"},"cpus":{"boot_vcpus":"two"}}"#,
        );
        assert!(m.contains("invalid type"), "{m}");
        // CH's fields Accordion lacks: accepted at their neutral values, else named.
        let m = bad_request_message(
            "PUT",
            "/api/v1/vm.create",
            r#"{"payload":{"kernel":"/k"},"iommu":true}"#,
        );
        assert_eq!(
            m,
            "vm.create: iommu: not supported by Accordion (only false is accepted)"
        );
        let m = bad_request_message(
            "PUT",
            "/api/v1/vm.create",
            r#"{"payload":{"kernel":"/k"},"memory":{"size":1073741824,"mergeable":true}}"#,
        );
        assert!(
            m.starts_with("vm.create: memory.mergeable: not supported"),
            "{m}"
        );
        let m = bad_request_message(
            "PUT",
            "/api/v1/vm.create",
            r#"{"payload":{"kernel":"/k"},"disks":[],"memory":{"size":1,"bogus":false}}"#,
        );
        assert!(m.contains("unknown field `bogus`"), "{m}");
        let full = include_str!("../testdata/ch_vm_create.json");
        match parse("PUT", "/api/v1/vm.create", full.as_bytes()) {
            Ok(ApiAction::VmCreate(config)) => assert_eq!(config.cpus.boot_vcpus, 2),
            other => panic!("{other:?}"),
        }
        // Files are looked at by the VMM thread (Vmm::create), not here.
        assert!(parse(
            "PUT",
            "/api/v1/vm.create",
            br#"{"payload":{"kernel":"/nonexistent/vmlinux"}}"#
        )
        .is_ok());
    }

    #[test]
    fn resize_bodies_are_checked() {
        let m = bad_request_message("PUT", "/api/v1/vm.resize", "");
        assert!(m.contains("needs a JSON body"), "{m}");
        let m = bad_request_message("PUT", "/api/v1/vm.resize", r#"{"desired_ram":"2G"}"#);
        assert!(m.contains("invalid type"), "{m}");
        let m = bad_request_message(
            "PUT",
            "/api/v1/vm.resize-zone",
            r#"{"id":"a","desired_ram":1,"x":0}"#,
        );
        assert!(m.contains("unknown field `x`"), "{m}");
        let m = bad_request_message("PUT", "/api/v1/vm.resize-zone", r#"{"desired_ram":1}"#);
        assert!(m.contains("missing field `id`"), "{m}");
    }
}

/// The OpenAPI description lists exactly the routes the server serves.
#[cfg(test)]
mod openapi {
    use super::ROUTES;
    use std::collections::BTreeSet;

    /// `(METHOD, /path)` pairs of the `paths:` section: paths are indented two spaces and
    /// methods four, as the file is written.
    fn documented() -> BTreeSet<(String, String)> {
        let text = text();
        let mut in_paths = false;
        let mut path = None;
        let mut out = BTreeSet::new();
        for line in text.lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                in_paths = line == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /") {
                path = Some(format!("/{}", p.trim_end_matches(':')));
            } else if let Some(m) = line.strip_prefix("    ") {
                let m = m.trim_end_matches(':');
                if ["get", "put", "post", "patch", "delete"].contains(&m) {
                    let p = path.clone().expect("a method before any path");
                    out.insert((m.to_uppercase(), p));
                }
            }
        }
        out
    }

    fn text() -> String {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api/accordion.yaml");
        std::fs::read_to_string(file).expect("docs/api/accordion.yaml")
    }

    /// Names defined under `components:`, as `#/components/<kind>/<name>` (four spaces
    /// under a two-space `schemas:` or `responses:`).
    fn components(text: &str) -> BTreeSet<String> {
        let mut kind = None;
        let mut out = BTreeSet::new();
        for line in text.lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                kind = None;
            } else if let Some(k) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
                kind = ["schemas:", "responses:"]
                    .contains(&k)
                    .then(|| k.trim_end_matches(':').to_string());
            } else if let (Some(kind), Some(name)) = (&kind, line.strip_prefix("    ")) {
                if let Some(name) = name
                    .strip_suffix(':')
                    .filter(|n| !n.starts_with([' ', '#']))
                {
                    out.insert(format!("#/components/{kind}/{name}"));
                }
            }
        }
        out
    }

    /// Without a YAML parser in the workspace, the file's shape is checked line by line:
    /// what it takes for the YAML to mean what it says. scripts/api-conformance.sh loads it
    /// with a real parser (and Schemathesis).
    #[test]
    fn openapi_file_is_well_formed_yaml_of_the_expected_shape() {
        let text = text();
        let components = components(&text);
        assert!(components.contains("#/components/schemas/VmInfo"));
        assert!(components.contains("#/components/responses/NoVm"));
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l)) {
            assert!(!line.contains('\t'), "line {n}: a tab");
            assert_eq!(line.trim_end(), line, "line {n}: trailing blank");
            let indent = line.len() - line.trim_start().len();
            assert_eq!(indent % 2, 0, "line {n}: odd indentation");
            let line = line.trim_start();
            // YAML 1.1 (PyYAML, which Schemathesis uses) reads bare Off/On/Yes/No as
            // booleans and Null/~ as null: such enum values must be quoted.
            if let Some(list) = line
                .strip_prefix("enum: [")
                .and_then(|l| l.strip_suffix(']'))
            {
                for item in list.split(',').map(str::trim) {
                    let lower = item.to_ascii_lowercase();
                    let boolish =
                        ["off", "on", "yes", "no", "y", "n", "~"].contains(&lower.as_str());
                    let nullish = lower == "null" && item != "null";
                    assert!(
                        !boolish && !nullish,
                        "line {n}: quote the enum value {item}"
                    );
                }
            }
            if let Some(target) = line.strip_prefix("$ref: ") {
                let target = target.trim_matches('"');
                assert!(
                    components.contains(target),
                    "line {n}: {target} is not defined"
                );
            }
            if let Some(id) = line.strip_prefix("operationId: ") {
                ids.push(id.to_string());
            }
        }
        // The conformance script leaves operations out by id: one per route, named as its
        // path.
        let mut expected: Vec<String> = ROUTES.iter().map(|r| r.path[1..].to_string()).collect();
        expected.sort();
        ids.sort();
        assert_eq!(ids, expected, "operationIds");
    }

    #[test]
    fn openapi_file_lists_exactly_the_served_routes() {
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let documented = documented();
        assert!(!documented.is_empty());
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "served but not documented: {missing:?}; documented but not served: {extra:?}"
        );
    }
}
