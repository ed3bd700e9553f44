//! [`MemDriver`]: the guest driver's side of a virtio-mem guest-request queue in a
//! [`TestBed`]'s guest memory: requests posted as two-descriptor chains (request, then a
//! device-writable response buffer), kicks, and answers read back from the used ring. One
//! request in flight at a time, as the Linux driver does; any number of requests in all
//! (ring positions and buffers wrap).

use std::time::Duration;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::driver::TestBed;
use crate::mem::{Request, VirtioMem, QUEUE_SIZE, RESPONSE_SIZE};

/// Where the queue's rings are.
pub const QUEUE_ADDR: u64 = 0x1_0000;
/// Where request and response buffers are.
pub const BUF_ADDR: u64 = 0x10_0000;
/// Request buffers before they are reused.
const BUFFERS: u16 = 1024;
/// The MSI-X vector the driver gives the configuration-change interrupt.
pub const CONFIG_VECTOR: u16 = 0;
/// The MSI-X vector the driver gives the queue.
pub const QUEUE_VECTOR: u16 = 1;
/// How long [`MemDriver::send`] waits for an answer.
pub const WAIT: Duration = Duration::from_secs(5);

/// See the module doc.
pub struct MemDriver<'a> {
    mem: &'a GuestMemoryMmap,
    /// The queue's rings.
    pub queue: MockSplitQueue<'a, GuestMemoryMmap>,
    /// Requests posted so far.
    pub posted: u16,
}

impl<'a> MemDriver<'a> {
    /// A driver with empty rings at [`QUEUE_ADDR`].
    pub fn new(mem: &'a GuestMemoryMmap) -> Self {
        MemDriver {
            mem,
            queue: MockSplitQueue::create(mem, GuestAddress(QUEUE_ADDR), QUEUE_SIZE),
            posted: 0,
        }
    }

    /// Descriptor table, available ring and used ring addresses, for queue setup.
    pub fn rings(&self) -> [u64; 3] {
        [
            self.queue.desc_table_addr().0,
            self.queue.avail_addr().0,
            self.queue.used_addr().0,
        ]
    }

    fn request_addr(n: u16) -> u64 {
        BUF_ADDR + u64::from(n % BUFFERS) * 0x100
    }

    fn response_addr(n: u16) -> u64 {
        Self::request_addr(n) + 0x80
    }

    /// Posts `bytes` as request number `posted`, with `resp_len` bytes of response buffer.
    pub fn post_raw(&mut self, bytes: &[u8], resp_len: u32) {
        let n = self.posted;
        let req = Self::request_addr(n);
        self.mem.write_slice(bytes, GuestAddress(req)).unwrap();
        self.mem
            .write_slice(&[0xee; 16], GuestAddress(Self::response_addr(n)))
            .unwrap();
        let head = n.wrapping_mul(2) % QUEUE_SIZE;
        let descs = [
            Descriptor::new(req, bytes.len() as u32, VRING_DESC_F_NEXT as u16, head + 1),
            Descriptor::new(
                Self::response_addr(n),
                resp_len,
                VRING_DESC_F_WRITE as u16,
                0,
            ),
        ];
        for (i, d) in descs.into_iter().enumerate() {
            self.queue
                .desc_table()
                .store(head + i as u16, RawDescriptor::from(d))
                .unwrap();
        }
        // The available ring: the entry, then the index (x86 keeps the stores in order).
        let avail = self.queue.avail_addr();
        let slot = u64::from(n % QUEUE_SIZE);
        self.mem
            .write_obj(head.to_le(), avail.unchecked_add(4 + 2 * slot))
            .unwrap();
        self.mem
            .write_obj(n.wrapping_add(1).to_le(), avail.unchecked_add(2))
            .unwrap();
        self.posted = n.wrapping_add(1);
    }

    /// Posts `request`.
    pub fn post(&mut self, request: Request) {
        self.post_raw(&request.to_bytes(), RESPONSE_SIZE as u32);
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj(self.queue.used_addr().unchecked_add(2))
            .unwrap()
    }

    /// Used ring element `i`: (id, len).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let slot = u64::from(i % QUEUE_SIZE);
        let at = self.queue.used_addr().unchecked_add(4 + 8 * slot);
        let id: u32 = self.mem.read_obj(at).unwrap();
        let len: u32 = self.mem.read_obj(at.unchecked_add(4)).unwrap();
        (id, len)
    }

    /// The response to request `n`.
    pub fn response(&self, n: u16) -> [u8; RESPONSE_SIZE] {
        let mut r = [0u8; RESPONSE_SIZE];
        self.mem
            .read_slice(&mut r, GuestAddress(Self::response_addr(n)))
            .unwrap();
        r
    }

    /// Posts `request`, kicks, waits for the queue interrupt, returns the response.
    pub fn send(&mut self, bed: &TestBed<VirtioMem>, request: Request) -> [u8; RESPONSE_SIZE] {
        let before = bed.msi.count(QUEUE_VECTOR);
        self.post(request);
        bed.kick(0);
        assert!(
            bed.msi.wait_for(QUEUE_VECTOR, before + 1, WAIT),
            "no queue interrupt for {request:?}"
        );
        self.response(self.posted.wrapping_sub(1))
    }
}
