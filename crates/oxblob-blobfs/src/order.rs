//! A directory's entries in name order, for `readdir`.
//!
//! A directory finds a name through its hash table (`ns.rs`); this order exists only so that
//! `readdir` lists entries sorted, resumes after any name in O(log n), and needs no sort per
//! call. A B-tree of every name did that, but at a million entries each insert and remove
//! walked six levels of nodes that were not in the CPU caches: over a microsecond per rename,
//! as much as the directory's hash table and the log write together.
//!
//! [`DirOrder`] is a log-structured merge instead, in three tiers:
//! - `base`: a sorted array of entries, as of the last merge;
//! - `added` and `gone`: entries added, and names of `base` entries removed, since then, in
//!   two B-trees;
//! - `log`: the adds and removes made since a listing last looked, in the order they were
//!   made, unsorted.
//!
//! A create, rename or delete only appends to `log` (no search, memory already in the cache).
//! A listing folds `log` into the trees first (it holds the order's own lock for this; the
//! namespace lock is shared then). Once the changes outnumber a quarter of `base`, a merge
//! rewrites `base` in place: the log is sorted, one pass drops every changed name from
//! `base`, a second merges the new entries in from the back. That is O(n) work every n/4
//! changes, amortized O(1) per change, streamed through memory in order (no cache miss per
//! entry) and with no second copy of the array. A listing walks `base`, `added` and `gone` in
//! step: O(log n) to find its start, O(1) per entry.

use crate::fs::{DirEntry, FileType};
use compact_str::CompactString;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

/// One entry of `base`.
#[derive(Debug, Clone)]
struct Entry {
    name: CompactString,
    ino: u64,
    kind: FileType,
}

/// One change in `log`: `kind` is `None` for a remove.
#[derive(Debug)]
struct Change {
    name: CompactString,
    ino: u64,
    kind: Option<FileType>,
}

/// Changes held before a merge: a quarter of `base`, at least this many.
const MIN_PENDING: usize = 256;

/// A directory's names in order (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct DirOrder {
    base: Vec<Entry>,
    added: BTreeMap<CompactString, (u64, FileType)>,
    gone: BTreeSet<CompactString>,
    log: Vec<Change>,
}

/// Byte order of names (what `str`'s order is), compared without `CompactString`'s
/// generic comparison, which is several times slower in the merge loops.
fn cmp(a: &CompactString, b: &CompactString) -> Ordering {
    a.as_bytes().cmp(b.as_bytes())
}

impl DirOrder {
    /// The order of `entries` (names unique, in any order).
    pub(crate) fn build(mut entries: Vec<(CompactString, u64, FileType)>) -> DirOrder {
        entries.sort_unstable_by(|a, b| cmp(&a.0, &b.0));
        DirOrder {
            base: entries
                .into_iter()
                .map(|(name, ino, kind)| Entry { name, ino, kind })
                .collect(),
            ..DirOrder::default()
        }
    }

    /// Adds `name`, which is not in the directory.
    pub(crate) fn insert(&mut self, name: &str, ino: u64, kind: FileType) {
        self.log.push(Change {
            name: CompactString::from(name),
            ino,
            kind: Some(kind),
        });
        self.maybe_merge();
    }

    /// Removes `name`, which is in the directory.
    pub(crate) fn remove(&mut self, name: &str) {
        self.log.push(Change {
            name: CompactString::from(name),
            ino: 0,
            kind: None,
        });
        self.maybe_merge();
    }

    fn pending(&self) -> usize {
        self.log.len() + self.added.len() + self.gone.len()
    }

    fn maybe_merge(&mut self) {
        if self.pending() > (self.base.len() / 4).max(MIN_PENDING) {
            self.merge();
        }
    }

    /// Moves `log` into `added` and `gone`, change by change.
    fn fold_log(&mut self) {
        for c in std::mem::take(&mut self.log) {
            match c.kind {
                Some(kind) => {
                    self.added.insert(c.name, (c.ino, kind));
                }
                None => {
                    if self.added.remove(&c.name).is_none() {
                        self.gone.insert(c.name);
                    }
                }
            }
        }
    }

    /// Folds every tier into `base`, in place.
    fn merge(&mut self) {
        // The log, sorted by name, keeping each name's last change (a stable sort keeps a
        // name's changes in the order they were made).
        let mut log = std::mem::take(&mut self.log);
        log.sort_by(|a, b| cmp(&a.name, &b.name));
        let mut last: Vec<Change> = Vec::with_capacity(log.len());
        for c in log {
            match last.last_mut() {
                Some(l) if l.name == c.name => *l = c,
                _ => last.push(c),
            }
        }
        // Names to drop from `base`: every name removed (`gone`) or changed since (`last`).
        // A name dropped and then added again is in `new` below.
        let gone = std::mem::take(&mut self.gone);
        let mut drop_names = Vec::with_capacity(gone.len() + last.len());
        let mut g = gone.into_iter().peekable();
        let mut l = last.iter().map(|c| &c.name).peekable();
        loop {
            let take_g = match (g.peek(), l.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) => match cmp(a, b) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        l.next();
                        true
                    }
                },
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_g {
                drop_names.extend(g.next());
            } else {
                drop_names.extend(l.next().cloned());
            }
        }
        if !drop_names.is_empty() {
            let mut k = 0;
            self.base.retain(|e| {
                let n = e.name.as_bytes();
                while k < drop_names.len() && drop_names[k].as_bytes() < n {
                    k += 1;
                }
                !(k < drop_names.len() && drop_names[k].as_bytes() == n)
            });
        }
        // Entries to add: `added` (unless the log changed the name since) and the log's
        // last adds, merged in name order.
        let added = std::mem::take(&mut self.added);
        let mut new: Vec<Entry> = Vec::with_capacity(added.len() + last.len());
        let mut a = added.into_iter().peekable();
        let mut l = last.into_iter().peekable();
        loop {
            let from_added = match (a.peek(), l.peek()) {
                (None, None) => break,
                (Some((x, _)), Some(c)) => match cmp(x, &c.name) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        // The log's change is the later one.
                        a.next();
                        false
                    }
                },
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if from_added {
                if let Some((name, (ino, kind))) = a.next() {
                    new.push(Entry { name, ino, kind });
                }
            } else if let Some(c) = l.next() {
                if let Some(kind) = c.kind {
                    new.push(Entry {
                        name: c.name,
                        ino: c.ino,
                        kind,
                    });
                }
            }
        }
        self.merge_in(new);
    }

    /// Merges `new` (sorted, no name in `base`) into `base`, in place.
    fn merge_in(&mut self, new: Vec<Entry>) {
        let Some(first) = new.first() else { return };
        if self
            .base
            .last()
            .is_none_or(|l| cmp(&first.name, &l.name) == Ordering::Greater)
        {
            // Every new name sorts last (names created in order): append.
            self.base.extend(new);
            return;
        }
        // From the back: the array grows by the new entries, then every slot from the end
        // down takes the larger of the old array's last unplaced entry and the new ones'.
        let old = self.base.len();
        self.base.resize_with(old + new.len(), || Entry {
            name: CompactString::default(),
            ino: 0,
            kind: FileType::File,
        });
        let mut new = new.into_iter().rev().peekable();
        let mut i = old; // old entries [0, i) not yet placed
        let mut w = self.base.len(); // slots [w, len) filled
        while let Some(e) = new.peek() {
            w -= 1;
            if i > 0 && cmp(&self.base[i - 1].name, &e.name) == Ordering::Greater {
                i -= 1;
                self.base.swap(i, w);
            } else if let Some(e) = new.next() {
                self.base[w] = e;
            }
        }
    }

    /// Up to `limit` entries whose names sort after `after` (from the first with `None`), in
    /// name order. Folds the log first: the caller holds the order exclusively.
    pub(crate) fn entries_after(&mut self, after: Option<&str>, limit: usize) -> Vec<DirEntry> {
        if !self.log.is_empty() {
            self.fold_log();
            self.maybe_merge();
        }
        let (start, lo) = match after {
            Some(a) => (
                self.base
                    .partition_point(|e| e.name.as_bytes() <= a.as_bytes()),
                Bound::Excluded(a),
            ),
            None => (0, Bound::Unbounded),
        };
        let mut base = self.base[start..].iter().peekable();
        let mut added = self
            .added
            .range::<str, _>((lo, Bound::Unbounded))
            .peekable();
        let mut gone = self.gone.range::<str, _>((lo, Bound::Unbounded)).peekable();
        let left = (self.base.len() - start + self.added.len()).saturating_sub(self.gone.len());
        let mut out = Vec::with_capacity(limit.min(left));
        while out.len() < limit {
            // The next live entry of `base`: skip the ones named in `gone`.
            let b = loop {
                let Some(e) = base.peek() else { break None };
                let n = e.name.as_bytes();
                while gone.next_if(|g| g.as_bytes() < n).is_some() {}
                if gone.next_if(|g| g.as_bytes() == n).is_some() {
                    base.next();
                    continue;
                }
                break Some(*e);
            };
            let pick = match (b, added.peek()) {
                (None, None) => break,
                (Some(e), Some((n, _))) if n.as_bytes() < e.name.as_bytes() => None,
                (Some(e), _) => Some(e),
                (None, Some(_)) => None,
            };
            out.push(match pick {
                Some(e) => {
                    base.next();
                    DirEntry {
                        name: e.name.to_string(),
                        ino: e.ino,
                        kind: e.kind,
                    }
                }
                None => {
                    let Some((n, &(ino, kind))) = added.next() else {
                        break;
                    };
                    DirEntry {
                        name: n.to_string(),
                        ino,
                        kind,
                    }
                }
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(ino: u64) -> FileType {
        if ino % 3 == 0 {
            FileType::Dir
        } else {
            FileType::File
        }
    }

    proptest! {
        /// Against a B-tree model: every listing, whole and in pages resumed after each
        /// name, through adds, removes and re-adds of the same names, across merges.
        #[test]
        fn lists_like_a_sorted_map(
            start in proptest::collection::btree_set(0u32..600, 0..300),
            ops in proptest::collection::vec((any::<bool>(), 0u32..600), 0..1500),
            page in 1usize..40,
        ) {
            let name = |k: u32| format!("n{:04}{}", k * 7 % 600, "x".repeat((k % 5) as usize * 9));
            let mut model: BTreeMap<String, u64> =
                start.iter().map(|&k| (name(k), u64::from(k))).collect();
            let mut o = DirOrder::build(
                model.iter().map(|(n, &i)| (CompactString::from(n.as_str()), i, kind(i))).collect(),
            );
            let mut next_ino = 1000u64;
            for (step, (add, k)) in ops.into_iter().enumerate() {
                let n = name(k);
                if add && !model.contains_key(&n) {
                    next_ino += 1;
                    o.insert(&n, next_ino, kind(next_ino));
                    model.insert(n, next_ino);
                } else if !add && model.remove(&n).is_some() {
                    o.remove(&n);
                }
                if step % 97 == 0 || step < 5 {
                    let want: Vec<(String, u64, FileType)> =
                        model.iter().map(|(n, &i)| (n.clone(), i, kind(i))).collect();
                    let got: Vec<(String, u64, FileType)> = o
                        .entries_after(None, usize::MAX)
                        .into_iter()
                        .map(|e| (e.name, e.ino, e.kind))
                        .collect();
                    prop_assert_eq!(&got, &want);
                    let mut paged = Vec::new();
                    let mut after: Option<String> = None;
                    loop {
                        let p = o.entries_after(after.as_deref(), page);
                        prop_assert!(p.len() <= page);
                        let Some(last) = p.last() else { break };
                        after = Some(last.name.clone());
                        paged.extend(p.into_iter().map(|e| (e.name, e.ino, e.kind)));
                    }
                    prop_assert_eq!(&paged, &want);
                    // Resuming after a name that is not in the directory.
                    let probe = format!("n{:04}", k);
                    let tail: Vec<String> =
                        o.entries_after(Some(&probe), usize::MAX).into_iter().map(|e| e.name).collect();
                    let want_tail: Vec<String> =
                        model.keys().filter(|n| n.as_str() > probe.as_str()).cloned().collect();
                    prop_assert_eq!(tail, want_tail);
                }
            }
        }
    }

    /// Names added in order are appended at a merge; names in between merge from the back.
    #[test]
    fn merges_appends_and_interleaves() {
        let mut o = DirOrder::default();
        for i in 0..5000u64 {
            o.insert(&format!("a{i:05}"), i, FileType::File);
        }
        for i in 0..5000u64 {
            o.insert(&format!("a{i:05}.r"), 10_000 + i, FileType::File);
            if i % 2 == 0 {
                o.remove(&format!("a{i:05}"));
            }
        }
        let got = o.entries_after(None, usize::MAX);
        assert_eq!(got.len(), 7500);
        let mut want = Vec::new();
        for i in 0..5000u64 {
            if i % 2 == 1 {
                want.push((format!("a{i:05}"), i));
            }
            want.push((format!("a{i:05}.r"), 10_000 + i));
        }
        let got: Vec<(String, u64)> = got.into_iter().map(|e| (e.name, e.ino)).collect();
        assert_eq!(got, want);
        // Changes are folded into the array as they accumulate.
        assert!(o.pending() <= o.base.len() / 4 + MIN_PENDING);
    }
}
