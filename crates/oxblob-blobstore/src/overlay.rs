//! Logged bytes not yet in place: the **overlay** of inline data.
//!
//! An inline commit ([`crate::Blob::write_commit_inline`]) puts a blob's new bytes into its
//! log record (`WriteData`) instead of writing them to the blob's clusters first, so a small
//! appending fsync costs one write and one flush instead of two writes and a flush. Until the
//! bytes reach their place they live in memory, in the blob's own state ([`Pending`], under
//! the blob's lock, which reads take anyway), and the md state lists the blobs that have
//! some:
//! - reads of the blob take them over what the device returns (a copy made when the read is
//!   submitted, so a concurrent settle cannot leave the read with neither);
//! - a write, unmap or write-zeroes of a range that meets them settles the blob first, so the
//!   newer bytes land after the logged ones;
//! - **settling** ([`crate::md::MdState::settle`]) writes them to their place through the
//!   blob's current extents (read-modify-write of the edge blocks) and only then drops them.
//!   It runs when the store holds more than [`SETTLE_BYTES`] of them, before a checkpoint
//!   (which drops the log that holds the bytes: its flush makes them durable in place
//!   first), and at unload.
//!
//! Replay rebuilds the overlay from the log's `WriteData` records in order; a writable load
//! settles it in the checkpoint it takes at once, a read-only load keeps it for reads.

use oxblob_bdev::{blocking, IoBuf, IoChannel};
use oxblob_format::BlobRecord;
use std::collections::{BTreeMap, HashMap};

/// Overlay bytes past which an inline commit settles everything (one larger write in place
/// per this many logged bytes).
pub(crate) const SETTLE_BYTES: usize = 256 << 10;

/// The bytes of one blob: non-overlapping, non-adjacent runs keyed by start offset.
pub(crate) type Runs = BTreeMap<u64, Vec<u8>>;

/// One blob's logged bytes not yet in place, kept in the blob's own state (under its lock,
/// which reads take anyway: no store-wide lock on the data path).
#[derive(Debug, Default, Clone)]
pub(crate) struct Pending {
    runs: Runs,
    bytes: usize,
}

impl Pending {
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs.
    pub(crate) fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Puts `data` at `offset`, over whatever was held there (runs that overlap or touch it
    /// are merged into one).
    pub(crate) fn insert(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Runs meeting [offset, end], including ones that merely touch it.
        let meet: Vec<u64> = self
            .runs
            .range(..=end)
            .rev()
            .take_while(|(s, v)| *s + v.len() as u64 >= offset)
            .map(|(s, _)| *s)
            .collect();
        let mut start = offset;
        let mut stop = end;
        for s in &meet {
            start = start.min(*s);
            stop = stop.max(*s + self.runs[s].len() as u64);
        }
        // The run that starts at `start` (the lowest one meeting, when it starts at or before
        // `offset`) is grown in place, so an append to a run costs the appended bytes, not a
        // copy of everything the run held (amortised, like `Vec::extend`).
        let mut merged = match meet.last() {
            Some(&s) if s == start => {
                let v = self.runs.remove(&s).unwrap_or_default();
                self.bytes -= v.len();
                v
            }
            _ => Vec::new(),
        };
        merged.resize((stop - start) as usize, 0);
        for s in &meet {
            if let Some(v) = self.runs.remove(s) {
                self.bytes -= v.len();
                let at = (s - start) as usize;
                merged[at..at + v.len()].copy_from_slice(&v);
            }
        }
        let at = (offset - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.bytes += merged.len();
        self.runs.insert(start, merged);
    }

    /// Removes `[offset, offset + len)` (splitting runs at its edges) and returns what was
    /// held there, as `(offset, bytes)` pieces.
    pub(crate) fn remove_range(&mut self, offset: u64, len: u64) -> Vec<(u64, Vec<u8>)> {
        let end = offset.saturating_add(len);
        let meet: Vec<u64> = self
            .runs
            .range(..end)
            .rev()
            .take_while(|(s, v)| *s + v.len() as u64 > offset)
            .map(|(s, _)| *s)
            .collect();
        let mut out = Vec::new();
        for s in meet.into_iter().rev() {
            let Some(v) = self.runs.remove(&s) else {
                continue;
            };
            self.bytes -= v.len();
            let e = s + v.len() as u64;
            let (cut0, cut1) = (s.max(offset), e.min(end));
            out.push((cut0, v[(cut0 - s) as usize..(cut1 - s) as usize].to_vec()));
            if s < cut0 {
                let head = v[..(cut0 - s) as usize].to_vec();
                self.bytes += head.len();
                self.runs.insert(s, head);
            }
            if cut1 < e {
                let tail = v[(cut1 - s) as usize..].to_vec();
                self.bytes += tail.len();
                self.runs.insert(cut1, tail);
            }
        }
        out
    }

    /// Whether bytes of `[offset, offset + len)` are held.
    pub(crate) fn overlaps(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        self.runs
            .range(..end)
            .next_back()
            .is_some_and(|(s, v)| s + v.len() as u64 > offset)
    }

    /// Copies of the held bytes within `[offset, offset + len)`, as
    /// `(position in the range, bytes)`.
    pub(crate) fn patches(&self, offset: u64, len: u64) -> Vec<(usize, Vec<u8>)> {
        let end = offset.saturating_add(len);
        let mut out: Vec<(usize, Vec<u8>)> = self
            .runs
            .range(..end)
            .rev()
            .take_while(|(s, v)| *s + v.len() as u64 > offset)
            .map(|(s, v)| {
                let (c0, c1) = ((*s).max(offset), (s + v.len() as u64).min(end));
                (
                    (c0 - offset) as usize,
                    v[(c0 - s) as usize..(c1 - s) as usize].to_vec(),
                )
            })
            .collect();
        out.reverse();
        out
    }

    /// Drops the runs a settle wrote in place (exactly those: nothing else adds bytes while
    /// the settle holds the md mutex).
    pub(crate) fn settled(&mut self, done: &Runs) {
        for (s, v) in done {
            self.remove_range(*s, v.len() as u64);
        }
    }
}

/// Logged bytes of many blobs, as a replay (load, fsck) collects them in log order.
#[derive(Default)]
pub(crate) struct Overlay {
    blobs: HashMap<u64, Pending>,
}

impl Overlay {
    /// Puts `data` at `offset` of `blob`, over what an earlier record logged there.
    pub(crate) fn insert(&mut self, blob: u64, offset: u64, data: &[u8]) {
        self.blobs.entry(blob).or_default().insert(offset, data);
    }

    /// Drops everything held for `blob` (deleted).
    pub(crate) fn remove_blob(&mut self, blob: u64) {
        self.blobs.remove(&blob);
    }

    /// Each blob's bytes.
    pub(crate) fn into_blobs(self) -> HashMap<u64, Pending> {
        self.blobs
    }

    /// Each blob's bytes, borrowed.
    pub(crate) fn blobs(&self) -> &HashMap<u64, Pending> {
        &self.blobs
    }
}

/// Writes `bytes` at device byte `dev` through `ch`, reading the partial edge blocks first
/// (`unit` bytes each) so the rest of them stays as it is.
pub(crate) fn write_in_place(
    ch: &mut dyn IoChannel,
    dev: u64,
    bytes: &[u8],
    unit: u64,
) -> crate::Result<()> {
    let a0 = dev / unit * unit;
    let end = dev + bytes.len() as u64;
    let a1 = end.div_ceil(unit) * unit;
    let mut buf = IoBuf::zeroed((a1 - a0) as usize);
    let u = unit as usize;
    if a0 != dev {
        let b = blocking::read(ch, a0, u)?;
        buf[..u].copy_from_slice(&b);
    }
    // The tail block, unless it is the head block and was just read.
    if a1 != end && (a1 - unit != a0 || a0 == dev) {
        let b = blocking::read(ch, a1 - unit, u)?;
        let n = buf.len();
        buf[n - u..].copy_from_slice(&b);
    }
    let s = (dev - a0) as usize;
    buf[s..s + bytes.len()].copy_from_slice(bytes);
    blocking::write(ch, a0, buf)?;
    Ok(())
}

/// The device writes that put `runs` of a blob in place through the extents of `rec`:
/// `(device byte, bytes)` per cluster piece; pieces of unmapped clusters are left out.
pub(crate) fn placements<'a>(
    rec: &BlobRecord,
    runs: &'a Runs,
    cluster_size: u64,
    data_first_byte: u64,
) -> Vec<(u64, &'a [u8])> {
    let mut out = Vec::new();
    for (start, bytes) in runs {
        let end = start + bytes.len() as u64;
        let mut at = *start;
        while at < end {
            let lc = at / cluster_size;
            let stop = ((lc + 1) * cluster_size).min(end);
            if let Some(pc) = rec.lookup(lc) {
                let dev = data_first_byte + pc * cluster_size + at % cluster_size;
                out.push((dev, &bytes[(at - start) as usize..(stop - start) as usize]));
            }
            at = stop;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes in `[0, n)`, 0xEE where nothing is held.
    fn image(p: &Pending, n: u64) -> Vec<u8> {
        let mut v = vec![0xEE; n as usize];
        for (at, b) in p.patches(0, n) {
            v[at..at + b.len()].copy_from_slice(&b);
        }
        v
    }

    #[test]
    fn insert_merges_and_later_bytes_win() {
        let mut p = Pending::default();
        p.insert(10, &[1; 5]);
        p.insert(20, &[2; 5]);
        assert_eq!(p.bytes(), 10);
        // Touching the first run, overlapping the second.
        p.insert(15, &[3; 7]);
        assert_eq!(p.runs().len(), 1);
        assert_eq!(p.bytes(), 15);
        let mut want = vec![0xEE; 30];
        want[10..15].fill(1);
        want[15..22].fill(3);
        want[22..25].fill(2);
        assert_eq!(image(&p, 30), want);
        assert!(p.overlaps(24, 1) && !p.overlaps(25, 10) && !p.overlaps(0, 10));
        let mut o = Overlay::default();
        o.insert(1, 0, &[5; 4]);
        o.insert(2, 0, &[6; 4]);
        o.insert(1, 2, &[7; 4]);
        o.remove_blob(2);
        let blobs = o.into_blobs();
        assert_eq!(blobs.len(), 1);
        assert_eq!(image(&blobs[&1], 6), vec![5, 5, 7, 7, 7, 7]);
    }

    #[test]
    fn inserts_match_a_byte_model() {
        // Appends (the inline-commit pattern, which grows a run in place), rewrites, and
        // inserts that bridge several runs, against a plain byte array.
        let n = 4096u64;
        let mut model: Vec<Option<u8>> = vec![None; n as usize];
        let mut p = Pending::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut tail = 0u64;
        for i in 0..3000u32 {
            let (off, len) = match next(4) {
                0 | 1 if tail < n - 64 => {
                    let len = 1 + next(63);
                    let at = tail;
                    tail += len;
                    (at, len)
                }
                _ => {
                    let at = next(n - 1);
                    (at, 1 + next((n - at).min(300)))
                }
            };
            let fill = (i % 251) as u8;
            p.insert(off, &vec![fill; len as usize]);
            model[off as usize..(off + len) as usize].fill(Some(fill));
            let want: Vec<u8> = model.iter().map(|b| b.unwrap_or(0xEE)).collect();
            assert_eq!(image(&p, n), want, "after insert {i} at {off}+{len}");
            assert_eq!(p.bytes(), model.iter().filter(|b| b.is_some()).count());
            // Runs stay apart: no two touch or overlap.
            let mut prev_end = None;
            for (s, v) in p.runs() {
                assert!(prev_end.is_none_or(|e| e < *s), "runs touch at {s}");
                prev_end = Some(s + v.len() as u64);
            }
        }
    }

    #[test]
    fn remove_range_splits_and_returns_what_was_there() {
        let mut p = Pending::default();
        p.insert(0, &(0..20).collect::<Vec<u8>>());
        let got = p.remove_range(5, 10);
        assert_eq!(got, vec![(5, (5..15).collect::<Vec<u8>>())]);
        assert_eq!(p.bytes(), 10);
        let mut want: Vec<u8> = (0..20).collect();
        want[5..15].fill(0xEE);
        assert_eq!(image(&p, 20), want);
        // Put back: the original bytes again, one run.
        for (at, b) in got {
            p.insert(at, &b);
        }
        assert_eq!(image(&p, 20), (0..20).collect::<Vec<u8>>());
        assert_eq!(p.runs().len(), 1);
    }

    #[test]
    fn settled_drops_exactly_what_was_written() {
        let mut p = Pending::default();
        p.insert(0, &[1; 8]);
        let snap = p.runs().clone();
        p.insert(100, &[2; 8]);
        p.settled(&snap);
        assert!(!p.overlaps(0, 8));
        assert!(p.overlaps(100, 1));
        assert_eq!(p.bytes(), 8);
        let all = p.runs().clone();
        p.settled(&all);
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }
}
