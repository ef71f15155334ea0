//! The blob table: blob id → in-memory entry, ordered by id.
//!
//! Blob ids are handed out by a counter and never reused, so the live ids of a store are
//! dense runs. The table keeps them in pages of [`PAGE_SLOTS`] slots indexed by the id's low
//! bits, and the pages in a B-tree keyed by the id's high bits. At a million blobs that is
//! about 2,000 pages: their B-tree (a few kilobytes of keys) stays in the CPU caches, so a
//! lookup costs one cache miss for the slot instead of one per level of a million-key
//! B-tree, and a slot is 8 bytes instead of a B-tree entry's ~23. Iteration is still in id
//! order, which checkpoints and mount rely on, and any id (a crafted or repaired
//! `next_blob_id`) works: a sparse id costs one page.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Slots per page (a page of pointers is 4 KiB).
const PAGE_SLOTS: usize = 512;
const SHIFT: u32 = PAGE_SLOTS.trailing_zeros();
const MASK: u64 = PAGE_SLOTS as u64 - 1;

struct Page<T> {
    used: usize,
    slots: Box<[Option<Arc<T>>]>,
}

impl<T> Page<T> {
    fn new() -> Self {
        Page {
            used: 0,
            slots: (0..PAGE_SLOTS).map(|_| None).collect(),
        }
    }
}

/// An id-ordered map from `u64` ids to shared entries, paged for dense ids.
pub(crate) struct IdTable<T> {
    pages: BTreeMap<u64, Page<T>>,
    len: usize,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            pages: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> IdTable<T> {
    /// The entry of `id`.
    pub(crate) fn get(&self, id: u64) -> Option<&Arc<T>> {
        self.pages
            .get(&(id >> SHIFT))
            .and_then(|p| p.slots[(id & MASK) as usize].as_ref())
    }

    /// Whether `id` has an entry.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Sets the entry of `id`; returns the one it replaces.
    pub(crate) fn insert(&mut self, id: u64, e: Arc<T>) -> Option<Arc<T>> {
        let page = self.pages.entry(id >> SHIFT).or_insert_with(Page::new);
        let old = page.slots[(id & MASK) as usize].replace(e);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
        }
        old
    }

    /// Takes the entry of `id` out; a page left empty is freed.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Arc<T>> {
        let key = id >> SHIFT;
        let page = self.pages.get_mut(&key)?;
        let old = page.slots[(id & MASK) as usize].take()?;
        page.used -= 1;
        self.len -= 1;
        if page.used == 0 {
            self.pages.remove(&key);
        }
        Some(old)
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every `(id, entry)` in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Arc<T>)> + '_ {
        self.pages.iter().flat_map(|(&key, p)| {
            p.slots
                .iter()
                .enumerate()
                .filter_map(move |(i, s)| s.as_ref().map(|e| ((key << SHIFT) | i as u64, e)))
        })
    }

    /// Every entry in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<T>> + '_ {
        self.iter().map(|(_, e)| e)
    }
}

impl<T> FromIterator<(u64, Arc<T>)> for IdTable<T> {
    fn from_iter<I: IntoIterator<Item = (u64, Arc<T>)>>(it: I) -> Self {
        let mut t = IdTable::default();
        for (id, e) in it {
            t.insert(id, e);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The table behaves as an ordered map, whatever the ids (dense, sparse, extreme).
        #[test]
        fn matches_an_ordered_map(ops in proptest::collection::vec(
            (0u8..3, prop_oneof![0u64..2000, any::<u64>(), Just(u64::MAX), Just(0u64)]),
            1..400,
        )) {
            let mut t: IdTable<u64> = IdTable::default();
            let mut m: BTreeMap<u64, u64> = BTreeMap::new();
            for (op, id) in ops {
                match op {
                    0 => {
                        let old = t.insert(id, Arc::new(id ^ 7)).map(|e| *e);
                        prop_assert_eq!(old, m.insert(id, id ^ 7));
                    }
                    1 => prop_assert_eq!(t.remove(id).map(|e| *e), m.remove(&id)),
                    _ => {
                        prop_assert_eq!(t.get(id).map(|e| **e), m.get(&id).copied());
                        prop_assert_eq!(t.contains(id), m.contains_key(&id));
                    }
                }
                prop_assert_eq!(t.len(), m.len());
            }
            let got: Vec<(u64, u64)> = t.iter().map(|(id, e)| (id, **e)).collect();
            let want: Vec<(u64, u64)> = m.iter().map(|(&id, &v)| (id, v)).collect();
            prop_assert_eq!(got, want);
            // Empty pages are freed.
            for id in m.keys().copied().collect::<Vec<_>>() {
                t.remove(id);
            }
            prop_assert!(t.pages.is_empty());
        }
    }
}
