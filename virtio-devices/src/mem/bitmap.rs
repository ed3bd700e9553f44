//! A packed bitmap of plugged blocks: bit `i` is set when block `i` of the device region is
//! plugged. The count of set bits is kept in step with every change, so `plugged_size` can be
//! read without a scan (docs/virtio-mem.md §1.3: `plugged_size` "must always match the real block
//! state").

/// A block range that does not lie inside the bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("block range [{first}, {first}+{count}) is outside the bitmap of {len} blocks")]
pub struct OutOfRange {
    /// First block of the range.
    pub first: u64,
    /// Number of blocks in the range.
    pub count: u64,
    /// Number of blocks in the bitmap.
    pub len: u64,
}

/// Words that do not fit a bitmap of the given length (see [`BlockBitmap::from_words`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{words} words cannot hold a bitmap of exactly {len} blocks (bits past the end must be clear)"
)]
pub struct BadWords {
    /// Number of words given.
    pub words: usize,
    /// Number of blocks wanted.
    pub len: u64,
}

/// A packed bitmap of `len` blocks in `u64` words, bit `i % 64` of word `i / 64` for block `i`.
/// Bits past `len` in the last word are always clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockBitmap {
    words: Vec<u64>,
    len: u64,
    count: u64,
}

const BITS: u64 = u64::BITS as u64;

/// The mask of bits `[lo, hi)` of one word, `0 <= lo < hi <= 64`.
fn mask(lo: u64, hi: u64) -> u64 {
    let upper = if hi == BITS {
        u64::MAX
    } else {
        (1u64 << hi) - 1
    };
    upper & !((1u64 << lo) - 1)
}

/// The words that the range `[first, first+count)` touches, each with the mask of the range's
/// bits in it. The caller has checked that the range is inside the bitmap, so every index is
/// below the word count and `first + count` does not overflow.
fn word_masks(first: u64, count: u64) -> impl Iterator<Item = (usize, u64)> {
    let end = first + count;
    let first_word = first / BITS;
    let end_word = end.div_ceil(BITS);
    (first_word..end_word).map(move |w| {
        let base = w * BITS;
        let lo = first.max(base) - base;
        let hi = end.min(base + BITS) - base;
        // Cannot truncate: w < words.len(), which is a usize.
        (w as usize, mask(lo, hi))
    })
}

impl BlockBitmap {
    /// A bitmap of `len` blocks, all clear (unplugged).
    ///
    /// The caller bounds `len`: it allocates `len / 64` words.
    pub fn new(len: u64) -> Self {
        let nwords = usize::try_from(len.div_ceil(BITS)).unwrap_or(usize::MAX);
        BlockBitmap {
            words: vec![0; nwords],
            len,
            count: 0,
        }
    }

    /// Restores a bitmap from [`BlockBitmap::words`] (migration, snapshots).
    pub fn from_words(len: u64, words: Vec<u64>) -> Result<Self, BadWords> {
        let bad = BadWords {
            words: words.len(),
            len,
        };
        if u64::try_from(words.len()).ok() != Some(len.div_ceil(BITS)) {
            return Err(bad);
        }
        let tail = len % BITS;
        if tail != 0 && words.last().is_some_and(|w| w & !mask(0, tail) != 0) {
            return Err(bad);
        }
        let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
        Ok(BlockBitmap { words, len, count })
    }

    /// The bitmap's words, for saving it.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Number of blocks the bitmap covers.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the bitmap covers no block at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of set (plugged) blocks.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether block `idx` is set; false for a block past the end.
    pub fn is_set(&self, idx: u64) -> bool {
        if idx >= self.len {
            return false;
        }
        self.word(idx / BITS) & (1u64 << (idx % BITS)) != 0
    }

    fn word(&self, w: u64) -> u64 {
        usize::try_from(w)
            .ok()
            .and_then(|w| self.words.get(w))
            .copied()
            .unwrap_or(0)
    }

    fn check(&self, first: u64, count: u64) -> Result<(), OutOfRange> {
        match first.checked_add(count) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfRange {
                first,
                count,
                len: self.len,
            }),
        }
    }

    /// Whether every block of `[first, first+count)` is set. False when the range does not lie
    /// inside the bitmap; true for an empty range inside it.
    pub fn all_set(&self, first: u64, count: u64) -> bool {
        self.check(first, count).is_ok()
            && word_masks(first, count).all(|(w, m)| self.words[w] & m == m)
    }

    /// Whether every block of `[first, first+count)` is clear. False when the range does not
    /// lie inside the bitmap; true for an empty range inside it.
    pub fn all_clear(&self, first: u64, count: u64) -> bool {
        self.check(first, count).is_ok()
            && word_masks(first, count).all(|(w, m)| self.words[w] & m == 0)
    }

    /// Sets every block of `[first, first+count)`; returns how many were clear before.
    pub fn set_range(&mut self, first: u64, count: u64) -> Result<u64, OutOfRange> {
        self.check(first, count)?;
        let mut changed = 0u64;
        for (w, m) in word_masks(first, count) {
            changed += u64::from((m & !self.words[w]).count_ones());
            self.words[w] |= m;
        }
        self.count += changed;
        Ok(changed)
    }

    /// Clears every block of `[first, first+count)`; returns how many were set before.
    pub fn clear_range(&mut self, first: u64, count: u64) -> Result<u64, OutOfRange> {
        self.check(first, count)?;
        let mut changed = 0u64;
        for (w, m) in word_masks(first, count) {
            changed += u64::from((m & self.words[w]).count_ones());
            self.words[w] &= !m;
        }
        self.count -= changed;
        Ok(changed)
    }

    /// Clears every block.
    pub fn clear_all(&mut self) {
        self.words.fill(0);
        self.count = 0;
    }

    /// The first set block at or after `from`, if any.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        self.next_with(from, false)
    }

    /// The first clear block at or after `from`, if any.
    pub fn next_clear(&self, from: u64) -> Option<u64> {
        self.next_with(from, true)
    }

    fn next_with(&self, from: u64, clear: bool) -> Option<u64> {
        if from >= self.len {
            return None;
        }
        let mut w = from / BITS;
        let mut m = mask(from % BITS, BITS);
        loop {
            let raw = self.word(w);
            let bits = if clear { !raw } else { raw } & m;
            if bits != 0 {
                let idx = w * BITS + u64::from(bits.trailing_zeros());
                return (idx < self.len).then_some(idx);
            }
            w += 1;
            if w * BITS >= self.len {
                return None;
            }
            m = u64::MAX;
        }
    }

    /// The maximal runs of set blocks, in order, as `(first, count)`.
    pub fn set_runs(&self) -> SetRuns<'_> {
        SetRuns {
            bitmap: self,
            pos: 0,
        }
    }
}

/// Iterator over the maximal runs of set blocks; see [`BlockBitmap::set_runs`].
#[derive(Debug)]
pub struct SetRuns<'a> {
    bitmap: &'a BlockBitmap,
    pos: u64,
}

impl Iterator for SetRuns<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let start = self.bitmap.next_set(self.pos)?;
        let end = self.bitmap.next_clear(start).unwrap_or(self.bitmap.len);
        self.pos = end;
        Some((start, end - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::testutil::Rng;

    /// Checks every query of `b` against the model `m`.
    fn check_against(b: &BlockBitmap, m: &[bool]) {
        assert_eq!(b.len(), m.len() as u64);
        assert_eq!(b.count(), m.iter().filter(|&&x| x).count() as u64);
        assert_eq!(
            b.words()
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>(),
            b.count(),
            "no stray bits past the end"
        );
        for (i, &x) in m.iter().enumerate() {
            assert_eq!(b.is_set(i as u64), x, "block {i}");
        }
        let mut runs = Vec::new();
        let mut i = 0;
        while i < m.len() {
            if m[i] {
                let s = i;
                while i < m.len() && m[i] {
                    i += 1;
                }
                runs.push((s as u64, (i - s) as u64));
            } else {
                i += 1;
            }
        }
        assert_eq!(b.set_runs().collect::<Vec<_>>(), runs);
    }

    #[test]
    fn empty_and_new() {
        let b = BlockBitmap::new(0);
        assert!(b.is_empty());
        assert_eq!(b.count(), 0);
        assert!(b.all_clear(0, 0));
        assert!(b.all_set(0, 0));
        assert!(!b.all_clear(0, 1));
        assert_eq!(b.set_runs().count(), 0);
        assert_eq!(b.next_set(0), None);
        assert_eq!(b.next_clear(0), None);

        let b = BlockBitmap::new(130);
        assert_eq!(b.words().len(), 3);
        assert!(b.all_clear(0, 130));
        assert!(!b.all_set(0, 1));
        assert_eq!(b.next_clear(129), Some(129));
        assert_eq!(b.next_clear(130), None);
    }

    #[test]
    fn word_boundaries() {
        let mut b = BlockBitmap::new(200);
        assert_eq!(b.set_range(63, 2), Ok(2));
        assert!(b.is_set(63) && b.is_set(64) && !b.is_set(62) && !b.is_set(65));
        assert!(b.all_set(63, 2));
        assert!(!b.all_set(62, 2));
        assert!(!b.all_clear(64, 10));
        assert!(b.all_clear(65, 135));
        assert_eq!(b.set_range(0, 200), Ok(198));
        assert_eq!(b.count(), 200);
        assert!(b.all_set(0, 200));
        assert_eq!(b.clear_range(64, 128), Ok(128));
        assert_eq!(b.count(), 72);
        assert_eq!(b.set_runs().collect::<Vec<_>>(), vec![(0, 64), (192, 8)]);
        assert_eq!(b.next_clear(0), Some(64));
        assert_eq!(b.next_set(64), Some(192));
        b.clear_all();
        assert_eq!(b.count(), 0);
        assert!(b.all_clear(0, 200));
    }

    #[test]
    fn out_of_range_is_rejected_without_change() {
        let mut b = BlockBitmap::new(100);
        b.set_range(10, 5).unwrap();
        let before = b.clone();
        let err = OutOfRange {
            first: 99,
            count: 2,
            len: 100,
        };
        assert_eq!(b.set_range(99, 2), Err(err));
        assert_eq!(
            b.clear_range(u64::MAX, 2).unwrap_err().first,
            u64::MAX,
            "overflowing end"
        );
        assert!(b.set_range(u64::MAX - 1, u64::MAX).is_err());
        assert!(
            b.set_range(100, 0).is_ok(),
            "an empty range at the end is in bounds"
        );
        assert!(b.set_range(101, 0).is_err());
        assert_eq!(b, before);
        assert!(!b.all_set(95, 10));
        assert!(!b.all_clear(95, 10));
        assert!(!b.is_set(100));
        assert!(!b.is_set(u64::MAX));
        assert_eq!(b.next_set(u64::MAX), None);
        assert!(err.to_string().contains("outside the bitmap of 100 blocks"));
    }

    #[test]
    fn words_round_trip() {
        let mut b = BlockBitmap::new(70);
        b.set_range(3, 66).unwrap();
        let c = BlockBitmap::from_words(70, b.words().to_vec()).unwrap();
        assert_eq!(c, b);
        assert_eq!(c.count(), 66);
        // Wrong word count.
        assert!(BlockBitmap::from_words(70, vec![0]).is_err());
        assert!(BlockBitmap::from_words(70, vec![0; 3]).is_err());
        // A bit past the end.
        assert!(BlockBitmap::from_words(70, vec![0, 1 << 6]).is_err());
        assert!(BlockBitmap::from_words(70, vec![0, 1 << 5]).is_ok());
        assert!(BlockBitmap::from_words(128, vec![u64::MAX; 2]).is_ok());
        assert!(BlockBitmap::from_words(0, vec![]).is_ok());
    }

    /// Property test: random set/clear ranges and random queries, checked against a
    /// `Vec<bool>` model after every step.
    #[test]
    fn random_ranges_match_vec_bool_model() {
        let mut rng = Rng::new(0x5eed_b17a);
        for len in [1u64, 63, 64, 65, 127, 128, 129, 300, 1000] {
            let mut b = BlockBitmap::new(len);
            let mut m = vec![false; len as usize];
            for _ in 0..400 {
                let first = rng.below(len + 2);
                let count = if rng.below(4) == 0 {
                    rng.below(len + 2)
                } else {
                    rng.below(70)
                };
                let in_bounds = first + count <= len;
                let range = first as usize..(first + count).min(len) as usize;
                let model_all_set = in_bounds && m[range.clone()].iter().all(|&x| x);
                let model_all_clear = in_bounds && m[range.clone()].iter().all(|&x| !x);
                assert_eq!(b.all_set(first, count), model_all_set);
                assert_eq!(b.all_clear(first, count), model_all_clear);
                match rng.below(5) {
                    0 | 1 => {
                        let r = b.set_range(first, count);
                        if in_bounds {
                            let was_clear = m[range.clone()].iter().filter(|&&x| !x).count();
                            assert_eq!(r, Ok(was_clear as u64));
                            m[range].fill(true);
                        } else {
                            assert!(r.is_err());
                        }
                    }
                    2 | 3 => {
                        let r = b.clear_range(first, count);
                        if in_bounds {
                            let was_set = m[range.clone()].iter().filter(|&&x| x).count();
                            assert_eq!(r, Ok(was_set as u64));
                            m[range].fill(false);
                        } else {
                            assert!(r.is_err());
                        }
                    }
                    _ => {
                        let from = rng.below(len + 1);
                        let ns = (from..len).find(|&i| m[i as usize]);
                        let nc = (from..len).find(|&i| !m[i as usize]);
                        assert_eq!(b.next_set(from), ns);
                        assert_eq!(b.next_clear(from), nc);
                    }
                }
                check_against(&b, &m);
            }
        }
    }
}
