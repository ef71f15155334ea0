//! The metadata engine: md-region space, the log, checkpoints and the superblock slots. Everything
//! here runs under the store's metadata mutex.

use crate::alloc::Allocator;
use crate::error::{BsError, Result};
use crate::store::{BlobEntry, Inner};
use oxblob_bdev::{blocking, Completion, IoBuf, IoChannel, IoOp};
use oxblob_format::record::{self, Mutation, RecordKind};
use oxblob_format::{BlobRecord, CheckpointEncoder, CheckpointRef, Superblock, MD_PAGE_SIZE};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub(crate) const PAGE: u64 = MD_PAGE_SIZE as u64;
/// A checkpoint is written in pieces of this size (a multiple of the md page).
const CKPT_WRITE_CHUNK: usize = 4 << 20;
const _: () = assert!(CKPT_WRITE_CHUNK % MD_PAGE_SIZE == 0);

/// How a failed commit left the disk.
pub(crate) struct CommitError {
    pub(crate) error: BsError,
    /// The record (or superblock) may have reached the media and may replay after a crash.
    pub(crate) maybe_written: bool,
}

impl From<BsError> for CommitError {
    fn from(error: BsError) -> Self {
        CommitError {
            error,
            maybe_written: false,
        }
    }
}

/// Group commit: tickets order md writes against device flushes, so one flush can cover many
/// callers (durable commits, `sync_md`, `BlobStore::flush`) without holding the md mutex.
///
/// A ticket is taken (`issued + 1`) *after* the write it stands for completed. A flush first
/// reads `issued`, then is submitted; once it completes, every ticket up to that value is
/// durable (`durable`). A caller holding ticket `t` returns when `durable >= t`: either a flush
/// started after its write covers it, or it becomes the leader and flushes itself; callers
/// arriving while a flush runs wait for it and then share the next one.
pub(crate) struct FlushGroup {
    issued: AtomicU64,
    durable: AtomicU64,
    state: Mutex<GroupState>,
    cv: Condvar,
    /// The channel the leader flushes on (not the md channel: no md mutex is held).
    ch: Mutex<Option<Box<dyn IoChannel>>>,
    /// Device flushes submitted (all channels of the store), for tests and benchmarks.
    flushes: AtomicU64,
    /// Generation of the superblock that started the current log: a checkpoint or a new
    /// epoch changes it, and the records of the old log are never replayed again (so the
    /// data checks they carry stop mattering, see `BlobState::checked`).
    pub(crate) log_generation: AtomicU64,
}

#[derive(Default)]
struct GroupState {
    in_progress: bool,
    /// A group flush failed: no caller may report durability until a checkpoint succeeds.
    poisoned: bool,
    /// Callers waiting on `cv` for the flush in progress: a leader with none to wake skips
    /// the wake-up (a system call even when nobody waits).
    waiters: usize,
}

impl FlushGroup {
    pub(crate) fn new() -> Self {
        FlushGroup {
            issued: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            state: Mutex::new(GroupState::default()),
            cv: Condvar::new(),
            ch: Mutex::new(None),
            flushes: AtomicU64::new(0),
            log_generation: AtomicU64::new(0),
        }
    }

    /// A ticket for everything that completed before this call.
    pub(crate) fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a completed flush that was submitted when `issued` was `upto`.
    fn covered(&self, upto: u64) {
        self.durable.fetch_max(upto, Ordering::AcqRel);
    }

    pub(crate) fn clear_poison(&self) {
        self.state().poisoned = false;
    }

    /// Returns once ticket `t` is durable. Err: a flush failed (or the group is poisoned by an
    /// earlier failure); the caller must not report durability before a checkpoint succeeds.
    pub(crate) fn wait(&self, dev: &dyn oxblob_bdev::BlockDevice, t: u64) -> Result<()> {
        let mut st = self.state();
        loop {
            if st.poisoned {
                // An earlier flush failed (EIO); the caller checkpoints.
                return Err(BsError::Io(oxblob_bdev::BdevError::Io {
                    op: oxblob_bdev::IoKind::Flush,
                    offset: 0,
                    errno: 5,
                }));
            }
            if self.durable() >= t {
                return Ok(());
            }
            if st.in_progress {
                st.waiters += 1;
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                st.waiters -= 1;
                continue;
            }
            st.in_progress = true;
            drop(st);
            let r = (|| -> Result<u64> {
                let mut ch = self.ch.lock().unwrap_or_else(|e| e.into_inner());
                if ch.is_none() {
                    *ch = Some(dev.channel()?);
                }
                let upto = self.issued.load(Ordering::Acquire);
                if let Some(c) = ch.as_mut() {
                    self.flushes.fetch_add(1, Ordering::Relaxed);
                    blocking::flush(c.as_mut())?;
                }
                Ok(upto)
            })();
            st = self.state();
            st.in_progress = false;
            if st.waiters > 0 {
                self.cv.notify_all();
            }
            match r {
                Ok(upto) => self.covered(upto),
                Err(e) => {
                    st.poisoned = true;
                    return Err(e);
                }
            }
        }
    }
}

/// The metadata state guarded by the md mutex.
pub(crate) struct MdState {
    pub(crate) ch: Box<dyn IoChannel>,
    pub(crate) sb: Superblock,
    pub(crate) slot: u64,
    /// Segments (indices in the md region) of the current log, in order.
    pub(crate) log_segments: Vec<u64>,
    /// Absolute byte offset on the device where the next record goes (packed log: any
    /// multiple of [`record::RECORD_ALIGN`] inside the tail segment).
    pub(crate) tail: u64,
    /// Absolute byte offset of the end of the tail segment.
    pub(crate) seg_end: u64,
    /// The bytes of the tail's page before `tail` (`tail % PAGE` of them): the records
    /// already in that page, written again, unchanged, in front of the next record, because
    /// the device writes whole pages. A torn or reordered rewrite leaves each block old or
    /// new, and the bytes of those records are the same in both. Empty at a page boundary; a
    /// store that was loaded starts with a new log (checkpoint or new epoch) before it
    /// appends, so it never appends into a page it did not write itself.
    pub(crate) tail_head: Vec<u8>,
    /// Scratch for the next `tail_head` while a record is in flight.
    pub(crate) tail_next: Vec<u8>,
    /// Scratch for the payload of the transaction being committed.
    pub(crate) txn_buf: Vec<u8>,
    pub(crate) next_seq: u64,
    pub(crate) log_records: u64,
    pub(crate) ckpt_segments: Vec<u64>,
    pub(crate) free_segments: BTreeSet<u64>,
    /// Segments of a checkpoint whose superblock write failed: a later crash may make that
    /// superblock current, so they stay untouched until a checkpoint succeeds.
    pub(crate) held_segments: Vec<u64>,
    pub(crate) next_blob_id: u64,
    pub(crate) super_blob: Option<u64>,
    pub(crate) alloc: Allocator,
    /// Data-region writes (zeroing, copy-on-write) completed since the last flush.
    pub(crate) data_unflushed: bool,
    /// Data writes (device offset, bytes) to submit together with the next transaction
    /// record (a checked commit's data: `Blob::write_commit_checked`), so both take one
    /// device round trip. Taken by the next [`MdState::commit`].
    pub(crate) piggyback: Vec<(u64, IoBuf)>,
    /// Ticket of the last such write: a group flush covering it clears `data_unflushed`.
    pub(crate) data_ticket: u64,
    /// Clusters freed by records written but not yet covered by a flush, with the ticket of
    /// the record that freed them.
    pub(crate) pending_free: Vec<(u64, u64)>,
    /// Ticket of the last record written to the log.
    pub(crate) last_ticket: u64,
    pub(crate) group: Arc<FlushGroup>,
    /// Clusters named by a record whose write or flush failed; released after a checkpoint.
    pub(crate) quarantine: Vec<u64>,
    /// A record or superblock write failed: checkpoint (new epoch) before logging again.
    pub(crate) needs_checkpoint: bool,
    /// Children index: parent blob id -> ids of the blobs whose `parent` it is (snapshots to
    /// their clones). Only blobs with children have an entry. Kept in step with the blob table
    /// by [`apply`] and built at load, so deletes need not scan every blob.
    pub(crate) clones: HashMap<u64, BTreeSet<u64>>,
    /// The last checkpoint's payload buffer, reused by the next one: a large store's
    /// checkpoint (about 100 bytes a blob) then encodes into memory that is already mapped,
    /// instead of faulting in and zeroing a fresh allocation every time.
    pub(crate) ckpt_buf: Vec<u8>,
    /// Blobs holding inline-logged bytes not yet in place (`BlobState::pending`), and how
    /// many bytes in all: what a settle visits, and when it is due.
    pub(crate) pending_blobs: BTreeSet<u64>,
    pub(crate) pending_bytes: usize,
}

impl MdState {
    pub(crate) fn seg_pages(&self) -> u64 {
        u64::from(self.sb.md_segment_pages)
    }

    pub(crate) fn seg_start(&self, seg: u64) -> u64 {
        self.sb.md_first_page + seg * self.seg_pages()
    }

    /// Starts the log's tail at the beginning of md page `page` (a fresh segment).
    pub(crate) fn set_tail_page(&mut self, page: u64) {
        self.tail = page * PAGE;
        self.seg_end = self.tail + self.seg_pages() * PAGE;
        self.tail_head.clear();
    }

    /// Moves the tail past the record of `len` bytes just written at it.
    fn advance_tail(&mut self, len: u64) {
        self.tail += len;
        std::mem::swap(&mut self.tail_head, &mut self.tail_next);
    }

    pub(crate) fn write_pages(&mut self, first: u64, bytes: &[u8]) -> Result<()> {
        let mut buf = IoBuf::zeroed(bytes.len().div_ceil(MD_PAGE_SIZE) * MD_PAGE_SIZE);
        buf[..bytes.len()].copy_from_slice(bytes);
        blocking::write(self.ch.as_mut(), first * PAGE, buf)?;
        Ok(())
    }

    /// Flushes the device; afterwards every record written so far is durable, so the clusters
    /// they freed can be reused.
    pub(crate) fn flush(&mut self) -> Result<()> {
        let t = self.group.ticket();
        self.group.flushes.fetch_add(1, Ordering::Relaxed);
        blocking::flush(self.ch.as_mut())?;
        self.group.covered(t);
        self.reap();
        Ok(())
    }

    /// Marks a data-region write (zeroing, copy-on-write) that completed on the md channel: it
    /// must be flushed before a record maps its clusters.
    pub(crate) fn data_written(&mut self) {
        self.data_unflushed = true;
        self.data_ticket = self.group.ticket();
    }

    /// Applies what flushes completed since the last call (possibly group flushes run
    /// without the md mutex): releases the clusters freed by records now durable.
    pub(crate) fn reap(&mut self) {
        let d = self.group.durable();
        if self.data_unflushed && self.data_ticket <= d {
            self.data_unflushed = false;
        }
        if self.pending_free.iter().any(|&(t, _)| t <= d) {
            let mut keep = Vec::new();
            for (t, c) in std::mem::take(&mut self.pending_free) {
                if t <= d {
                    self.alloc.release(c);
                } else {
                    keep.push((t, c));
                }
            }
            self.pending_free = keep;
        }
    }

    /// Frees clusters named by a committed record: now if it is durable, else once a flush
    /// covers the record (its ticket, `last_ticket`).
    pub(crate) fn free_clusters(&mut self, clusters: impl IntoIterator<Item = u64>, durable: bool) {
        if durable {
            for c in clusters {
                self.alloc.release(c);
            }
        } else {
            let t = self.last_ticket;
            self.pending_free
                .extend(clusters.into_iter().map(|c| (t, c)));
        }
    }

    fn write_record(&mut self, kind: RecordKind, payload: &[u8]) -> Result<u64> {
        self.write_record_with(kind, payload, Vec::new())
    }

    /// Writes a record at the tail, with `data` writes submitted alongside it on the md
    /// channel (all in flight at once); returns when every one completed, with the record's
    /// length in bytes. The tail is not moved ([`MdState::advance_tail`] does).
    fn write_record_with(
        &mut self,
        kind: RecordKind,
        payload: &[u8],
        data: Vec<(u64, IoBuf)>,
    ) -> Result<u64> {
        // Packed: the record goes right after the previous one, in one write of the pages it
        // touches, the first of them starting with the records already there (`tail_head`).
        // Encoded straight into an I/O buffer (recycled on this thread): no heap churn.
        let len = record::record_len(payload.len());
        let head = self.tail_head.len();
        debug_assert_eq!(head as u64, self.tail % PAGE);
        let end = head + len;
        let mut buf = IoBuf::zeroed(end.div_ceil(MD_PAGE_SIZE) * MD_PAGE_SIZE);
        buf[..head].copy_from_slice(&self.tail_head);
        record::encode_record_into(
            &mut buf[head..end],
            self.sb.store_id,
            self.sb.generation,
            self.next_seq,
            kind,
            payload,
        )
        .map_err(|e| BsError::InvalidArgument(e.to_string()))?;
        self.tail_next.clear();
        self.tail_next
            .extend_from_slice(&buf[end / MD_PAGE_SIZE * MD_PAGE_SIZE..end]);
        let at = self.tail - head as u64;
        if data.is_empty() {
            blocking::write(self.ch.as_mut(), at, buf)?;
        } else {
            let mut all = data;
            all.push((at, buf));
            self.write_all(all)?;
        }
        Ok(len as u64)
    }

    /// Submits every write at once on the (idle) md channel and waits for all of them; the
    /// first error is returned after everything submitted has completed.
    fn write_all(&mut self, writes: Vec<(u64, IoBuf)>) -> Result<()> {
        let ch = self.ch.as_mut();
        if ch.in_flight() != 0 {
            return Err(oxblob_bdev::BdevError::Busy {
                in_flight: ch.in_flight(),
            }
            .into());
        }
        let mut err: Option<BsError> = None;
        let mut submitted = 0usize;
        for (i, (offset, buf)) in writes.into_iter().enumerate() {
            match ch.submit(i as u64, IoOp::Write { offset, buf }) {
                Ok(()) => submitted += 1,
                Err(r) => {
                    err = Some(r.error.into());
                    break;
                }
            }
        }
        let mut out: Vec<Completion> = Vec::with_capacity(submitted);
        let mut done = 0usize;
        while done < submitted {
            out.clear();
            match ch.poll(&mut out, submitted - done) {
                Ok(_) => {}
                Err(e) => return Err(err.unwrap_or(e.into())),
            }
            for c in out.drain(..) {
                done += 1;
                if let Err(e) = c.result {
                    err.get_or_insert(e.into());
                }
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits one transaction: appended to the log, or through a checkpoint when it does not
    /// fit. With `durable`, the commit is flushed before returning. Returns whether it is durable.
    fn commit(
        &mut self,
        inner: &Inner,
        muts: &[Mutation],
        durable: bool,
    ) -> std::result::Result<bool, CommitError> {
        let data = std::mem::take(&mut self.piggyback);
        if self.needs_checkpoint {
            self.checkpoint(inner, None)?;
        }
        self.admit(inner, muts)?;
        self.reap();
        if self.data_unflushed {
            self.flush()?;
        }
        // Encoded into a buffer kept across commits (no allocation per commit).
        let mut payload = std::mem::take(&mut self.txn_buf);
        let r = self.commit_payload(inner, muts, durable, data, &mut payload);
        self.txn_buf = payload;
        r
    }

    /// [`MdState::commit`] once the pending data writes are taken; `payload` is scratch.
    fn commit_payload(
        &mut self,
        inner: &Inner,
        muts: &[Mutation],
        durable: bool,
        data: Vec<(u64, IoBuf)>,
        payload: &mut Vec<u8>,
    ) -> std::result::Result<bool, CommitError> {
        record::encode_txn_into(muts, payload)
            .map_err(|e| BsError::InvalidArgument(e.to_string()))?;
        // Every segment keeps room for a Link after its last record.
        let len = record::record_len(payload.len()) as u64;
        let link_len = record::LINK_RECORD_LEN as u64;
        if len + link_len > self.seg_pages() * PAGE {
            // Through a checkpoint: its first flush covers the data, written first.
            self.write_all(data)?;
            self.checkpoint(inner, Some(muts))?;
            return Ok(true);
        }
        if self.tail + len + link_len > self.seg_end {
            // A new log segment, unless every free one would leave no room for the next
            // checkpoint: then the checkpoint now (it carries this transaction and restarts
            // the log in one segment), before the log can no longer be folded at all.
            let Some(seg) = self.log_segment_to_take() else {
                self.write_all(data)?;
                self.checkpoint(inner, Some(muts))?;
                return Ok(true);
            };
            let link = record::encode_link(self.seg_start(seg));
            if let Err(error) = self.write_record(RecordKind::Link, &link) {
                self.needs_checkpoint = true;
                return Err(CommitError {
                    error,
                    maybe_written: true,
                });
            }
            self.free_segments.remove(&seg);
            self.log_segments.push(seg);
            self.set_tail_page(self.seg_start(seg));
            self.next_seq += 1;
        }
        let result = self
            .write_record_with(RecordKind::Txn, payload, data)
            .and_then(|p| {
                if durable {
                    self.flush().map(|()| p)
                } else {
                    Ok(p)
                }
            });
        match result {
            Ok(len) => {
                self.advance_tail(len);
                self.next_seq += 1;
                self.log_records += 1;
                if !durable {
                    self.last_ticket = self.group.ticket();
                }
            }
            Err(error) => {
                self.needs_checkpoint = true;
                return Err(CommitError {
                    error,
                    maybe_written: true,
                });
            }
        }
        Ok(durable)
    }

    /// Commits `muts`, applies them to the in-memory state, and takes a checkpoint when
    /// [`MdState::checkpoint_due`] says so.
    pub(crate) fn commit_apply(
        &mut self,
        inner: &Inner,
        muts: &[Mutation],
        durable: bool,
    ) -> std::result::Result<bool, CommitError> {
        let durable = self.commit(inner, muts, durable)?;
        apply(self, inner, muts, durable);
        if self.checkpoint_due() {
            // The commit itself succeeded; a failed checkpoint is retried at the next commit.
            if self.checkpoint(inner, None).is_err() {
                self.needs_checkpoint = true;
            }
        }
        Ok(durable)
    }

    /// Largest state (checkpoint payload bytes) a transaction may grow the store to: a
    /// quarter of the md region, in whole segments. A checkpoint is written, in one run of
    /// contiguous free segments, beside the previous one and the log before either is
    /// dropped; once the state passes about a third of the region, the free space around the
    /// previous checkpoint may hold no such run, and then no change could ever commit again —
    /// not even a delete, nor the checkpoint a writable load takes. A quarter leaves the
    /// next checkpoint its run (a quarter larger than the last) beside the previous one and a
    /// log segment, and the log only grows into segments that keep that run
    /// ([`MdState::log_segment_to_take`]). Only growth is refused at the limit: deletes,
    /// shrinks and updates that keep their size go on, and free room again.
    pub(crate) fn state_limit(&self) -> u64 {
        let segs = self.sb.md_page_count / self.seg_pages();
        segs / 4 * self.seg_pages() * PAGE
    }

    /// The state's size, at most: the last checkpoint's plus the log since.
    pub(crate) fn state_bound(&self) -> u64 {
        self.sb.checkpoint.len + self.log_bytes()
    }

    /// Bytes of log records since the last checkpoint (whole segments but the current one,
    /// links and padding included): at least the growth of the state since then, since every
    /// put blob is logged whole.
    fn log_bytes(&self) -> u64 {
        let seg = self.seg_pages() * PAGE;
        let full = (self.log_segments.len() as u64).saturating_sub(1) * seg;
        full + (self.tail + seg).saturating_sub(self.seg_end)
    }

    /// Refuses with `NoMetadataSpace`, before anything is written, a transaction that would
    /// grow the state past [`MdState::state_limit`]. Cheap while far from it: the last
    /// checkpoint's length plus the log since bounds the state, and the transaction's put
    /// records bound its growth. Near it, the growth is measured against the blobs' committed
    /// records, and a checkpoint measures the state exactly before a refusal.
    pub(crate) fn admit(
        &mut self,
        inner: &Inner,
        muts: &[Mutation],
    ) -> std::result::Result<(), CommitError> {
        /// A new blob's framing in a checkpoint (its length word), rounded up.
        const FRAMING: u64 = 16;
        let limit = self.state_limit();
        let most: u64 = muts
            .iter()
            .map(|m| match m {
                Mutation::PutBlob(r) => r.encoded_len() as u64 + FRAMING,
                _ => 0,
            })
            .sum();
        if most == 0 || self.sb.checkpoint.len + self.log_bytes() + most <= limit {
            return Ok(());
        }
        let mut growth: i64 = 0;
        for m in muts {
            let (id, new) = match m {
                Mutation::PutBlob(r) => (r.id, r.encoded_len() as i64),
                Mutation::DeleteBlob(id) => (*id, 0),
                _ => continue,
            };
            let old = inner
                .entry(id)
                .map(|e| e.read().committed.encoded_len() as i64 + FRAMING as i64)
                .unwrap_or(0);
            growth += new + if new > 0 { FRAMING as i64 } else { 0 } - old;
        }
        let Ok(growth) = u64::try_from(growth) else {
            return Ok(());
        };
        if growth == 0 {
            return Ok(());
        }
        // Not with inline bytes: the checkpoint would settle this transaction's own bytes in
        // place (they are already in the blob's pending bytes) before a refusal.
        let inline = muts.iter().any(|m| matches!(m, Mutation::WriteData(_)));
        if !inline
            && self.log_records > 0
            && self.sb.checkpoint.len + self.log_bytes() + growth > limit
        {
            self.checkpoint(inner, None)?;
        }
        if self.sb.checkpoint.len + growth > limit {
            return Err(BsError::NoMetadataSpace.into());
        }
        Ok(())
    }

    /// Segments the next checkpoint is given room for: the current one's plus a quarter for
    /// growth.
    fn next_ckpt_segs(&self) -> u64 {
        let ckpt_pages = self.sb.checkpoint.len.div_ceil(PAGE);
        (ckpt_pages + ckpt_pages / 4)
            .div_ceil(self.seg_pages())
            .max(1)
    }

    /// The free segment the log may grow into: the lowest one whose taking still leaves the
    /// next checkpoint a contiguous run ([`MdState::next_ckpt_segs`]) and a log segment
    /// beside it. A count of free segments is not enough: log segments taken from the middle
    /// of the free space can leave no run long enough, and then no checkpoint, and so no
    /// commit, could ever be written again.
    ///
    /// One pass over the free runs: taking a run's first segment leaves the longest rest of
    /// any of its segments, so the answer is the first run whose first segment, taken, still
    /// leaves some run of `next` segments (and the free count a segment more than that).
    fn log_segment_to_take(&self) -> Option<u64> {
        let next = self.next_ckpt_segs();
        let found = self.log_segment_to_take_runs(next);
        debug_assert_eq!(
            found,
            self.free_segments
                .iter()
                .copied()
                .find(|&s| self.find_space_without(next, Some(s)).is_some()),
            "log segment choice"
        );
        found
    }

    fn log_segment_to_take_runs(&self, next: u64) -> Option<u64> {
        if (self.free_segments.len() as u64) < next + 2 {
            return None;
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &s in &self.free_segments {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == s => *len += 1,
                _ => runs.push((s, 1)),
            }
        }
        // The two longest runs: taking from one leaves the other whole.
        let (mut first, mut second) = ((usize::MAX, 0u64), 0u64);
        for (i, &(_, len)) in runs.iter().enumerate() {
            if len > first.1 {
                second = first.1;
                first = (i, len);
            } else if len > second {
                second = len;
            }
        }
        runs.iter().enumerate().find_map(|(i, &(start, len))| {
            let others = if i == first.0 { second } else { first.1 };
            (others.max(len - 1) >= next).then_some(start)
        })
    }

    fn log_pages_used(&self) -> u64 {
        self.log_segments.len() as u64 * self.seg_pages()
    }

    /// Checkpoint scheduling. A checkpoint costs O(state) (its pages, `C`); it is taken when
    /// the log has grown past `max(md/4, 2C)` pages, so its cost is at most half of the log
    /// volume written since the previous one: amortized O(1) per operation whatever the number
    /// of blobs, as long as the md region has room. It is taken earlier when the free segments
    /// could no longer hold the next checkpoint (the current one plus a quarter for growth) and
    /// a fresh log segment while the log keeps growing; only a log of two or more segments is
    /// worth checkpointing for space (a checkpoint frees all but one log segment). With a state
    /// near half the md region this degrades to frequent checkpoints (each still correct)
    /// rather than to `NoMetadataSpace`.
    fn checkpoint_due(&self) -> bool {
        let seg = self.seg_pages();
        let log = self.log_pages_used();
        let ckpt_pages = self.sb.checkpoint.len.div_ceil(PAGE);
        if log * 4 > self.sb.md_page_count && log >= 2 * ckpt_pages {
            return true;
        }
        let next_ckpt_segs = (ckpt_pages + ckpt_pages / 4).div_ceil(seg).max(1);
        self.log_segments.len() >= 2 && (self.free_segments.len() as u64) < next_ckpt_segs + 2
    }

    /// Serializes the committed state (plus `extra`, a transaction not yet applied) into a
    /// checkpoint payload. Streams every blob's committed record straight into the output in
    /// id order: no per-blob copy, one buffer sized from the previous checkpoint.
    pub(crate) fn encode_checkpoint(
        &self,
        inner: &Inner,
        extra: Option<&[Mutation]>,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let mut next = self.next_blob_id;
        let mut sup = self.super_blob;
        // The transaction's final word on each blob it touches: Some = put, None = deleted.
        let mut over: BTreeMap<u64, Option<&BlobRecord>> = BTreeMap::new();
        for m in extra.unwrap_or(&[]) {
            match m {
                Mutation::PutBlob(r) => {
                    over.insert(r.id, Some(&**r));
                }
                Mutation::DeleteBlob(id) => {
                    over.insert(*id, None);
                }
                Mutation::SetSuperBlob(s) => sup = *s,
                Mutation::SetNextId(n) => next = next.max(*n),
                // The checked data completed before the commit; the checkpoint's own flush
                // (before its superblock) makes it durable.
                Mutation::CheckData(_) => {}
                // Inline data is in the blob's pending bytes (put there before the commit),
                // which the checkpoint settles in place before its flush.
                Mutation::WriteData(_) => {}
            }
        }
        // The blob table is ordered by id: the checkpoint streams it in order, with no sort.
        let table = inner.blobs_read();
        let hint = usize::try_from(self.sb.checkpoint.len).unwrap_or(0);
        buf.clear();
        buf.reserve(hint.saturating_add(hint / 8).saturating_add(MD_PAGE_SIZE));
        let mut enc = CheckpointEncoder::with_buffer(self.sb.store_id, next, sup, buf);
        let bad = |e: oxblob_format::DecodeError| BsError::corrupt("checkpoint", e.to_string());
        let mut extras = over.into_iter().peekable();
        for (id, e) in table.iter() {
            while let Some((_, x)) = extras.next_if(|&(xid, _)| xid < id) {
                if let Some(r) = x {
                    enc.push(r).map_err(bad)?;
                }
            }
            if let Some((_, x)) = extras.next_if(|&(xid, _)| xid == id) {
                if let Some(r) = x {
                    enc.push(r).map_err(bad)?;
                }
                continue;
            }
            enc.push(&e.read().committed).map_err(bad)?;
        }
        for (_, x) in extras {
            if let Some(r) = x {
                enc.push(r).map_err(bad)?;
            }
        }
        Ok(enc.finish())
    }

    /// Writes a checkpoint of the committed state (plus `extra`) and switches the superblock
    /// to it with a fresh log. Durable on success.
    pub(crate) fn checkpoint(
        &mut self,
        inner: &Inner,
        extra: Option<&[Mutation]>,
    ) -> std::result::Result<(), CommitError> {
        // The log about to be dropped may hold the only copy of inline data: in place first,
        // so the checkpoint's flush covers it.
        self.settle(inner, None)?;
        let buf = std::mem::take(&mut self.ckpt_buf);
        let bytes = self.encode_checkpoint(inner, extra, buf)?;
        let r = self.write_checkpoint(&bytes);
        self.ckpt_buf = bytes;
        r
    }

    /// [`MdState::checkpoint`] of the encoded payload `bytes`.
    fn write_checkpoint(&mut self, bytes: &[u8]) -> std::result::Result<(), CommitError> {
        let pages = (bytes.len() as u64).div_ceil(PAGE).max(1);
        let nsegs = pages.div_ceil(self.seg_pages());
        let (run, log_seg) = self.find_space(nsegs).ok_or(BsError::NoMetadataSpace)?;
        let first_page = self.seg_start(run);
        // In pieces: each goes through a recycled I/O buffer, not one copy the payload's size.
        for (i, piece) in bytes.chunks(CKPT_WRITE_CHUNK).enumerate() {
            let at = first_page + (i * CKPT_WRITE_CHUNK) as u64 / PAGE;
            self.write_pages(at, piece)?;
        }
        self.flush()?;
        let mut sb = self.sb.clone();
        sb.generation += 1;
        sb.checkpoint = CheckpointRef {
            first_page,
            page_count: nsegs * self.seg_pages(),
            len: bytes.len() as u64,
            crc: oxblob_format::crc32c(bytes),
        };
        sb.log_first_page = self.seg_start(log_seg);
        sb.log_first_seq = self.next_seq;
        let page = sb
            .encode()
            .map_err(|e| BsError::corrupt("superblock", e.to_string()))?;
        let other = 1 - self.slot;
        let res = self.write_pages(other, &page).and_then(|()| self.flush());
        if let Err(error) = res {
            self.held_segments.extend(run..run + nsegs);
            for s in run..run + nsegs {
                self.free_segments.remove(&s);
            }
            self.needs_checkpoint = true;
            return Err(CommitError {
                error,
                maybe_written: true,
            });
        }
        // The new superblock is durable: the old checkpoint and log are free.
        let old: Vec<u64> = self
            .ckpt_segments
            .drain(..)
            .chain(self.log_segments.drain(..))
            .chain(self.held_segments.drain(..))
            .collect();
        self.free_segments.extend(old);
        for s in run..run + nsegs {
            self.free_segments.remove(&s);
        }
        self.free_segments.remove(&log_seg);
        self.ckpt_segments = (run..run + nsegs).collect();
        self.log_segments = vec![log_seg];
        self.set_tail_page(sb.log_first_page);
        self.log_records = 0;
        self.group
            .log_generation
            .store(sb.generation, Ordering::Release);
        self.sb = sb;
        self.slot = other;
        self.needs_checkpoint = false;
        for c in std::mem::take(&mut self.quarantine) {
            self.alloc.release(c);
        }
        Ok(())
    }

    /// Writes the inline-logged bytes not yet in place (of blob `only`, or of every blob) to
    /// their place through each blob's current extents, then drops them from memory. Bytes
    /// of clusters the blob no longer maps are dropped unwritten. Edge blocks are read and
    /// written back whole. No flush: the bytes are durable in the log until a checkpoint,
    /// whose flush comes after its settle. On error nothing is dropped.
    pub(crate) fn settle(&mut self, inner: &Inner, only: Option<u64>) -> Result<()> {
        let ids: Vec<u64> = match only {
            Some(id) if self.pending_blobs.contains(&id) => vec![id],
            Some(_) => return Ok(()),
            None => self.pending_blobs.iter().copied().collect(),
        };
        let unit = inner.geo.io_unit;
        let cluster_size = inner.geo.cluster_size;
        for id in ids {
            let Ok(entry) = inner.entry(id) else {
                self.pending_blobs.remove(&id);
                continue;
            };
            // Copies: reads keep finding the bytes in memory until they are in place.
            let (rec, runs) = {
                let st = entry.read();
                let runs = st.pending().map(|p| p.runs().clone()).unwrap_or_default();
                (Arc::clone(&st.current), runs)
            };
            for (dev, piece) in
                crate::overlay::placements(&rec, &runs, cluster_size, inner.geo.data_first_byte)
            {
                crate::overlay::write_in_place(self.ch.as_mut(), dev, piece, unit)?;
            }
            let mut st = entry.write();
            if st.pending().is_some() {
                let p = st.pending_mut();
                let before = p.bytes();
                p.settled(&runs);
                self.pending_bytes -= before - p.bytes();
                st.trim_log();
            }
            if st.pending().is_none() {
                self.pending_blobs.remove(&id);
            }
        }
        Ok(())
    }

    /// A run of `n` contiguous free segments and one more free segment outside it.
    fn find_space(&self, n: u64) -> Option<(u64, u64)> {
        self.find_space_without(n, None)
    }

    /// [`MdState::find_space`] as if segment `taken` were not free.
    fn find_space_without(&self, n: u64, taken: Option<u64>) -> Option<(u64, u64)> {
        let total = self.sb.md_page_count / self.seg_pages();
        let free = |s: &u64| Some(*s) != taken && self.free_segments.contains(s);
        let mut start = 0;
        while start + n <= total {
            match (start..start + n).find(|s| !free(s)) {
                Some(busy) => start = busy + 1,
                None => {
                    let log = self
                        .free_segments
                        .iter()
                        .copied()
                        .find(|s| Some(*s) != taken && !(start..start + n).contains(s))?;
                    return Some((start, log));
                }
            }
        }
        None
    }
}

/// Applies committed mutations to the in-memory state. `durable` says whether the record is
/// already covered by a flush (freed clusters are released now) or not (after the next flush).
///
/// A put blob's `committed` and `current` become the transaction's own record (shared, no
/// copy): the blob is clean and holds one copy of its state.
///
/// Frees are computed over the whole transaction: a cluster is freed when some touched blob
/// held it before and no blob of the transaction holds it after (a snapshot or a merge moves
/// clusters between blobs in one record; they must not be freed).
///
/// The sets are kept as physical cluster ranges, not as one entry per cluster: a commit costs
/// in proportion to the blobs' extents, not to their size (with one entry per cluster, a
/// synced append to a 400 MiB file cost 43 µs of CPU, most of it building three sets of the
/// file's clusters; 5 µs with ranges).
pub(crate) fn apply(md: &mut MdState, inner: &Inner, muts: &[Mutation], durable: bool) {
    let mut old: Vec<(u64, u64)> = Vec::new();
    let mut new: Vec<Arc<BlobRecord>> = Vec::new();
    {
        let mut blobs = inner.blobs_write();
        for m in muts {
            match m {
                Mutation::PutBlob(r) => {
                    new.push(Arc::clone(r));
                    let old_parent = match blobs.get(r.id) {
                        Some(e) => {
                            let mut st = e.write();
                            // A blob that maps the same clusters before and after (a commit of
                            // its size, times or inline bytes: most commits) frees none, and
                            // leaving its clusters out of `old` changes no other blob's frees:
                            // (A ∪ S) − (B ∪ S) = A − (B ∪ S), and S stays in the new side.
                            let same = st.committed.extents == r.extents
                                && (Arc::ptr_eq(&st.committed, &st.current)
                                    || st.current.extents == r.extents);
                            if !same {
                                old.extend(ranges_of(&st.committed));
                                if !Arc::ptr_eq(&st.committed, &st.current) {
                                    old.extend(ranges_of(&st.current));
                                }
                            }
                            let p = st.committed.parent;
                            st.committed = Arc::clone(r);
                            st.current = Arc::clone(r);
                            st.dirty = false;
                            p
                        }
                        None => {
                            blobs.insert(r.id, Arc::new(BlobEntry::new(Arc::clone(r))));
                            0
                        }
                    };
                    if old_parent != r.parent {
                        unlink_clone(&mut md.clones, old_parent, r.id);
                        if r.parent != 0 {
                            md.clones.entry(r.parent).or_default().insert(r.id);
                        }
                    }
                }
                Mutation::DeleteBlob(id) => {
                    if let Some(e) = blobs.remove(*id) {
                        let st = e.read();
                        // Its logged bytes go with it.
                        if md.pending_blobs.remove(id) {
                            md.pending_bytes -= st.pending().map_or(0, |p| p.bytes());
                        }
                        old.extend(ranges_of(&st.committed));
                        if !Arc::ptr_eq(&st.committed, &st.current) {
                            old.extend(ranges_of(&st.current));
                        }
                        unlink_clone(&mut md.clones, st.committed.parent, *id);
                    }
                }
                Mutation::SetSuperBlob(s) => md.super_blob = *s,
                Mutation::SetNextId(n) => md.next_blob_id = md.next_blob_id.max(*n),
                Mutation::CheckData(_) | Mutation::WriteData(_) => {}
            }
        }
    }
    if old.is_empty() {
        return;
    }
    let new = merge_ranges(new.iter().flat_map(|r| ranges_of(r)).collect());
    let freed = range_difference(merge_ranges(old), &new);
    if !freed.is_empty() {
        md.free_clusters(freed.into_iter().flat_map(|(a, b)| a..b), durable);
    }
}

/// The physical cluster ranges `[start, end)` a record maps, one per extent.
pub(crate) fn ranges_of(r: &BlobRecord) -> impl Iterator<Item = (u64, u64)> + '_ {
    r.extents
        .iter()
        .filter(|e| e.count > 0)
        .map(|e| (e.physical, e.physical.saturating_add(e.count)))
}

/// Sorts ranges and joins the ones that overlap or touch: the same set of clusters, as
/// disjoint ranges in ascending order.
pub(crate) fn merge_ranges(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The clusters in `old` and not in `new`, both disjoint ascending ranges (from
/// [`merge_ranges`]), as disjoint ascending ranges.
pub(crate) fn range_difference(old: Vec<(u64, u64)>, new: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for (mut a, b) in old {
        // Ranges of `new` that end at or before `a` cannot cut this or any later range.
        while j < new.len() && new[j].1 <= a {
            j += 1;
        }
        let mut k = j;
        while a < b {
            match new.get(k) {
                Some(&(na, nb)) if na < b => {
                    if na > a {
                        out.push((a, na));
                    }
                    a = a.max(nb);
                    k += 1;
                }
                _ => {
                    out.push((a, b));
                    break;
                }
            }
        }
    }
    out
}

/// Removes `child` from `parent`'s entry of the children index (no-op for parent 0).
fn unlink_clone(clones: &mut HashMap<u64, BTreeSet<u64>>, parent: u64, child: u64) {
    if parent == 0 {
        return;
    }
    if let Some(set) = clones.get_mut(&parent) {
        set.remove(&child);
        if set.is_empty() {
            clones.remove(&parent);
        }
    }
}

/// The children index of a blob table: parent id -> ids of its clones.
pub(crate) fn clone_index<'a>(
    records: impl IntoIterator<Item = &'a BlobRecord>,
) -> HashMap<u64, BTreeSet<u64>> {
    let mut clones: HashMap<u64, BTreeSet<u64>> = HashMap::new();
    for r in records {
        if r.parent != 0 {
            clones.entry(r.parent).or_default().insert(r.id);
        }
    }
    clones
}

/// Every physical cluster a record maps.
pub(crate) fn clusters_of(r: &BlobRecord) -> impl Iterator<Item = u64> + '_ {
    r.extents
        .iter()
        .flat_map(|e| e.physical..e.physical + e.count)
}

#[cfg(test)]
mod range_tests {
    use super::{merge_ranges, range_difference};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn set_of(v: &[(u64, u64)]) -> BTreeSet<u64> {
        v.iter().flat_map(|&(a, b)| a..b).collect()
    }

    #[test]
    fn difference_of_touching_and_nested_ranges() {
        let old = merge_ranges(vec![(10, 20), (0, 5), (5, 8), (30, 40)]);
        assert_eq!(old, vec![(0, 8), (10, 20), (30, 40)]);
        let new = merge_ranges(vec![(2, 3), (12, 35), (39, 50)]);
        assert_eq!(
            range_difference(old, &new),
            vec![(0, 2), (3, 8), (10, 12), (35, 39)]
        );
        assert!(range_difference(vec![(4, 9)], &[(0, 100)]).is_empty());
        assert_eq!(range_difference(vec![(4, 9)], &[]), vec![(4, 9)]);
    }

    proptest! {
        /// Against the per-cluster sets the ranges replace: the same clusters freed, as
        /// disjoint ascending ranges.
        #[test]
        fn difference_matches_cluster_sets(
            old in prop::collection::vec((0u64..200, 1u64..20), 0..12),
            new in prop::collection::vec((0u64..200, 1u64..20), 0..12),
        ) {
            let old: Vec<(u64, u64)> = old.into_iter().map(|(a, n)| (a, a + n)).collect();
            let new: Vec<(u64, u64)> = new.into_iter().map(|(a, n)| (a, a + n)).collect();
            let want: BTreeSet<u64> = set_of(&old).difference(&set_of(&new)).copied().collect();
            let got = range_difference(merge_ranges(old), &merge_ranges(new));
            prop_assert!(got.windows(2).all(|w| w[0].1 < w[1].0));
            prop_assert!(got.iter().all(|&(a, b)| a < b));
            prop_assert_eq!(set_of(&got), want);
        }
    }
}
