//! The body of the cargo-fuzz target `api_request` (`vmm/fuzz`) and of the pseudo-random
//! test that runs it on every `cargo test`: the whole API request path from the bytes a
//! client writes to the configuration the VMM keeps. Compiled for tests and with the
//! `fuzzing` feature only.
//!
//! The input ([`Script::decode`]) chooses the server's limits (the default 16 KiB head and
//! 256 KiB body, or small ones so that short inputs reach them), how the client's bytes are
//! split into reads, how much the client lets the server send before reading, and whether
//! the client shuts down its side at the end or stalls until the request timeout. The bytes
//! go through micro_http's real connection state machine over an in-memory stream
//! ([`micro_http::fuzzing`], which checks the HTTP side: well-formed responses in order,
//! `Content-Length` equal to the body, refusals in 4xx/5xx that close the connection...);
//! every complete request goes through [`routes::parse`], and what it yields to a model of
//! the VMM thread with no KVM ([`Model`]): `vm.create` validates the configuration
//! ([`VmConfig::validate`]), `vm.boot` lays its memory out as the VM would
//! ([`place_zones`]), `vm.resize`/`vm.resize-zone` plan against that layout
//! ([`crate::memory::resize`]) and record the new size in the configuration, `vm.info` shows it.
//!
//! Besides "nothing panics", it checks what a client relies on:
//! - routing is deterministic and agrees with [`routes::ROUTES`]: a listed path with its
//!   method routes (or is a 400 for its body), with another method is a 405 naming the
//!   right one, an unlisted path is a 404;
//! - every body the server sends is JSON;
//! - a configuration survives the JSON round trip `vm.info` shows it through;
//! - a configuration that validates lays out sanely: every zone gets exactly its boot RAM,
//!   device regions are block-aligned, disjoint, above boot RAM and below the PCI window;
//! - a planned resize stays within the zone's region, in whole blocks, adds up to the
//!   desired RAM, and leaves a configuration that still validates;
//! - the same bytes in a single read, with a client that reads everything at once, give the
//!   same requests, the same responses and the same end of the connection.
//!
//! Side effects: [`VmConfig::validate`] looks at the payload files (`stat` and `open` for
//! reading, of regular files only); nothing is created or written.

use micro_http::fuzzing::{Conversation, Ending, Transcript, WireResponse};
use micro_http::{Request, Response, ServerConfig, StatusCode};
use serde_json::json;

use super::routes::{self, RouteError, API_PREFIX, ROUTES};
use super::server;
use super::{ApiAction, ApiError, ApiResult};
use crate::config::VmConfig;
use crate::memory::manager::{place_zones, ZoneLayout};
use crate::memory::resize::{check_resize, check_resize_zone, ResizeError};

/// The control byte's bits (see [`Script::decode`]).
pub const SPLITS_MASK: u8 = 0x07;
pub const STALL: u8 = 0x08;
pub const WINDOW_SHIFT: u8 = 4;
pub const SMALL_LIMITS: u8 = 0x40;

/// Client receive windows the control byte chooses from.
const WINDOWS: [Option<usize>; 4] = [None, Some(256), Some(4096), Some(64 * 1024)];

/// A decoded input.
#[derive(Clone, Debug)]
pub struct Script<'a> {
    pub config: ServerConfig,
    /// The client's bytes, split into reads.
    pub reads: Vec<&'a [u8]>,
    pub ending: Ending,
    pub window: Option<usize>,
    /// All the client's bytes.
    pub stream: &'a [u8],
}

impl<'a> Script<'a> {
    /// The input is:
    ///
    /// - a control byte: bits 0-2, how many split points follow (0-7); bit 3, the client
    ///   stalls at the end rather than shutting down its side; bits 4-5, the client's
    ///   receive window (no limit, 256 B, 4 KiB, 64 KiB); bit 6, small limits follow; bit 7
    ///   unused;
    /// - with small limits, two bytes `h` and `b`: at most `16 + 8h` bytes of head and
    ///   `16b` of body;
    /// - per split point, a little-endian u16: the length of the next read (what is left
    ///   if less);
    /// - the client's bytes; what follows the last split point is the last read.
    ///
    /// Missing bytes read as zeros, so every input decodes.
    pub fn decode(data: &'a [u8]) -> Self {
        let mut rest = data;
        let mut byte = || match rest.split_first() {
            Some((&b, tail)) => {
                rest = tail;
                b
            }
            None => 0,
        };
        let control = byte();
        let mut config = ServerConfig::default();
        if control & SMALL_LIMITS != 0 {
            config.max_header_bytes = 16 + 8 * usize::from(byte());
            config.max_body_bytes = 16 * usize::from(byte());
        }
        let lengths: Vec<usize> = (0..control & SPLITS_MASK)
            .map(|_| usize::from(u16::from_le_bytes([byte(), byte()])))
            .collect();
        let stream = rest;
        let mut reads = Vec::with_capacity(lengths.len() + 1);
        let mut left = stream;
        for length in lengths {
            let (read, tail) = left.split_at(length.min(left.len()));
            reads.push(read);
            left = tail;
        }
        reads.push(left);
        Script {
            config,
            reads,
            ending: if control & STALL != 0 {
                Ending::Stall
            } else {
                Ending::Close
            },
            window: WINDOWS[usize::from((control >> WINDOW_SHIFT) & 3)],
            stream,
        }
    }
}

/// Builds an input: the inverse of [`Script::decode`]. `control`'s split count and
/// small-limits bit are set from `splits` and `limits`.
pub fn encode(control: u8, limits: Option<(u8, u8)>, splits: &[u16], stream: &[u8]) -> Vec<u8> {
    assert!(splits.len() <= usize::from(SPLITS_MASK));
    let mut control = control & !(SPLITS_MASK | SMALL_LIMITS);
    control |= splits.len() as u8;
    if limits.is_some() {
        control |= SMALL_LIMITS;
    }
    let mut out = vec![control];
    if let Some((head, body)) = limits {
        out.extend([head, body]);
    }
    for split in splits {
        out.extend(split.to_le_bytes());
    }
    out.extend_from_slice(stream);
    out
}

/// What one run reached, for the test to check that every path was.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests handed to the API handler.
    pub requests: u64,
    /// 404, 405, and 400 for a bad body, from routing.
    pub not_found: u64,
    pub method_not_allowed: u64,
    pub bad_body: u64,
    /// `vm.create` bodies that parsed: valid and invalid configurations.
    pub created: u64,
    pub invalid_config: u64,
    /// `vm.boot`s laid out, and refused for their layout.
    pub booted: u64,
    pub layout_refused: u64,
    /// Resizes planned, and refused.
    pub resized: u64,
    pub resize_refused: u64,
    /// The server's own refusals (400, 408, 413, 431, 501...), 408s among them.
    pub refusals: u64,
    pub timeouts: u64,
    /// `100 Continue` responses.
    pub continues: u64,
}

impl Stats {
    pub fn add(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.not_found += other.not_found;
        self.method_not_allowed += other.method_not_allowed;
        self.bad_body += other.bad_body;
        self.created += other.created;
        self.invalid_config += other.invalid_config;
        self.booted += other.booted;
        self.layout_refused += other.layout_refused;
        self.resized += other.resized;
        self.resize_refused += other.resize_refused;
        self.refusals += other.refusals;
        self.timeouts += other.timeouts;
        self.continues += other.continues;
    }
}

/// Runs one input through the request path, checking everything listed in the module's
/// documentation; panics on any broken rule.
pub fn run(data: &[u8]) -> Stats {
    let script = Script::decode(data);
    let mut model = Model::default();
    let transcript = Conversation {
        config: script.config.clone(),
        reads: script.reads.clone(),
        ending: script.ending,
        window: script.window,
    }
    .converse(&mut |request| model.handle(request));
    check_bodies(&transcript.responses);

    let pieces = script.reads.iter().filter(|read| !read.is_empty()).count();
    if pieces > 1 || script.window.is_some() {
        let mut reference = Model::default();
        let whole = Conversation {
            config: script.config.clone(),
            reads: vec![script.stream],
            ending: script.ending,
            window: None,
        }
        .converse(&mut |request| reference.handle(request));
        let requests = |t: &Transcript| t.exchanges.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            requests(&transcript),
            requests(&whole),
            "the requests depend on how the bytes were split"
        );
        assert_eq!(
            transcript.responses, whole.responses,
            "the responses depend on how the bytes were split"
        );
        assert_eq!(transcript.closed, whole.closed);
    }

    let mut stats = model.stats;
    stats.continues = transcript.continues as u64;
    if let Some(refusal) = transcript.refusal() {
        stats.refusals += 1;
        stats.timeouts += u64::from(refusal.status == StatusCode::REQUEST_TIMEOUT.0);
    }
    stats
}

/// Every body the server sends is JSON (whatever its shape).
fn check_bodies(responses: &[WireResponse]) {
    for response in responses {
        if !response.body.is_empty() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&response.body).is_ok(),
                "a {} response whose body is not JSON: {:?}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
    }
}

/// The API thread's handler and the VMM thread, for a VMM without KVM: what the VMM
/// decides from the request and the configuration alone, as `api::server::handle` and
/// `Vmm::handle` do. A booted VM is its memory layout.
#[derive(Default)]
struct Model {
    config: Option<VmConfig>,
    zones: Option<Vec<ZoneLayout>>,
    stats: Stats,
}

impl Model {
    /// As `api::server::handle`.
    fn handle(&mut self, request: Request) -> Response {
        self.stats.requests += 1;
        let method = request.method.to_string();
        let routed = routes::parse(&method, &request.path, &request.body);
        let again = routes::parse(&method, &request.path, &request.body);
        assert_eq!(
            format!("{routed:?}"),
            format!("{again:?}"),
            "routing {method} {} twice gave different answers",
            request.path
        );
        check_route(&method, &request.path, &routed);
        match routed {
            Ok(action) => server::respond(self.act(action)),
            Err(e) => {
                match &e {
                    RouteError::NotFound(_) => self.stats.not_found += 1,
                    RouteError::MethodNotAllowed { .. } => self.stats.method_not_allowed += 1,
                    RouteError::BadRequest(_) => self.stats.bad_body += 1,
                }
                server::refuse(&method, e)
            }
        }
    }

    /// As `Vmm::handle`.
    fn act(&mut self, action: ApiAction) -> ApiResult {
        match action {
            ApiAction::VmmPing => Ok(Some(json!({"version": env!("CARGO_PKG_VERSION")}))),
            ApiAction::VmmShutdown => {
                self.zones = None;
                Ok(None)
            }
            ApiAction::VmCreate(config) => self.create(*config),
            ApiAction::VmBoot => self.boot(),
            ApiAction::VmDelete => {
                self.config = None;
                self.zones = None;
                Ok(None)
            }
            ApiAction::VmInfo => self.info(),
            ApiAction::VmCounters => self.running().map(|_| Some(json!({}))),
            ApiAction::VmPause
            | ApiAction::VmResume
            | ApiAction::VmReboot
            | ApiAction::VmPowerButton => self.running().map(|_| None),
            ApiAction::VmShutdown => {
                self.running()?;
                self.zones = None;
                Ok(None)
            }
            ApiAction::VmResize(body) => {
                let desired = body.desired_ram;
                self.resize(|zones| check_resize(zones, &body), desired, None)
            }
            ApiAction::VmSnapshot(body) => {
                self.running()?;
                crate::snapshot::url::directory(&body.destination_url, "destination_url")
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                // The model keeps no pause state: a snapshot of it is refused as of a
                // running VM.
                Err(ApiError::conflict("the VM is not paused"))
            }
            ApiAction::VmRestore(body) => {
                if self.config.is_some() {
                    return Err(ApiError::conflict("a VM already exists"));
                }
                crate::snapshot::url::directory(&body.source_url, "source_url")
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                // No snapshot directory exists in the model.
                Err(ApiError::bad_request("cannot read the snapshot"))
            }
            // The model has no peer to migrate to: a send fails to connect, a receive is
            // refused a VM that exists.
            ApiAction::VmSendMigration(_) => {
                self.running()?;
                Err(ApiError::internal("cannot reach the destination"))
            }
            ApiAction::VmReceiveMigration(_) => {
                if self.config.is_some() {
                    return Err(ApiError::conflict("a VM already exists"));
                }
                Err(ApiError::bad_request("cannot listen"))
            }
            ApiAction::VmResizeZone(body) => {
                let id = body.id.clone();
                let desired = Some(body.desired_ram);
                self.resize(
                    |zones| check_resize_zone(zones, &body.id, body.desired_ram),
                    desired,
                    Some(id),
                )
            }
        }
    }

    fn create(&mut self, config: VmConfig) -> ApiResult {
        if self.config.is_some() {
            return Err(ApiError::conflict("a VM already exists"));
        }
        // vm.info gives the configuration back as JSON: it must come back the same.
        let json = serde_json::to_value(&config).expect("a VmConfig serializes");
        let back: VmConfig = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
        assert_eq!(
            back, config,
            "the JSON round trip changed the configuration"
        );
        match config.validate() {
            Ok(()) => {
                self.stats.created += 1;
                self.config = Some(config);
                Ok(None)
            }
            Err(e) => {
                self.stats.invalid_config += 1;
                Err(ApiError::bad_request(format!(
                    "invalid VM configuration: {e}"
                )))
            }
        }
    }

    fn boot(&mut self) -> ApiResult {
        let config = self.config.as_ref().ok_or_else(no_vm)?;
        if self.zones.is_some() {
            return Err(ApiError::conflict("the VM is already booted"));
        }
        match place_zones(config) {
            Ok((zones, mmio64_start)) => {
                check_layout(config, &zones, mmio64_start);
                self.stats.booted += 1;
                self.zones = Some(zones);
                Ok(None)
            }
            Err(e) => {
                self.stats.layout_refused += 1;
                Err(ApiError::bad_request(e.to_string()))
            }
        }
    }

    fn info(&self) -> ApiResult {
        let config = self.config.as_ref().ok_or_else(no_vm)?;
        Ok(Some(json!({
            "config": config,
            "memory": {"boot_ram": config.memory.boot_ram()},
        })))
    }

    fn running(&self) -> Result<&[ZoneLayout], ApiError> {
        match (&self.config, &self.zones) {
            (None, _) => Err(no_vm()),
            (Some(_), None) => Err(ApiError::conflict("the VM is not running")),
            (Some(_), Some(zones)) => Ok(zones),
        }
    }

    /// As `Vmm::resize`, checking the plan; `id` is the zone `vm.resize-zone` names.
    fn resize(
        &mut self,
        check: impl FnOnce(&[ZoneLayout]) -> Result<u64, ResizeError>,
        desired: Option<u64>,
        id: Option<String>,
    ) -> ApiResult {
        let zones = self.running()?;
        let requested = match check(zones) {
            Ok(requested) => requested,
            Err(e) => {
                let e = ApiError::from(e);
                assert_eq!(e.status, 400, "a refused resize: {e:?}");
                self.stats.resize_refused += 1;
                return Err(e);
            }
        };
        let zone = match &id {
            Some(id) => zones.iter().find(|z| &z.id == id),
            None => zones
                .first()
                .filter(|z| zones.len() == 1 && z.id == "default"),
        };
        let zone = zone.unwrap_or_else(|| panic!("resized {id:?} of {zones:?}"));
        let region = zone.region.as_ref().expect("a resized zone has a region");
        assert!(requested <= region.size, "{requested} exceeds {region:?}");
        assert_eq!(requested % region.block_size, 0, "{requested}");
        assert_eq!(Some(zone.boot_size() + requested), desired, "{requested}");
        let zone_id = zone.id.clone();
        self.stats.resized += 1;
        let config = self.config.as_mut().expect("running");
        config.memory.set_hotplugged_size(&zone_id, requested);
        assert_eq!(
            config.validate(),
            Ok(()),
            "a resize left a configuration that does not validate"
        );
        Ok(None)
    }
}

fn no_vm() -> ApiError {
    ApiError::conflict("no VM has been created")
}

/// Routing agrees with [`ROUTES`].
fn check_route(method: &str, path: &str, routed: &Result<ApiAction, RouteError>) {
    let listed = ROUTES
        .iter()
        .find(|r| path.strip_prefix(API_PREFIX) == Some(r.path));
    match (listed, routed) {
        (None, Err(RouteError::NotFound(p))) => assert_eq!(p, path),
        (None, other) => panic!("{method} {path} is not listed, and routes to {other:?}"),
        (Some(route), Err(RouteError::MethodNotAllowed { path: p, allowed })) => {
            assert_ne!(route.method, method);
            assert_eq!((p.as_str(), *allowed), (path, route.method));
        }
        (Some(route), Err(RouteError::BadRequest(e))) => {
            assert_eq!(route.method, method);
            assert_eq!(e.status, 400);
            assert!(
                [
                    "/vm.create",
                    "/vm.resize",
                    "/vm.resize-zone",
                    "/vm.snapshot",
                    "/vm.send-migration",
                    "/vm.receive-migration",
                    "/vm.restore"
                ]
                .contains(&route.path),
                "{path} has no body to refuse"
            );
        }
        (Some(route), Ok(_)) => assert_eq!(route.method, method),
        (Some(_), Err(e)) => panic!("{method} {path} is listed, and routes to {e:?}"),
    }
}

/// A configuration that validated lays out sanely.
fn check_layout(config: &VmConfig, zones: &[ZoneLayout], mmio64_start: u64) {
    let wanted: Vec<(&str, u64, Option<u64>)> = match &config.memory.zones {
        Some(zones) => zones
            .iter()
            .map(|z| (z.id.as_str(), z.size, z.hotplug_size))
            .collect(),
        None => vec![("default", config.memory.size, config.memory.hotplug_size)],
    };
    assert_eq!(zones.len(), wanted.len(), "zones laid out");
    let ram_end = arch::layout::ram_end(config.memory.boot_ram()).expect("boot RAM fits");
    let mut regions: Vec<(u64, u64)> = Vec::new();
    for (zone, (id, size, hotplug)) in zones.iter().zip(wanted) {
        assert_eq!(zone.id, id);
        let boot: u64 = zone.boot_ranges.iter().map(|r| r.1).sum();
        assert_eq!(boot, size, "zone {id}'s boot RAM");
        match (&zone.region, hotplug) {
            (None, None) => {}
            (Some(device), Some(hotplug)) => {
                assert_eq!(device.size, hotplug, "zone {id}'s region");
                assert_eq!(device.addr % device.block_size, 0, "zone {id}'s region");
                assert!(
                    device.addr >= ram_end,
                    "zone {id}'s region overlaps boot RAM"
                );
                let end = device.addr.checked_add(device.size).expect("region end");
                assert!(
                    end <= mmio64_start,
                    "zone {id}'s region overlaps the PCI window"
                );
                assert!(device.hotplugged_size <= device.size);
                regions.push((device.addr, end));
            }
            (device, hotplug) => panic!("zone {id}: device {device:?} for hotplug {hotplug:?}"),
        }
    }
    regions.sort_unstable();
    for pair in regions.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping regions {pair:?}");
    }
}

#[cfg(test)]
mod tests;
