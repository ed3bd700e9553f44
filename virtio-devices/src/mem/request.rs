//! The guest-request wire format: 24-byte requests and 10-byte responses (docs/virtio-mem.md §1.4).

/// Size in bytes of `struct virtio_mem_req` (docs/virtio-mem.md §1.4).
pub const REQUEST_SIZE: usize = 24;
/// Size in bytes of `struct virtio_mem_resp` (docs/virtio-mem.md §1.4).
pub const RESPONSE_SIZE: usize = 10;

/// Request type PLUG (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_REQ_PLUG: u16 = 0;
/// Request type UNPLUG (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_REQ_UNPLUG: u16 = 1;
/// Request type UNPLUG_ALL (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_REQ_UNPLUG_ALL: u16 = 2;
/// Request type STATE (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_REQ_STATE: u16 = 3;

/// Response type ACK (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_RESP_ACK: u16 = 0;
/// Response type NACK (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_RESP_NACK: u16 = 1;
/// Response type BUSY (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_RESP_BUSY: u16 = 2;
/// Response type ERROR (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_RESP_ERROR: u16 = 3;

/// STATE answer: every block of the range is plugged (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_STATE_PLUGGED: u16 = 0;
/// STATE answer: no block of the range is plugged (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_STATE_UNPLUGGED: u16 = 1;
/// STATE answer: some blocks are plugged, some are not (docs/virtio-mem.md §1.4).
pub const VIRTIO_MEM_STATE_MIXED: u16 = 2;

/// A request that cannot be parsed. The specification does not cover these; the reference
/// (§1.5 "Malformed descriptors", §3) makes them a protocol violation: the transport marks
/// the device DEVICE_NEEDS_RESET and logs, it never crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The driver supplied fewer than 24 bytes of request.
    #[error("virtio-mem request is {0} bytes, shorter than the {REQUEST_SIZE} the spec requires")]
    TooShort(usize),
    /// The request type is none of PLUG, UNPLUG, UNPLUG_ALL, STATE.
    #[error("virtio-mem request has unknown type {0}")]
    UnknownType(u16),
    /// The driver supplied fewer than 10 bytes of response buffer.
    #[error("virtio-mem response buffer is {0} bytes, shorter than the {RESPONSE_SIZE} the spec requires")]
    ResponseTooShort(usize),
}

/// The four request types, as counters and logs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// PLUG.
    Plug,
    /// UNPLUG.
    Unplug,
    /// UNPLUG_ALL.
    UnplugAll,
    /// STATE.
    State,
}

/// A parsed request. Padding, and the fields UNPLUG_ALL does not define, are ignored
/// (docs/virtio-mem.md §1.4: "The device MUST ignore all padding, and any data a request type does not
/// define").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Plug `nb_blocks` blocks from guest-physical `addr`.
    Plug {
        /// Guest-physical address of the first block.
        addr: u64,
        /// Number of consecutive blocks.
        nb_blocks: u16,
    },
    /// Unplug `nb_blocks` blocks from guest-physical `addr`.
    Unplug {
        /// Guest-physical address of the first block.
        addr: u64,
        /// Number of consecutive blocks.
        nb_blocks: u16,
    },
    /// Unplug every block.
    UnplugAll,
    /// Report whether `nb_blocks` blocks from `addr` are plugged, unplugged or mixed.
    State {
        /// Guest-physical address of the first block.
        addr: u64,
        /// Number of consecutive blocks.
        nb_blocks: u16,
    },
}

impl Request {
    /// Parses a request from the bytes the driver supplied. Bytes past the 24th are ignored.
    pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
        let Some(b) = bytes.first_chunk::<REQUEST_SIZE>() else {
            return Err(RequestError::TooShort(bytes.len()));
        };
        let req_type = u16::from_le_bytes([b[0], b[1]]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[8..16]);
        let addr = u64::from_le_bytes(a);
        let nb_blocks = u16::from_le_bytes([b[16], b[17]]);
        match req_type {
            VIRTIO_MEM_REQ_PLUG => Ok(Request::Plug { addr, nb_blocks }),
            VIRTIO_MEM_REQ_UNPLUG => Ok(Request::Unplug { addr, nb_blocks }),
            VIRTIO_MEM_REQ_UNPLUG_ALL => Ok(Request::UnplugAll),
            VIRTIO_MEM_REQ_STATE => Ok(Request::State { addr, nb_blocks }),
            t => Err(RequestError::UnknownType(t)),
        }
    }

    /// The request as the driver would write it (padding zero); for tests and tools.
    pub fn to_bytes(&self) -> [u8; REQUEST_SIZE] {
        let (t, addr, nb) = match *self {
            Request::Plug { addr, nb_blocks } => (VIRTIO_MEM_REQ_PLUG, addr, nb_blocks),
            Request::Unplug { addr, nb_blocks } => (VIRTIO_MEM_REQ_UNPLUG, addr, nb_blocks),
            Request::UnplugAll => (VIRTIO_MEM_REQ_UNPLUG_ALL, 0, 0),
            Request::State { addr, nb_blocks } => (VIRTIO_MEM_REQ_STATE, addr, nb_blocks),
        };
        let mut b = [0u8; REQUEST_SIZE];
        b[0..2].copy_from_slice(&t.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[16..18].copy_from_slice(&nb.to_le_bytes());
        b
    }

    /// The request's type.
    pub fn request_type(&self) -> RequestType {
        match self {
            Request::Plug { .. } => RequestType::Plug,
            Request::Unplug { .. } => RequestType::Unplug,
            Request::UnplugAll => RequestType::UnplugAll,
            Request::State { .. } => RequestType::State,
        }
    }
}

/// The state of a block range, as a STATE request reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// Every block is plugged.
    Plugged,
    /// No block is plugged.
    Unplugged,
    /// Some blocks are plugged and some are not.
    Mixed,
}

impl BlockState {
    /// The wire value (docs/virtio-mem.md §1.4).
    pub fn to_wire(self) -> u16 {
        match self {
            BlockState::Plugged => VIRTIO_MEM_STATE_PLUGGED,
            BlockState::Unplugged => VIRTIO_MEM_STATE_UNPLUGGED,
            BlockState::Mixed => VIRTIO_MEM_STATE_MIXED,
        }
    }
}

/// A response. `Ack` carries the block state when it answers a STATE request; the driver reads
/// `state` only then (docs/virtio-mem.md §1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// ACK; `Some(state)` for a STATE request, `None` otherwise.
    Ack(Option<BlockState>),
    /// NACK: the request is refused for now (a PLUG past `requested_size`); Linux retries.
    Nack,
    /// BUSY: the request cannot be processed right now; Linux retries later.
    Busy,
    /// ERROR: the request is invalid. Linux treats it as a driver bug.
    Error,
}

/// The four response types, as counters and logs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseType {
    /// ACK.
    Ack,
    /// NACK.
    Nack,
    /// BUSY.
    Busy,
    /// ERROR.
    Error,
}

impl Response {
    /// The response's type.
    pub fn response_type(&self) -> ResponseType {
        match self {
            Response::Ack(_) => ResponseType::Ack,
            Response::Nack => ResponseType::Nack,
            Response::Busy => ResponseType::Busy,
            Response::Error => ResponseType::Error,
        }
    }

    /// The 10 response bytes: type, 6 bytes of zero padding, state (zero unless this is the
    /// ACK of a STATE request).
    pub fn to_bytes(&self) -> [u8; RESPONSE_SIZE] {
        let (t, state) = match *self {
            Response::Ack(s) => (VIRTIO_MEM_RESP_ACK, s.map_or(0, BlockState::to_wire)),
            Response::Nack => (VIRTIO_MEM_RESP_NACK, 0),
            Response::Busy => (VIRTIO_MEM_RESP_BUSY, 0),
            Response::Error => (VIRTIO_MEM_RESP_ERROR, 0),
        };
        let mut b = [0u8; RESPONSE_SIZE];
        b[0..2].copy_from_slice(&t.to_le_bytes());
        b[8..10].copy_from_slice(&state.to_le_bytes());
        b
    }

    /// Writes the response into the front of `buf`; returns the bytes written (always 10).
    /// A buffer shorter than 10 bytes is a protocol violation and is left untouched.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, RequestError> {
        let len = buf.len();
        let Some(dst) = buf.first_chunk_mut::<RESPONSE_SIZE>() else {
            return Err(RequestError::ResponseTooShort(len));
        };
        *dst = self.to_bytes();
        Ok(RESPONSE_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::testutil::Rng;

    #[test]
    fn parse_each_type() {
        let mut b = [0u8; REQUEST_SIZE];
        b[8..16].copy_from_slice(&0x1_0020_0000u64.to_le_bytes());
        b[16..18].copy_from_slice(&7u16.to_le_bytes());
        let addr = 0x1_0020_0000;
        for (t, want) in [
            (0u16, Request::Plug { addr, nb_blocks: 7 }),
            (1, Request::Unplug { addr, nb_blocks: 7 }),
            (2, Request::UnplugAll),
            (3, Request::State { addr, nb_blocks: 7 }),
        ] {
            b[0..2].copy_from_slice(&t.to_le_bytes());
            assert_eq!(Request::parse(&b), Ok(want));
        }
        assert_eq!(Request::State { addr, nb_blocks: 7 }.to_bytes(), b);
    }

    #[test]
    fn padding_and_trailing_bytes_are_ignored() {
        let req = Request::Plug {
            addr: 0x4000_0000,
            nb_blocks: 65535,
        };
        let mut b = req.to_bytes().to_vec();
        for i in (2..8).chain(18..24) {
            b[i] = 0xff;
        }
        b.extend_from_slice(&[0xee; 40]);
        assert_eq!(Request::parse(&b), Ok(req));
        // UNPLUG_ALL defines no fields: addr and nb_blocks are ignored.
        let mut u = [0xffu8; REQUEST_SIZE];
        u[0..2].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(Request::parse(&u), Ok(Request::UnplugAll));
    }

    #[test]
    fn malformed_requests() {
        for n in 0..REQUEST_SIZE {
            assert_eq!(
                Request::parse(&vec![0u8; n]),
                Err(RequestError::TooShort(n))
            );
        }
        let mut b = [0u8; REQUEST_SIZE];
        for t in [4u16, 5, 0x100, u16::MAX] {
            b[0..2].copy_from_slice(&t.to_le_bytes());
            assert_eq!(Request::parse(&b), Err(RequestError::UnknownType(t)));
        }
        assert!(RequestError::TooShort(3)
            .to_string()
            .contains("3 bytes, shorter than the 24"));
    }

    #[test]
    fn parse_never_panics_on_random_bytes() {
        let mut rng = Rng::new(42);
        for _ in 0..5000 {
            let n = rng.below(40) as usize;
            let b = rng.bytes(n);
            if let Ok(r) = Request::parse(&b) {
                // What parses re-encodes to the same type, addr and nb_blocks.
                assert_eq!(Request::parse(&r.to_bytes()), Ok(r));
            }
        }
    }

    #[test]
    fn response_layout() {
        assert_eq!(
            Response::Ack(None).to_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Response::Nack.to_bytes()[..2], [1, 0]);
        assert_eq!(Response::Busy.to_bytes()[..2], [2, 0]);
        assert_eq!(Response::Error.to_bytes()[..2], [3, 0]);
        let s = |st| Response::Ack(Some(st)).to_bytes();
        assert_eq!(s(BlockState::Plugged)[8..], [0, 0]);
        assert_eq!(s(BlockState::Unplugged)[8..], [1, 0]);
        assert_eq!(s(BlockState::Mixed)[8..], [2, 0]);
        assert!(s(BlockState::Mixed)[2..8].iter().all(|&x| x == 0));
    }

    #[test]
    fn write_to_checks_buffer_length() {
        let r = Response::Ack(Some(BlockState::Mixed));
        let mut big = [0xaau8; 16];
        assert_eq!(r.write_to(&mut big), Ok(RESPONSE_SIZE));
        assert_eq!(big[..RESPONSE_SIZE], r.to_bytes());
        assert_eq!(big[RESPONSE_SIZE..], [0xaa; 6]);
        let mut small = [0xaau8; 9];
        assert_eq!(
            r.write_to(&mut small),
            Err(RequestError::ResponseTooShort(9))
        );
        assert_eq!(small, [0xaa; 9], "a short buffer is left untouched");
    }
}
