//! One descriptor chain of the guest-request queue, handled: the glue between a
//! `virtio_queue::DescriptorChain` and [`VirtioMemState::process`]. Queue-layout independent
//! (split or packed, PCI or MMIO): the transport pops the chain, calls [`handle_chain`], and on
//! `Ok(len)` adds the chain's head to the used ring with `len` and signals the queue.
//!
//! On `Err`, the chain is malformed (docs/virtio-mem.md §1.5 "Malformed descriptors", §3): request
//! shorter than 24 bytes, response buffer shorter than 10 bytes, unknown type, or buffers
//! outside guest memory. The device state is unchanged; the transport logs the error, sets
//! `DEVICE_NEEDS_RESET` in the device status, sends a config-change interrupt, and stops
//! processing the queue until the driver resets the device. Nothing here panics.

use std::io::{self, Read, Write};
use std::ops::Deref;

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::GuestMemory;

use super::request::{RequestError, REQUEST_SIZE, RESPONSE_SIZE};
use super::state::{BlockBackend, VirtioMemState};

/// A descriptor chain the device cannot answer: a protocol violation.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A buffer of the chain is not in guest memory, or the chain's length overflows.
    #[error("virtio-mem descriptor chain is invalid: {0}")]
    Descriptors(virtio_queue::Error),
    /// Reading the request or writing the response failed.
    #[error("virtio-mem descriptor chain could not be accessed: {0}")]
    Access(io::Error),
    /// The request is malformed or the response buffer too short.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Reads the request from the chain's device-readable buffers, handles it, and writes the
/// response into its device-writable buffers. Returns the number of bytes written, for the
/// used ring (always 10). The request may be spread over several descriptors, and so may the
/// response buffer; bytes past the first 24 of request are ignored (docs/virtio-mem.md §1.4).
pub fn handle_chain<M, T, B>(
    state: &mut VirtioMemState,
    mem: &M,
    chain: DescriptorChain<T>,
    backend: &mut B,
) -> Result<u32, ChainError>
where
    M: GuestMemory,
    T: Deref + Clone,
    T::Target: GuestMemory + Sized,
    B: BlockBackend + ?Sized,
{
    let result = (|| {
        let mut reader = Reader::new(mem, chain.clone()).map_err(ChainError::Descriptors)?;
        let mut writer = Writer::new(mem, chain).map_err(ChainError::Descriptors)?;

        let mut request = [0u8; REQUEST_SIZE];
        let mut got = 0;
        while got < REQUEST_SIZE {
            // Guest memory is read with copies, never a system call: no EINTR to retry.
            match reader
                .read(&mut request[got..])
                .map_err(ChainError::Access)?
            {
                0 => break,
                n => got += n,
            }
        }

        // Only as much room as the driver gave, so that `process` refuses a short buffer
        // before it changes anything; on success it has encoded the whole response there.
        let mut response = [0u8; RESPONSE_SIZE];
        let room = writer.available_bytes().min(RESPONSE_SIZE);
        state.process(&request[..got], &mut response[..room], backend)?;
        writer.write_all(&response).map_err(ChainError::Access)?;
        Ok(RESPONSE_SIZE as u32)
    })();
    // Chains that could not be read or written are protocol violations too.
    if let Err(ChainError::Descriptors(_) | ChainError::Access(_)) = &result {
        state.count_malformed();
    }
    result
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    use super::*;
    use crate::mem::request::{Request, Response, REQUEST_SIZE};
    use crate::mem::state::MemGeometry;
    use crate::mem::testutil::FakeBackend;

    const BS: u64 = 2 << 20;
    const BASE: u64 = 1 << 32;
    const BUF: u64 = 0x10_0000;

    fn device() -> (VirtioMemState, FakeBackend) {
        let g = MemGeometry::new(BASE, 64 * BS, BS).unwrap();
        (
            VirtioMemState::new(g, None, 32 * BS).unwrap(),
            FakeBackend::new(BS, 64),
        )
    }

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    /// Builds a chain of `(addr, len, writable)` buffers and runs it through `handle_chain`.
    fn run(
        mem: &GuestMemoryMmap,
        state: &mut VirtioMemState,
        backend: &mut FakeBackend,
        bufs: &[Buf],
    ) -> Result<u32, ChainError> {
        let queue = MockSplitQueue::new(mem, 16);
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .map(|&(addr, len, w)| {
                let flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
                RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
            })
            .collect();
        let chain = queue.build_desc_chain(&descs).unwrap();
        handle_chain(state, mem, chain, backend)
    }

    fn put(mem: &GuestMemoryMmap, addr: u64, req: Request) {
        mem.write_slice(&req.to_bytes(), GuestAddress(addr))
            .unwrap();
    }

    fn response(mem: &GuestMemoryMmap, addr: u64) -> [u8; RESPONSE_SIZE] {
        let mut r = [0u8; RESPONSE_SIZE];
        mem.read_slice(&mut r, GuestAddress(addr)).unwrap();
        r
    }

    /// A buffer of a chain: guest address, length, device-writable.
    type Buf = (u64, u32, bool);

    const PLUG: Request = Request::Plug {
        addr: BASE,
        nb_blocks: 4,
    };

    #[test]
    fn request_and_response_in_one_descriptor_each() {
        let mem = memory();
        let (mut s, mut b) = device();
        put(&mem, BUF, PLUG);
        let r = run(
            &mem,
            &mut s,
            &mut b,
            &[(BUF, 24, false), (BUF + 0x100, 10, true)],
        );
        assert_eq!(r.unwrap(), 10);
        assert_eq!(response(&mem, BUF + 0x100), Response::Ack(None).to_bytes());
        assert_eq!(s.plugged_size(), 4 * BS);
    }

    #[test]
    fn request_and_response_split_over_descriptors() {
        let mem = memory();
        let (mut s, mut b) = device();
        let bytes = PLUG.to_bytes();
        mem.write_slice(&bytes[..7], GuestAddress(BUF)).unwrap();
        mem.write_slice(&bytes[7..], GuestAddress(BUF + 0x40))
            .unwrap();
        let bufs = [
            (BUF, 7, false),
            (BUF + 0x40, 17, false),
            (BUF + 0x100, 3, true),
            (BUF + 0x200, 7, true),
        ];
        assert_eq!(run(&mem, &mut s, &mut b, &bufs).unwrap(), 10);
        assert_eq!(s.plugged_size(), 4 * BS);
        // Re-plugging the same blocks is an ERROR, written across both buffers.
        mem.write_slice(&[0xff; 16], GuestAddress(BUF + 0x100))
            .unwrap();
        assert_eq!(run(&mem, &mut s, &mut b, &bufs).unwrap(), 10);
        let mut r = [0u8; 10];
        mem.read_slice(&mut r[..3], GuestAddress(BUF + 0x100))
            .unwrap();
        mem.read_slice(&mut r[3..], GuestAddress(BUF + 0x200))
            .unwrap();
        assert_eq!(r, Response::Error.to_bytes());
    }

    #[test]
    fn malformed_chains_are_errors_and_change_nothing() {
        let mem = memory();
        let (mut s, mut b) = device();
        put(&mem, BUF, PLUG);
        let resp = (BUF + 0x100, 10, true);
        let cases: [(&str, Vec<Buf>); 5] = [
            ("short request", vec![(BUF, 20, false), resp]),
            ("no request", vec![resp]),
            (
                "short response buffer",
                vec![(BUF, 24, false), (BUF + 0x100, 9, true)],
            ),
            ("no response buffer", vec![(BUF, 24, false)]),
            (
                "buffer outside guest memory",
                vec![(0x1000_0000, 24, false), resp],
            ),
        ];
        for (what, bufs) in cases {
            let r = run(&mem, &mut s, &mut b, &bufs);
            assert!(r.is_err(), "{what}: {r:?}");
            assert_eq!(s.plugged_size(), 0, "{what}");
        }
        assert_eq!(b.calls, (0, 0));
        let mut unknown = PLUG.to_bytes();
        unknown[0] = 9;
        mem.write_slice(&unknown, GuestAddress(BUF)).unwrap();
        let r = run(&mem, &mut s, &mut b, &[(BUF, 24, false), resp]);
        assert!(matches!(
            r,
            Err(ChainError::Request(RequestError::UnknownType(9)))
        ));
        // Every case above, the one outside guest memory included, and the unknown type.
        assert_eq!(s.counters().malformed, 6);
    }

    #[test]
    fn trailing_request_bytes_are_ignored() {
        let mem = memory();
        let (mut s, mut b) = device();
        put(&mem, BUF, PLUG);
        mem.write_slice(&[0xee; 40], GuestAddress(BUF + REQUEST_SIZE as u64))
            .unwrap();
        let r = run(
            &mem,
            &mut s,
            &mut b,
            &[(BUF, 64, false), (BUF + 0x100, 64, true)],
        );
        assert_eq!(r.unwrap(), 10);
        assert_eq!(s.plugged_size(), 4 * BS);
    }
}
