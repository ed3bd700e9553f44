//! Helpers shared by the tests and the fuzz harness: a small deterministic PRNG, so that the
//! property-style tests are reproducible without a dependency.

/// SplitMix64: deterministic, fast, good enough to pick test ranges.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, n)`; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A [`BlockBackend`](super::BlockBackend) that models host memory at block granularity:
/// `populated[i]` is true while block `i` is populated. It checks that every call is
/// block-aligned, non-empty and inside the region (panicking otherwise, which the fuzz target
/// reports), and fails on demand.
#[derive(Clone, Debug)]
pub struct FakeBackend {
    block_size: u64,
    /// Which blocks are populated.
    pub populated: Vec<bool>,
    /// While set, `plug` populates the first half of its range, then fails.
    pub fail_plug: bool,
    /// While set, `unplug` fails without discarding anything.
    pub fail_unplug: bool,
    /// Set once any `unplug` has failed; after that a failed rollback may leave blocks
    /// populated that are not plugged.
    pub unplug_failed: bool,
    /// Number of successful `plug` and `unplug` calls.
    pub calls: (u64, u64),
}

impl FakeBackend {
    /// A backend for a region of `blocks` blocks of `block_size` bytes, nothing populated.
    pub fn new(block_size: u64, blocks: u64) -> Self {
        FakeBackend {
            block_size,
            populated: vec![false; blocks as usize],
            fail_plug: false,
            fail_unplug: false,
            unplug_failed: false,
            calls: (0, 0),
        }
    }

    fn blocks(&self, offset: u64, len: u64) -> std::ops::Range<usize> {
        let bs = self.block_size;
        assert!(len > 0, "empty backend call");
        assert_eq!(offset % bs, 0, "unaligned offset {offset:#x}");
        assert_eq!(len % bs, 0, "unaligned length {len:#x}");
        let first = offset / bs;
        let end = first + len / bs;
        assert!(
            end <= self.populated.len() as u64,
            "range [{offset:#x}, +{len:#x}) outside the region"
        );
        first as usize..end as usize
    }
}

impl super::BlockBackend for FakeBackend {
    fn plug(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let r = self.blocks(offset, len);
        if self.fail_plug {
            let half = r.start + r.len() / 2;
            self.populated[r.start..half].fill(true);
            return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        self.populated[r].fill(true);
        self.calls.0 += 1;
        Ok(())
    }

    fn unplug(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        let r = self.blocks(offset, len);
        if self.fail_unplug {
            self.unplug_failed = true;
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.populated[r].fill(false);
        self.calls.1 += 1;
        Ok(())
    }
}
