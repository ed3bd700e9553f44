//! The request-path body shared by the `mem_request` cargo-fuzz target and the pseudo-random
//! unit test: arbitrary bytes become a device geometry and a sequence of operations (raw and
//! structured requests, resizes, busy toggles, system resets, backend failures, config reads)
//! run against a [`VirtioMemState`] with a [`FakeBackend`], checking the invariants after every
//! step. Compiled for tests and with the `fuzzing` feature only.

use super::config::CONFIG_SPACE_SIZE;
use super::request::{Request, Response, REQUEST_SIZE};
use super::state::{Counters, MemGeometry, VirtioMemState};
use super::testutil::FakeBackend;

/// Reads the input a byte at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks the state's invariants (docs/virtio-mem.md §1.3) and its agreement with the backend.
pub fn check_invariants(s: &VirtioMemState, backend: &FakeBackend) {
    let bs = s.block_size();
    // Counted from the bits themselves, not from the bitmap's running count that
    // `plugged_size` is defined by.
    let set_bits: u64 = s
        .bitmap()
        .words()
        .iter()
        .map(|w| u64::from(w.count_ones()))
        .sum();
    assert_eq!(s.bitmap().count(), set_bits, "the bitmap's running count");
    assert_eq!(s.plugged_size(), set_bits * bs, "plugged_size");
    assert!(
        s.plugged_size() <= s.usable_region_size(),
        "plugged > usable"
    );
    assert!(
        s.requested_size() <= s.usable_region_size(),
        "requested > usable"
    );
    assert!(s.usable_region_size() <= s.region_size(), "usable > region");
    for size in [s.usable_region_size(), s.requested_size(), s.plugged_size()] {
        assert_eq!(size % bs, 0, "size {size:#x} not a block multiple");
    }
    let usable_blocks = s.usable_region_size() / bs;
    assert_eq!(
        s.bitmap().next_set(usable_blocks),
        None,
        "a block past the usable region is plugged"
    );
    for (i, &populated) in backend.populated.iter().enumerate() {
        let plugged = s.bitmap().is_set(i as u64);
        assert!(!plugged || populated, "plugged block {i} is not populated");
        if !backend.unplug_failed {
            assert_eq!(
                plugged, populated,
                "block {i}: plugged but discarded, or leaked"
            );
        }
    }
    // What the guest reads: the config space bytes (usable_region_size at 32, plugged_size
    // at 40), against the values derived above.
    let c = s.config();
    let field = |offset: u64| {
        let mut b = [0u8; 8];
        c.read(offset, &mut b);
        u64::from_le_bytes(b)
    };
    assert_eq!(field(40), set_bits * bs, "config plugged_size");
    assert_eq!(
        field(32),
        s.usable_region_size(),
        "config usable_region_size"
    );
}

/// Checks what one answered request may have changed.
fn check_answer(req: &Request, resp: Response, before: &VirtioMemState, after: &VirtioMemState) {
    let changed = before.bitmap() != after.bitmap();
    let bs = after.block_size();
    match (req, resp) {
        (Request::Plug { nb_blocks, .. }, Response::Ack(None)) => {
            assert_eq!(
                after.plugged_size(),
                before.plugged_size() + u64::from(*nb_blocks) * bs
            );
            assert!(after.plugged_size() <= after.requested_size());
        }
        (Request::Unplug { nb_blocks, .. }, Response::Ack(None)) => {
            assert_eq!(
                after.plugged_size() + u64::from(*nb_blocks) * bs,
                before.plugged_size()
            );
        }
        (Request::UnplugAll, Response::Ack(None)) => assert_eq!(after.plugged_size(), 0),
        // A BUSY UNPLUG_ALL may have unplugged some runs.
        (Request::UnplugAll, Response::Busy) => {
            assert!(after.plugged_size() <= before.plugged_size())
        }
        (Request::State { .. }, Response::Ack(Some(_))) => assert!(!changed),
        (_, Response::Nack | Response::Busy | Response::Error) => {
            assert!(!changed, "{req:?} answered {resp:?} but changed the bitmap")
        }
        (req, resp) => panic!("{req:?} answered with {resp:?}"),
    }
    if !matches!(req, Request::UnplugAll) {
        assert_eq!(before.usable_region_size(), after.usable_region_size());
    }
    assert_eq!(before.requested_size(), after.requested_size());
}

/// Runs one fuzz input. Panics when an invariant breaks. Returns the device's counters, so
/// that tests can check which paths the inputs reached.
pub fn run(data: &[u8]) -> Counters {
    let mut input = Input(data);
    // Geometry: a small region (1..=256 blocks) so that random ranges hit it, placed at 0,
    // at 4 GiB, or at the very top of the address space (overflow paths).
    let block_size = match input.u8() % 3 {
        0 => 4096,
        1 => 2 << 20,
        _ => 1 << 30,
    };
    let blocks = u64::from(input.u8()) + 1;
    let region_size = blocks * block_size;
    let addr = match input.u8() % 3 {
        0 => 0,
        1 => 4 << 30,
        _ => (u64::MAX - region_size) & !(block_size - 1),
    };
    let Ok(geometry) = MemGeometry::new(addr, region_size, block_size) else {
        panic!("harness geometry rejected: {addr:#x} {region_size:#x} {block_size:#x}");
    };
    let requested = u64::from(input.u8()) % (blocks + 1) * block_size;
    let Ok(mut state) = VirtioMemState::new(geometry, None, requested) else {
        panic!("harness initial size rejected");
    };
    let mut backend = FakeBackend::new(block_size, blocks);
    check_invariants(&state, &backend);

    while !input.is_empty() {
        match input.u8() % 8 {
            0 => {
                // Raw bytes, possibly short, and a response buffer of 0..16 bytes.
                let n = usize::from(input.u8()) % (REQUEST_SIZE + 8);
                let req = input.take(n).to_vec();
                let mut resp = vec![0u8; usize::from(input.u8() % 17)];
                let before = state.clone();
                match state.process(&req, &mut resp, &mut backend) {
                    Ok(r) => {
                        let parsed = Request::parse(&req);
                        assert!(parsed.is_ok());
                        if let Ok(p) = parsed {
                            check_answer(&p, r, &before, &state);
                        }
                        assert_eq!(resp[..10], r.to_bytes());
                    }
                    Err(_) => assert_eq!(before.bitmap(), state.bitmap()),
                }
            }
            1 => {
                // A structured request near the region, so that valid ranges are common.
                let kind = input.u8() % 4;
                let block = u64::from(input.u16() % 300);
                let misalign = if input.u8() % 8 == 0 { 512 } else { 0 };
                let nb_blocks = match input.u8() % 4 {
                    0 => input.u16(),
                    _ => u16::from(input.u8() % 20),
                };
                let addr = addr
                    .wrapping_add(block.wrapping_mul(block_size))
                    .wrapping_add(misalign);
                let req = match kind {
                    0 => Request::Plug { addr, nb_blocks },
                    1 => Request::Unplug { addr, nb_blocks },
                    2 => Request::UnplugAll,
                    _ => Request::State { addr, nb_blocks },
                };
                let before = state.clone();
                let resp = state.handle(req, &mut backend);
                check_answer(&req, resp, &before, &state);
            }
            2 => {
                let size = if input.u8() % 4 == 0 {
                    input.u64()
                } else {
                    u64::from(input.u16()) % (blocks + 2) * block_size
                };
                let before = state.clone();
                match state.set_requested_size(size) {
                    Ok(changed) => {
                        assert_eq!(state.requested_size(), size);
                        assert!(state.usable_region_size() >= before.usable_region_size());
                        assert_eq!(
                            changed,
                            before.requested_size() != size
                                || before.usable_region_size() != state.usable_region_size()
                        );
                    }
                    Err(_) => {
                        assert_eq!(state.requested_size(), before.requested_size());
                        assert_eq!(state.usable_region_size(), before.usable_region_size());
                    }
                }
            }
            3 => state.set_busy(input.u8() & 1 == 1),
            4 => {
                let ok = state.system_reset(&mut backend).is_ok();
                assert_eq!(state.plugged_size(), 0);
                assert_eq!(
                    state.usable_region_size(),
                    geometry.usable_region_for(state.requested_size())
                );
                if ok {
                    // The whole region was discarded: backend and bitmap agree again.
                    backend.unplug_failed = false;
                }
            }
            5 => backend.fail_plug = input.u8() % 4 == 0,
            6 => backend.fail_unplug = input.u8() % 4 == 0,
            _ => {
                let offset = u64::from(input.u8()) % (CONFIG_SPACE_SIZE as u64 + 8);
                let mut buf = vec![0xa5u8; usize::from(input.u8() % 12)];
                let n = state.config().read(offset, &mut buf);
                assert!(buf[n..].iter().all(|&b| b == 0));
            }
        }
        check_invariants(&state, &backend);
    }
    state.counters()
}
