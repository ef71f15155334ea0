//! The in-memory cluster allocator. Rebuilt from the blob records at load; never persisted.

use crate::error::{BsError, Result};

/// A bitmap of clusters in use.
pub(crate) struct Allocator {
    words: Vec<u64>,
    total: u64,
    free: u64,
    hint: u64,
}

impl Allocator {
    pub(crate) fn new(total: u64) -> Self {
        Allocator {
            words: vec![0; total.div_ceil(64) as usize],
            total,
            free: total,
            hint: 0,
        }
    }

    pub(crate) fn free(&self) -> u64 {
        self.free
    }

    pub(crate) fn is_set(&self, c: u64) -> bool {
        self.words[(c / 64) as usize] & (1 << (c % 64)) != 0
    }

    /// Marks `c` used. Returns false if it already was (a cluster owned twice).
    pub(crate) fn claim(&mut self, c: u64) -> bool {
        if c >= self.total || self.is_set(c) {
            return false;
        }
        self.words[(c / 64) as usize] |= 1 << (c % 64);
        self.free -= 1;
        true
    }

    /// Marks `c` free (no-op if it already is).
    pub(crate) fn release(&mut self, c: u64) {
        if c < self.total && self.is_set(c) {
            self.words[(c / 64) as usize] &= !(1 << (c % 64));
            self.free += 1;
            self.hint = self.hint.min(c);
        }
    }

    /// Allocates `n` clusters, first fit from the hint, as `(physical, count)` runs.
    /// All or nothing: on `NoSpace` nothing is claimed.
    pub(crate) fn alloc(&mut self, n: u64) -> Result<Vec<(u64, u64)>> {
        if n > self.free {
            return Err(BsError::NoSpace {
                needed: n,
                free: self.free,
            });
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut left = n;
        let mut c = self.hint;
        let mut scanned = 0u64;
        while left > 0 && scanned < self.total {
            if c >= self.total {
                c = 0;
            }
            if self.words[(c / 64) as usize] == u64::MAX && c % 64 == 0 {
                scanned += 64;
                c += 64;
                continue;
            }
            if !self.is_set(c) {
                self.claim(c);
                match runs.last_mut() {
                    Some((p, k)) if *p + *k == c => *k += 1,
                    _ => runs.push((c, 1)),
                }
                left -= 1;
            }
            c += 1;
            scanned += 1;
        }
        if left > 0 {
            for &(p, k) in &runs {
                for x in p..p + k {
                    self.release(x);
                }
            }
            return Err(BsError::NoSpace {
                needed: n,
                free: self.free,
            });
        }
        self.hint = c.min(self.total);
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_and_nospace() {
        let mut a = Allocator::new(130);
        let r = a.alloc(100).unwrap();
        assert_eq!(r, vec![(0, 100)]);
        assert_eq!(a.free(), 30);
        for c in 10..20 {
            a.release(c);
        }
        let r = a.alloc(35).unwrap();
        assert_eq!(r, vec![(10, 10), (100, 25)]);
        assert!(matches!(
            a.alloc(6),
            Err(BsError::NoSpace { needed: 6, free: 5 })
        ));
        assert_eq!(a.free(), 5);
        assert!(!a.claim(0));
        assert!(a.claim(129));
        assert!(!a.claim(130));
    }
}
