//! The fuzz body on pseudo-random and hand-made inputs, and on the seed corpus, so that it
//! stays compiled and correct between fuzzing runs.

use super::*;

/// xorshift64*: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// A full configuration with a virtio-mem region on the default zone.
const FULL_CONFIG: &str = r#"{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":1073741824,"hotplug_method":"VirtioMem","hotplug_size":4294967296,"hotplugged_size":0,"block_size":2097152,"shared":false,"hugepages":false,"prefault":false},"payload":{"kernel":"/proc/self/exe","cmdline":"console=ttyS0"},"serial":{"mode":"Off"},"console":{"mode":"Off"}}"#;

/// Two zones on two NUMA nodes, each with a region.
const ZONES_CONFIG: &str = r#"{"cpus":{"boot_vcpus":2},"memory":{"size":0,"zones":[{"id":"mem0","size":536870912,"hotplug_size":1073741824},{"id":"mem1","size":536870912,"hotplug_size":1073741824,"hotplugged_size":0}]},"payload":{"kernel":"/proc/self/exe"},"numa":[{"guest_numa_id":0,"cpus":[0],"memory_zones":["mem0"]},{"guest_numa_id":1,"cpus":[1],"memory_zones":["mem1"],"distances":[{"destination":0,"distance":20}]}]}"#;

const SMALL_CONFIG: &str = r#"{"payload":{"kernel":"/proc/self/exe"}}"#;

fn config_body(rng: &mut Rng) -> String {
    let template = *rng.pick(&[FULL_CONFIG, ZONES_CONFIG, SMALL_CONFIG]);
    let mut body = template.to_string();
    // Change a number or two: sizes near the rules' edges.
    for _ in 0..rng.below(3) {
        let numbers = [
            "1073741824",
            "4294967296",
            "536870912",
            "2097152",
            "\"boot_vcpus\":2",
        ];
        let from = *rng.pick(&numbers);
        let to = match from {
            "\"boot_vcpus\":2" => format!("\"boot_vcpus\":{}", rng.pick(&[0, 1, 3, 254, 255])),
            _ => rng
                .pick(&[
                    0,
                    1,
                    4096,
                    2 * MIB,
                    3 * MIB,
                    GIB,
                    8 * GIB,
                    1 << 40,
                    1 << 63,
                    u64::MAX,
                    u64::MAX - 4095,
                ])
                .to_string(),
        };
        body = body.replacen(from, &to, 1);
    }
    if rng.chance(5) {
        body = body.replace("/proc/self/exe", "/nonexistent/vmlinux");
    }
    body
}

fn body_for(rng: &mut Rng, path: &str) -> Vec<u8> {
    let body = match path {
        "/vm.create" => config_body(rng),
        "/vm.resize" => {
            let ram = *rng.pick(&[
                GIB,
                2 * GIB,
                3 * GIB,
                GIB + MIB,
                5 * GIB,
                6 * GIB,
                0,
                u64::MAX,
            ]);
            match rng.below(4) {
                0 => format!(r#"{{"desired_ram":{ram},"desired_vcpus":null}}"#),
                1 => format!(r#"{{"desired_ram":{ram},"desired_vcpus":4}}"#),
                _ => format!(r#"{{"desired_ram":{ram}}}"#),
            }
        }
        "/vm.resize-zone" => {
            let ram = *rng.pick(&[512 * MIB, GIB, 1536 * MIB, 2 * GIB, u64::MAX]);
            let id = *rng.pick(&["mem0", "mem1", "default", "nope"]);
            format!(r#"{{"id":"{id}","desired_ram":{ram}}}"#)
        }
        _ => String::new(),
    };
    let mut body = body.into_bytes();
    if rng.chance(10) && !body.is_empty() {
        for _ in 0..=rng.below(3) {
            let at = rng.below(body.len() as u64) as usize;
            body[at] = rng.next() as u8;
        }
    }
    if rng.chance(5) {
        let n = rng.below(64) as usize;
        body = rng.bytes(n);
    }
    body
}

/// One request, mostly well-formed.
fn request(rng: &mut Rng, route: Option<&Route>) -> Vec<u8> {
    let route = route.unwrap_or_else(|| rng.pick(ROUTES));
    let (method, path) = if rng.chance(85) {
        (route.method, format!("{API_PREFIX}{}", route.path))
    } else {
        let method = *rng.pick(&["GET", "PUT", "HEAD", "POST", "DELETE", "get", "OPTIONS"]);
        let path = rng
            .pick(&[
                format!("{API_PREFIX}{}", route.path),
                format!("{API_PREFIX}{}?x=1", route.path),
                "/api/v1/vm.nope".to_string(),
                "/api/v1".to_string(),
                "/".to_string(),
                "*".to_string(),
            ])
            .clone();
        (method, path)
    };
    let version = if rng.chance(90) {
        "HTTP/1.1"
    } else {
        *rng.pick(&["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 extra"])
    };
    let body = body_for(rng, route.path);
    let mut text = format!("{method} {path} {version}\r\nHost: localhost\r\n").into_bytes();
    let mut length = Some(body.len().to_string());
    if rng.chance(10) {
        length = Some(
            rng.pick(&["", "-1", "abc", "99999999999999999999", "300000", "0"])
                .to_string(),
        );
    } else if body.is_empty() && rng.chance(50) {
        length = None;
    }
    if let Some(length) = length {
        text.extend(format!("Content-Length: {length}\r\n").bytes());
        if rng.chance(3) {
            text.extend(format!("content-length: {length}\r\n").bytes());
        }
    }
    if !body.is_empty() {
        text.extend(b"Content-Type: application/json\r\n");
    }
    if rng.chance(10) {
        text.extend(b"Expect: 100-continue\r\n");
    }
    if rng.chance(5) {
        text.extend(b"Connection: close\r\n");
    }
    if rng.chance(5) {
        text.extend(b"Connection: keep-alive\r\n");
    }
    if rng.chance(3) {
        text.extend(b"Transfer-Encoding: chunked\r\n");
    }
    if rng.chance(3) {
        text.extend(format!("X-Long: {}\r\n", "a".repeat(rng.below(20_000) as usize)).bytes());
    }
    if rng.chance(2) {
        text.extend(b"Bad Header\r\n");
    }
    text.extend(b"\r\n");
    text.extend(&body);
    text
}

fn route(path: &str) -> &'static Route {
    ROUTES.iter().find(|r| r.path == path).expect("a route")
}

use super::super::routes::Route;

/// A client's bytes: a lifecycle (create, boot, resizes, info) or a few random requests,
/// possibly cut short or followed by junk.
fn stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(40) {
        for path in ["/vm.create", "/vm.boot"] {
            out.extend(request(rng, Some(route(path))));
        }
        for _ in 0..rng.below(4) {
            let path = *rng.pick(&["/vm.resize", "/vm.resize-zone", "/vm.info", "/vm.delete"]);
            out.extend(request(rng, Some(route(path))));
        }
    } else {
        for _ in 0..=rng.below(3) {
            out.extend(request(rng, None));
        }
    }
    if rng.chance(10) {
        out.truncate(rng.below(out.len() as u64 + 1) as usize);
    }
    if rng.chance(5) {
        let n = rng.below(32) as usize;
        let junk = rng.bytes(n);
        out.extend(junk);
    }
    out
}

fn random_input(rng: &mut Rng) -> Vec<u8> {
    let stream = stream(rng);
    let control = rng.next() as u8;
    let limits = rng.chance(20).then(|| (rng.next() as u8, rng.next() as u8));
    let splits: Vec<u16> = (0..rng.below(8))
        .map(|_| rng.below(stream.len() as u64 + 1) as u16)
        .collect();
    encode(control, limits, &splits, &stream)
}

#[test]
fn fuzz_body_on_pseudo_random_inputs() {
    let mut rng = Rng(0xacc0_2d10_a91e_57a7);
    let mut total = Stats::default();
    for i in 0..3000 {
        let data = if i % 5 == 0 {
            let n = rng.below(512) as usize;
            rng.bytes(n)
        } else {
            random_input(&mut rng)
        };
        total.add(&run(&data));
    }
    eprintln!("fuzz body coverage: {total:?}");
    for (name, n) in [
        ("requests", total.requests),
        ("not_found", total.not_found),
        ("method_not_allowed", total.method_not_allowed),
        ("bad_body", total.bad_body),
        ("created", total.created),
        ("invalid_config", total.invalid_config),
        ("booted", total.booted),
        ("resized", total.resized),
        ("resize_refused", total.resize_refused),
        ("refusals", total.refusals),
        ("timeouts", total.timeouts),
        ("continues", total.continues),
    ] {
        assert!(n > 0, "no {name} in {total:?}");
    }
}

#[test]
fn fuzz_body_on_hand_made_inputs() {
    let lifecycle = [
        format!(
            "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n{FULL_CONFIG}",
            FULL_CONFIG.len()
        ),
        "PUT /api/v1/vm.boot HTTP/1.1\r\n\r\n".into(),
        "PUT /api/v1/vm.resize HTTP/1.1\r\nContent-Length: 26\r\n\r\n{\"desired_ram\":3221225472}"
            .into(),
        "GET /api/v1/vm.info HTTP/1.1\r\n\r\n".into(),
    ]
    .concat();
    let stats = run(&encode(0, None, &[], lifecycle.as_bytes()));
    assert_eq!((stats.created, stats.booted, stats.resized), (1, 1, 1));
    // The same in single bytes (seven splits, the rest in one read), a small window, stalled.
    let splits = [1; 7];
    let stats = run(&encode(
        STALL | (1 << WINDOW_SHIFT),
        None,
        &splits,
        lifecycle.as_bytes(),
    ));
    assert_eq!(stats.resized, 1);
    assert_eq!(stats.timeouts, 0);

    for data in [
        &[][..],
        &[0xff; 4096][..],
        &[0; 4096][..],
        b"\0GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n",
        b"\x08GET /api/v1/vmm.ping HTTP/1.1\r\n\r\nGET",
        b"\x40\x00\x00PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 1\r\n\r\n{",
    ] {
        run(data);
    }
    // Zones adding up past 2^64 bytes (memory::config's zones_adding_up_past_2_pow_64_...):
    // refused by validation, not a panic.
    let half = 1u64 << 63;
    let config = format!(
        r#"{{"memory":{{"size":0,"zones":[{{"id":"a","size":{half}}},{{"id":"b","size":{half}}},{{"id":"c","size":1073741824}}]}},"payload":{{"kernel":"/proc/self/exe"}}}}"#
    );
    let text = format!(
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n{config}\
         PUT /api/v1/vm.boot HTTP/1.1\r\n\r\nGET /api/v1/vm.info HTTP/1.1\r\n\r\n",
        config.len()
    );
    let stats = run(&encode(0, None, &[], text.as_bytes()));
    assert_eq!((stats.requests, stats.invalid_config), (3, 1));

    let big = format!(
        "GET /api/v1/vmm.ping HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(17_000)
    );
    assert_eq!(run(&encode(0, None, &[], big.as_bytes())).refusals, 1);
    let body = format!(
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        256 * 1024 + 1
    );
    assert_eq!(run(&encode(0, None, &[], body.as_bytes())).refusals, 1);
}

#[test]
fn fuzz_body_on_the_seed_corpus() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/api_request");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("the seed corpus") {
        let path = entry.expect("a corpus entry").path();
        // Only the committed seeds, not what a local fuzzing run added.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.starts_with("seed-") {
            continue;
        }
        let data = std::fs::read(&path).expect("a seed");
        let stats = run(&data);
        eprintln!("{name}: {stats:?}");
        assert!(
            stats.requests > 0 || stats.refusals > 0,
            "{name}: {stats:?}"
        );
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} seeds");
}

#[test]
fn decode_inverts_encode() {
    let stream = b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n";
    let data = encode(STALL | (2 << WINDOW_SHIFT), Some((3, 4)), &[5, 100], stream);
    let script = Script::decode(&data);
    assert_eq!(script.stream, stream);
    assert_eq!(script.reads, [&stream[..5], &stream[5..], &[][..]]);
    assert_eq!(script.ending, Ending::Stall);
    assert_eq!(script.window, Some(4096));
    assert_eq!(script.config.max_header_bytes, 16 + 24);
    assert_eq!(script.config.max_body_bytes, 64);
}

/// Replays one input, e.g. a fuzzer artifact, in the debug build (tests run in `vmm/`, so
/// give an absolute path):
/// `REPLAY=$PWD/vmm/fuzz/artifacts/api_request/<file> cargo test -p vmm --lib replay --
/// --ignored --nocapture`.
#[test]
#[ignore = "needs REPLAY=<input file>"]
fn replay() {
    let path = std::env::var("REPLAY").expect("REPLAY=<input file>");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let script = Script::decode(&data);
    let reads: Vec<usize> = script.reads.iter().map(|r| r.len()).collect();
    eprintln!(
        "{:?}, {:?}, window {:?}, reads {reads:?}",
        script.config, script.ending, script.window
    );
    eprintln!("{:?}", String::from_utf8_lossy(script.stream));
    eprintln!("{:?}", run(&data));
}
