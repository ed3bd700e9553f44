//! Tests of every request-validation rule (docs/virtio-mem.md §1.5, §3), the usable-region policy,
//! resizes, resets, counters and the wire-level entry point.

use super::*;
use crate::mem::config::VIRTIO_MEM_F_ACPI_PXM;
use crate::mem::harness;
use crate::mem::request::{RESPONSE_SIZE, VIRTIO_MEM_REQ_PLUG};
use crate::mem::testutil::{FakeBackend, Rng};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const BS: u64 = 2 * MIB;
const BASE: u64 = 8 * GIB;

/// An 8 GiB region of 2 MiB blocks at 8 GiB, with `requested` requested.
fn device(requested: u64) -> (VirtioMemState, FakeBackend) {
    let g = MemGeometry::new(BASE, 8 * GIB, BS).unwrap();
    let s = VirtioMemState::new(g, None, requested).unwrap();
    (s, FakeBackend::new(BS, g.blocks()))
}

fn plug(first: u64, nb: u16) -> Request {
    Request::Plug {
        addr: BASE + first * BS,
        nb_blocks: nb,
    }
}

fn unplug(first: u64, nb: u16) -> Request {
    Request::Unplug {
        addr: BASE + first * BS,
        nb_blocks: nb,
    }
}

fn state_of(first: u64, nb: u16) -> Request {
    Request::State {
        addr: BASE + first * BS,
        nb_blocks: nb,
    }
}

const ACK: Response = Response::Ack(None);

#[test]
fn geometry_validation() {
    assert_eq!(
        MemGeometry::new(0, 3 * MIB * 2, 3 * MIB),
        Err(SetupError::BlockSizeNotPowerOfTwo(3 * MIB))
    );
    assert_eq!(
        MemGeometry::new(0, 0, 0),
        Err(SetupError::BlockSizeNotPowerOfTwo(0))
    );
    assert_eq!(
        MemGeometry::new(0, 2048, 2048),
        Err(SetupError::BlockSizeTooSmall(2048))
    );
    assert!(matches!(
        MemGeometry::new(MIB, 4 * MIB, BS),
        Err(SetupError::AddrUnaligned { .. })
    ));
    assert!(matches!(
        MemGeometry::new(0, 3 * MIB, BS),
        Err(SetupError::RegionSizeUnaligned { .. })
    ));
    assert!(matches!(
        MemGeometry::new(u64::MAX - BS + 1 - BS, 4 * BS, BS),
        Err(SetupError::RegionOverflow { .. })
    ));
    assert!(matches!(
        MemGeometry::new(0, (MAX_BLOCKS + 1) * 4096, 4096),
        Err(SetupError::TooManyBlocks { .. })
    ));
    assert!(MemGeometry::new(0, MAX_BLOCKS * 4096, 4096).is_ok());
    // An empty region is allowed (docs/virtio-mem.md §1.3: region_size >= 0).
    let g = MemGeometry::new(0, 0, BS).unwrap();
    assert_eq!(g.blocks(), 0);
    // The highest region that fits.
    assert!(MemGeometry::new((u64::MAX - 4 * BS) & !(BS - 1), 4 * BS, BS).is_ok());
    assert_eq!(
        SetupError::AddrUnaligned {
            addr: MIB,
            block_size: BS
        }
        .to_string(),
        "virtio-mem region address 0x100000 is not aligned to the block size 0x200000"
    );
}

#[test]
fn resize_errors_have_api_ready_messages_and_change_nothing() {
    let (mut s, _) = device(GIB);
    let before = s.clone().config();
    let e = s.set_requested_size(GIB + 4096).unwrap_err();
    assert_eq!(
        e.to_string(),
        "requested size 1073745920 bytes is not a multiple of the virtio-mem block size (2097152 bytes)"
    );
    let e = s.set_requested_size(9 * GIB).unwrap_err();
    assert_eq!(
        e,
        ResizeError::ExceedsRegion {
            size: 9 * GIB,
            region_size: 8 * GIB
        }
    );
    assert_eq!(
        e.to_string(),
        "requested size 9663676416 bytes exceeds the virtio-mem region size (8589934592 bytes)"
    );
    assert_eq!(s.config(), before);
    let g = s.geometry();
    assert_eq!(g.check_requested_size(8 * GIB), Ok(()));
    assert_eq!(g.check_requested_size(0), Ok(()));
    assert!(VirtioMemState::new(g, None, 3 * MIB).is_err());
}

#[test]
fn usable_region_policy() {
    let g = MemGeometry::new(BASE, 8 * GIB, BS).unwrap();
    assert_eq!(g.usable_region_for(0), 0);
    assert_eq!(g.usable_region_for(BS), BS + USABLE_REGION_MARGIN);
    assert_eq!(g.usable_region_for(GIB), GIB + 256 * MIB);
    assert_eq!(g.usable_region_for(8 * GIB - 100 * MIB), 8 * GIB, "capped");
    assert_eq!(g.usable_region_for(8 * GIB), 8 * GIB);
    // Rounded up to the block size when the block is larger than the margin.
    let big = MemGeometry::new(0, 16 * GIB, GIB).unwrap();
    assert_eq!(big.usable_region_for(GIB), 2 * GIB);
    // A region smaller than the margin: the whole region.
    let small = MemGeometry::new(0, 64 * MIB, BS).unwrap();
    assert_eq!(small.usable_region_for(BS), 64 * MIB);
}

#[test]
fn usable_region_only_grows_on_resize() {
    let (mut s, mut b) = device(0);
    assert_eq!(s.usable_region_size(), 0);
    assert_eq!(s.set_requested_size(2 * GIB), Ok(true));
    assert_eq!(s.usable_region_size(), 2 * GIB + 256 * MIB);
    // Shrinking requested_size leaves usable_region_size alone (docs/virtio-mem.md §1.3).
    assert_eq!(s.set_requested_size(GIB), Ok(true));
    assert_eq!(s.requested_size(), GIB);
    assert_eq!(s.usable_region_size(), 2 * GIB + 256 * MIB);
    assert_eq!(s.set_requested_size(0), Ok(true));
    assert_eq!(s.usable_region_size(), 2 * GIB + 256 * MIB);
    // Nothing changed: no config interrupt needed.
    assert_eq!(s.set_requested_size(0), Ok(false));
    // A grow within the current usable region changes requested only.
    assert_eq!(s.set_requested_size(GIB), Ok(true));
    assert_eq!(s.usable_region_size(), 2 * GIB + 256 * MIB);
    // UNPLUG_ALL recomputes it from requested_size.
    assert_eq!(s.handle(Request::UnplugAll, &mut b), ACK);
    assert_eq!(s.usable_region_size(), GIB + 256 * MIB);
}

#[test]
fn plug_and_unplug_ack_and_update_plugged_size() {
    let (mut s, mut b) = device(GIB);
    assert_eq!(s.handle(plug(0, 4), &mut b), ACK);
    assert_eq!(s.plugged_size(), 4 * BS);
    assert_eq!(s.handle(plug(10, 1), &mut b), ACK);
    assert_eq!(s.plugged_size(), 5 * BS);
    assert!(b.populated[..4].iter().all(|&p| p) && b.populated[10]);
    assert_eq!(s.handle(unplug(1, 2), &mut b), ACK);
    assert_eq!(s.plugged_size(), 3 * BS);
    assert!(!b.populated[1] && !b.populated[2] && b.populated[0] && b.populated[3]);
    assert_eq!(
        s.plugged_ranges().collect::<Vec<_>>(),
        vec![(0, BS), (3 * BS, BS), (10 * BS, BS)]
    );
    assert_eq!(s.config().plugged_size, 3 * BS);
}

#[test]
fn plug_up_to_requested_then_nack() {
    let (mut s, mut b) = device(4 * BS);
    assert_eq!(s.handle(plug(0, 3), &mut b), ACK);
    // One block over requested_size: NACK, not ERROR (docs/virtio-mem.md §3).
    assert_eq!(s.handle(plug(3, 2), &mut b), Response::Nack);
    assert_eq!(s.plugged_size(), 3 * BS);
    // Exactly requested_size: ACK.
    assert_eq!(s.handle(plug(3, 1), &mut b), ACK);
    assert_eq!(s.handle(plug(4, 1), &mut b), Response::Nack);
    // After a resize the same plug goes through.
    assert_eq!(s.set_requested_size(5 * BS), Ok(true));
    assert_eq!(s.handle(plug(4, 1), &mut b), ACK);
    // requested_size 0: every plug is NACKed.
    s.set_requested_size(0).unwrap();
    assert_eq!(s.handle(plug(20, 1), &mut b), Response::Nack);
}

#[test]
fn invalid_ranges_are_errors() {
    let (mut s, mut b) = device(GIB);
    let usable_blocks = s.usable_region_size() / BS;
    let cases = [
        ("nb_blocks == 0", plug(0, 0)),
        (
            "addr not aligned to the block size",
            Request::Plug {
                addr: BASE + 4096,
                nb_blocks: 1,
            },
        ),
        (
            "addr below the region",
            Request::Plug {
                addr: BASE - BS,
                nb_blocks: 1,
            },
        ),
        (
            "range starting below the region, ending inside",
            Request::Plug {
                addr: BASE - BS,
                nb_blocks: 4,
            },
        ),
        ("range past the usable region", plug(usable_blocks - 1, 2)),
        ("range starting at the usable end", plug(usable_blocks, 1)),
        (
            "range past the region",
            Request::Plug {
                addr: BASE + 8 * GIB,
                nb_blocks: 1,
            },
        ),
        (
            "addr at 0",
            Request::Plug {
                addr: 0,
                nb_blocks: 1,
            },
        ),
        (
            "addr + size overflows",
            Request::Plug {
                addr: u64::MAX - BS + 1,
                nb_blocks: 2,
            },
        ),
    ];
    for (what, req) in cases {
        assert_eq!(s.handle(req, &mut b), Response::Error, "PLUG: {what}");
        let un = match req {
            Request::Plug { addr, nb_blocks } => Request::Unplug { addr, nb_blocks },
            r => r,
        };
        assert_eq!(s.handle(un, &mut b), Response::Error, "UNPLUG: {what}");
        let st = match req {
            Request::Plug { addr, nb_blocks } => Request::State { addr, nb_blocks },
            r => r,
        };
        assert_eq!(s.handle(st, &mut b), Response::Error, "STATE: {what}");
    }
    assert_eq!(s.plugged_size(), 0);
    assert_eq!(b.calls, (0, 0), "no backend call for an invalid request");
    // The last usable block is fine.
    assert_eq!(s.handle(plug(usable_blocks - 1, 1), &mut b), ACK);
}

#[test]
fn overflow_at_the_top_of_the_address_space() {
    let top = (u64::MAX - 64 * BS) & !(BS - 1);
    let g = MemGeometry::new(top, 64 * BS, BS).unwrap();
    let mut s = VirtioMemState::new(g, None, 64 * BS).unwrap();
    let mut b = FakeBackend::new(BS, 64);
    assert_eq!(s.usable_region_size(), 64 * BS);
    let last = Request::Plug {
        addr: top + 63 * BS,
        nb_blocks: 1,
    };
    assert_eq!(s.handle(last, &mut b), ACK);
    let over = Request::Plug {
        addr: top + 63 * BS,
        nb_blocks: u16::MAX,
    };
    assert_eq!(s.handle(over, &mut b), Response::Error);
    let st = Request::State {
        addr: top + 60 * BS,
        nb_blocks: u16::MAX,
    };
    assert_eq!(s.handle(st, &mut b), Response::Error);
}

#[test]
fn plug_of_plugged_blocks_is_an_error_even_past_requested() {
    let (mut s, mut b) = device(4 * BS);
    assert_eq!(s.handle(plug(2, 2), &mut b), ACK);
    assert_eq!(s.handle(plug(2, 2), &mut b), Response::Error, "all plugged");
    assert_eq!(
        s.handle(plug(0, 3), &mut b),
        Response::Error,
        "partly plugged"
    );
    // Partly plugged and past requested_size: the state rule wins.
    assert_eq!(s.handle(plug(3, 4), &mut b), Response::Error);
    assert_eq!(s.plugged_size(), 2 * BS);
}

#[test]
fn unplug_of_unplugged_blocks_is_an_error_never_a_nack() {
    let (mut s, mut b) = device(GIB);
    assert_eq!(
        s.handle(unplug(0, 1), &mut b),
        Response::Error,
        "none plugged"
    );
    assert_eq!(s.handle(plug(0, 4), &mut b), ACK);
    assert_eq!(s.handle(unplug(2, 4), &mut b), Response::Error, "mixed");
    assert_eq!(s.plugged_size(), 4 * BS);
    // Unplug is never NACKed for size reasons (docs/virtio-mem.md §1.5), even with
    // plugged_size > requested_size, or requested_size 0.
    s.set_requested_size(0).unwrap();
    assert_eq!(s.handle(unplug(0, 2), &mut b), ACK);
    assert_eq!(s.handle(unplug(2, 2), &mut b), ACK);
    assert_eq!(s.plugged_size(), 0);
}

#[test]
fn state_reports_plugged_unplugged_mixed() {
    let (mut s, mut b) = device(GIB);
    let st = |s: &mut VirtioMemState, b: &mut FakeBackend, f, n| s.handle(state_of(f, n), b);
    assert_eq!(
        st(&mut s, &mut b, 0, 8),
        Response::Ack(Some(BlockState::Unplugged))
    );
    s.handle(plug(2, 3), &mut b);
    assert_eq!(
        st(&mut s, &mut b, 2, 3),
        Response::Ack(Some(BlockState::Plugged))
    );
    assert_eq!(
        st(&mut s, &mut b, 0, 8),
        Response::Ack(Some(BlockState::Mixed))
    );
    assert_eq!(
        st(&mut s, &mut b, 4, 2),
        Response::Ack(Some(BlockState::Mixed))
    );
    assert_eq!(
        st(&mut s, &mut b, 5, 100),
        Response::Ack(Some(BlockState::Unplugged))
    );
    // The whole usable region in one request is valid when it fits in nb_blocks.
    let n = (s.usable_region_size() / BS) as u16;
    assert_eq!(
        st(&mut s, &mut b, 0, n),
        Response::Ack(Some(BlockState::Mixed))
    );
    assert_eq!(st(&mut s, &mut b, 0, n + 1), Response::Error);
}

#[test]
fn unplug_all_unplugs_everything_and_recomputes_usable() {
    let (mut s, mut b) = device(2 * GIB);
    s.handle(plug(0, 3), &mut b);
    s.handle(plug(5, 1), &mut b);
    s.handle(plug(63, 2), &mut b);
    s.set_requested_size(0).unwrap();
    assert_eq!(s.handle(Request::UnplugAll, &mut b), ACK);
    assert_eq!(s.plugged_size(), 0);
    assert!(b.populated.iter().all(|&p| !p));
    assert_eq!(b.calls.1, 3, "one discard per plugged run");
    // requested_size 0: usable drops to 0 (QEMU's rule, docs/virtio-mem.md §1.8).
    assert_eq!(s.usable_region_size(), 0);
    // Nothing plugged: still ACK.
    assert_eq!(s.handle(Request::UnplugAll, &mut b), ACK);
    // UNPLUG_ALL ignores addr and nb_blocks.
    let mut wire = plug(0, 1).to_bytes();
    wire[0] = 2;
    let mut resp = [0u8; RESPONSE_SIZE];
    assert_eq!(s.process(&wire, &mut resp, &mut b), Ok(ACK));
}

#[test]
fn busy_answers_plug_unplug_and_unplug_all_but_not_state() {
    let (mut s, mut b) = device(GIB);
    assert!(!s.is_busy());
    s.handle(plug(0, 2), &mut b);
    s.set_busy(true);
    assert!(s.is_busy());
    assert_eq!(s.handle(plug(4, 1), &mut b), Response::Busy);
    assert_eq!(s.handle(unplug(0, 1), &mut b), Response::Busy);
    assert_eq!(s.handle(Request::UnplugAll, &mut b), Response::Busy);
    assert_eq!(
        s.handle(state_of(0, 2), &mut b),
        Response::Ack(Some(BlockState::Plugged))
    );
    // Invalid requests are still errors, and NACK still comes before BUSY.
    assert_eq!(s.handle(plug(0, 0), &mut b), Response::Error);
    assert_eq!(s.handle(plug(0, 1), &mut b), Response::Error);
    assert_eq!(s.handle(plug(2, 600), &mut b), Response::Nack);
    assert_eq!(s.plugged_size(), 2 * BS);
    s.set_busy(false);
    assert_eq!(s.handle(plug(4, 1), &mut b), ACK);
}

#[test]
fn failed_plug_is_rolled_back_and_answered_busy() {
    let (mut s, mut b) = device(GIB);
    b.fail_plug = true;
    assert_eq!(s.handle(plug(0, 8), &mut b), Response::Busy);
    assert_eq!(s.plugged_size(), 0, "bitmap untouched");
    assert!(
        b.populated.iter().all(|&p| !p),
        "partial population discarded again"
    );
    assert_eq!(s.counters().backend_errors, 1);
    b.fail_plug = false;
    assert_eq!(s.handle(plug(0, 8), &mut b), ACK);
}

#[test]
fn failed_discard_keeps_blocks_plugged_and_answers_busy() {
    let (mut s, mut b) = device(GIB);
    s.handle(plug(0, 8), &mut b);
    b.fail_unplug = true;
    assert_eq!(s.handle(unplug(0, 4), &mut b), Response::Busy);
    assert_eq!(s.plugged_size(), 8 * BS);
    assert_eq!(s.handle(Request::UnplugAll, &mut b), Response::Busy);
    assert_eq!(s.plugged_size(), 8 * BS);
    b.fail_unplug = false;
    assert_eq!(s.handle(unplug(0, 4), &mut b), ACK);
    assert_eq!(s.handle(Request::UnplugAll, &mut b), ACK);
    assert_eq!(s.counters().backend_errors, 2);
}

#[test]
fn system_reset_unplugs_everything() {
    let (mut s, mut b) = device(2 * GIB);
    s.handle(plug(0, 100), &mut b);
    s.set_requested_size(GIB).unwrap();
    assert_eq!(s.usable_region_size(), 2 * GIB + 256 * MIB);
    assert!(s.system_reset(&mut b).is_ok());
    assert_eq!(s.plugged_size(), 0);
    assert_eq!(
        s.requested_size(),
        GIB,
        "the host's target survives a reboot"
    );
    assert_eq!(s.usable_region_size(), GIB + 256 * MIB);
    assert!(b.populated.iter().all(|&p| !p));
    // The guest plugs back after reboot.
    assert_eq!(s.handle(plug(0, 512), &mut b), ACK);
    // A failing discard still resets the block state.
    b.fail_unplug = true;
    assert!(s.system_reset(&mut b).is_err());
    assert_eq!(s.plugged_size(), 0);
}

#[test]
fn config_and_features() {
    let g = MemGeometry::new(BASE, 8 * GIB, BS).unwrap();
    let s = VirtioMemState::new(g, Some(3), GIB).unwrap();
    assert_eq!(s.node_id(), Some(3));
    assert_ne!(s.features() & (1 << VIRTIO_MEM_F_ACPI_PXM), 0);
    let c = s.config();
    assert_eq!(c.block_size, BS);
    assert_eq!(c.node_id, 3);
    assert_eq!(c.addr, BASE);
    assert_eq!(c.region_size, 8 * GIB);
    assert_eq!(c.usable_region_size, GIB + 256 * MIB);
    assert_eq!(c.plugged_size, 0);
    assert_eq!(c.requested_size, GIB);
    let (s, _) = device(0);
    assert_eq!(s.features() & (1 << VIRTIO_MEM_F_ACPI_PXM), 0);
    assert_eq!(s.config().node_id, 0);
}

#[test]
fn counters_count_requests_and_responses() {
    let (mut s, mut b) = device(4 * BS);
    s.handle(plug(0, 4), &mut b); // ACK
    s.handle(plug(4, 1), &mut b); // NACK
    s.handle(plug(0, 0), &mut b); // ERROR
    s.handle(unplug(0, 1), &mut b); // ACK
    s.handle(state_of(0, 1), &mut b); // ACK
    s.set_busy(true);
    s.handle(Request::UnplugAll, &mut b); // BUSY
    let mut resp = [0u8; RESPONSE_SIZE];
    let _ = s.process(&[0u8; 3], &mut resp, &mut b); // malformed
    let c = s.counters();
    assert_eq!(
        c,
        Counters {
            plug: 3,
            unplug: 1,
            unplug_all: 1,
            state: 1,
            malformed: 1,
            ack: 3,
            nack: 1,
            busy: 1,
            error: 1,
            backend_errors: 0,
            discard_errors: 0,
            notifications: 0,
        }
    );
}

#[test]
fn process_reads_and_writes_the_wire_format() {
    let (mut s, mut b) = device(GIB);
    let mut resp = [0xffu8; 16];
    assert_eq!(
        s.process(&plug(0, 2).to_bytes(), &mut resp, &mut b),
        Ok(ACK)
    );
    assert_eq!(resp[..RESPONSE_SIZE], [0; RESPONSE_SIZE]);
    assert_eq!(resp[RESPONSE_SIZE..], [0xff; 6], "nothing past 10 bytes");
    let r = s.process(&state_of(0, 4).to_bytes(), &mut resp, &mut b);
    assert_eq!(r, Ok(Response::Ack(Some(BlockState::Mixed))));
    assert_eq!(resp[..RESPONSE_SIZE], [0, 0, 0, 0, 0, 0, 0, 0, 2, 0]);
    let r = s.process(&plug(0, 2).to_bytes(), &mut resp, &mut b);
    assert_eq!(r, Ok(Response::Error));
    assert_eq!(resp[..2], [3, 0]);
}

#[test]
fn malformed_requests_change_nothing() {
    let (mut s, mut b) = device(GIB);
    let good = plug(0, 2).to_bytes();
    let mut resp = [0u8; RESPONSE_SIZE];
    assert_eq!(
        s.process(&good[..23], &mut resp, &mut b),
        Err(RequestError::TooShort(23))
    );
    // A response buffer too short to answer: the plug is not carried out.
    let mut short = [0u8; RESPONSE_SIZE - 1];
    assert_eq!(
        s.process(&good, &mut short, &mut b),
        Err(RequestError::ResponseTooShort(9))
    );
    let mut unknown = good;
    unknown[0] = 7;
    assert_eq!(
        s.process(&unknown, &mut resp, &mut b),
        Err(RequestError::UnknownType(7))
    );
    assert_eq!(s.plugged_size(), 0);
    assert_eq!(b.calls, (0, 0));
    assert_eq!(s.counters().malformed, 3);
    assert_eq!(
        s.counters().plug,
        0,
        "malformed requests are not counted by type"
    );
    assert_eq!(good[0..2], VIRTIO_MEM_REQ_PLUG.to_le_bytes());
}

/// A guest that plugs block by block up to requested_size, as Linux does, then unplugs.
#[test]
fn driver_like_sequence() {
    let (mut s, mut b) = device(0);
    s.set_requested_size(GIB).unwrap();
    let mut next = 0;
    loop {
        match s.handle(plug(next, 64), &mut b) {
            ACK => next += 64,
            Response::Nack => break,
            r => panic!("unexpected {r:?}"),
        }
    }
    assert_eq!(s.plugged_size(), GIB);
    s.set_requested_size(512 * MIB).unwrap();
    while s.plugged_size() > s.requested_size() {
        next -= 64;
        assert_eq!(s.handle(unplug(next, 64), &mut b), ACK);
    }
    assert_eq!(s.plugged_size(), 512 * MIB);
    assert_eq!(s.usable_region_size(), GIB + 256 * MIB);
    harness::check_invariants(&s, &b);
}

/// The fuzz target's body over a few thousand pseudo-random inputs, so CI exercises it.
#[test]
fn fuzz_body_on_pseudo_random_inputs() {
    let mut rng = Rng::new(0xacc0_2d10_4e4d);
    let mut total = Counters::default();
    for i in 0..4000 {
        let len = rng.below(if i % 10 == 0 { 2048 } else { 256 }) as usize;
        let data = rng.bytes(len);
        let c = harness::run(&data);
        total.plug += c.plug;
        total.unplug += c.unplug;
        total.unplug_all += c.unplug_all;
        total.state += c.state;
        total.malformed += c.malformed;
        total.ack += c.ack;
        total.nack += c.nack;
        total.busy += c.busy;
        total.error += c.error;
        total.backend_errors += c.backend_errors;
    }
    // Every path was reached.
    for (name, n) in [
        ("plug", total.plug),
        ("unplug", total.unplug),
        ("unplug_all", total.unplug_all),
        ("state", total.state),
        ("malformed", total.malformed),
        ("ack", total.ack),
        ("nack", total.nack),
        ("busy", total.busy),
        ("error", total.error),
        ("backend_errors", total.backend_errors),
    ] {
        assert!(n > 0, "no {name} in {total:?}");
    }
    eprintln!("fuzz body coverage: {total:?}");
    // Degenerate inputs.
    harness::run(&[]);
    harness::run(&[0xff; 4096]);
    harness::run(&[0; 4096]);
}

#[test]
fn geometry_reads_back_as_given() {
    let g = MemGeometry::new(BASE, 8 * GIB, BS).unwrap();
    assert_eq!(
        (g.addr(), g.region_size(), g.block_size()),
        (BASE, 8 * GIB, BS)
    );
    let (s, _) = device(GIB);
    assert_eq!(s.addr(), BASE);
    assert_eq!(s.geometry(), g);
}
