//! Blob handles: size, thin allocation, xattrs, read-only, sync.

use crate::error::{BsError, Result};
use crate::md::{merge_ranges, range_difference, ranges_of, MdState};
use crate::store::{
    check_xattr, del_xattr, insert_extent, map_runs, put_xattr, release_runs, BlobEntry, Inner,
};
use oxblob_bdev::{blocking, IoBuf};
use oxblob_format::blob::FLAG_READ_ONLY;
use oxblob_format::record::Mutation;
use oxblob_format::Extent;
use std::sync::Arc;

/// Whether inline data of the current log (see [`Blob::write_commit_inline`]) may lie in
/// bytes `[lo, hi)` of the blob of `entry`. A replay writes such bytes through the blob's
/// final extents, so nothing may map those bytes to other clusters while the log lives
/// (shrink, snapshot): they checkpoint first.
pub(crate) fn inline_in_log(inner: &Inner, entry: &BlobEntry, lo: u64, hi: u64) -> bool {
    let g = inner
        .group
        .log_generation
        .load(std::sync::atomic::Ordering::Acquire);
    match entry.read().checked() {
        Some(c) if c.generation == g && c.inline => lo < c.hi && hi > c.lo,
        _ => false,
    }
}

/// Longest parent chain followed before the chain is declared corrupt.
const MAX_CHAIN: usize = 4096;

/// An open blob. `Send + Sync`; share it with `Arc` for I/O from several threads (each with its
/// own [`BsChannel`](crate::BsChannel)). Metadata changes (resize, xattrs, read-only) are made in
/// memory and become durable at [`Blob::sync_md`] or [`Blob::close`]. Dropping a handle without
/// `close` releases it without syncing.
pub struct Blob {
    pub(crate) inner: Arc<Inner>,
    pub(crate) id: u64,
    pub(crate) entry: Arc<BlobEntry>,
    closed: bool,
}

impl Blob {
    pub(crate) fn new(inner: Arc<Inner>, id: u64, entry: Arc<BlobEntry>) -> Self {
        Blob {
            inner,
            id,
            entry,
            closed: false,
        }
    }

    fn live(&self) -> Result<()> {
        if self.inner.is_unloaded() {
            return Err(BsError::Unloaded);
        }
        Ok(())
    }

    /// The blob id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Size in clusters.
    pub fn num_clusters(&self) -> u64 {
        self.entry.read().current.num_clusters
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.num_clusters() * self.inner.geo.cluster_size
    }

    /// Clusters actually allocated to this blob.
    pub fn allocated_clusters(&self) -> u64 {
        self.entry.read().current.allocated_clusters()
    }

    /// The allocated extents (logical, physical, count).
    pub fn extents(&self) -> Vec<Extent> {
        self.entry.read().current.extents.clone()
    }

    /// True for a thin-provisioned blob.
    pub fn is_thin(&self) -> bool {
        self.entry.read().current.is_thin()
    }

    /// True once the blob is read-only.
    pub fn is_read_only(&self) -> bool {
        self.entry.read().current.is_read_only()
    }

    /// Parent blob id (0 for none).
    pub fn parent(&self) -> u64 {
        self.entry.read().current.parent
    }

    /// True when in-memory metadata differs from what is on disk.
    pub fn is_dirty(&self) -> bool {
        self.entry.read().dirty
    }

    /// Resizes to `num_clusters`. Growing a thick blob allocates and zeroes clusters (blocks);
    /// shrinking releases clusters once the change is durable. In memory until `sync_md`.
    /// The caller must not have I/O in flight beyond the new size while shrinking.
    pub fn resize(&self, num_clusters: u64) -> Result<()> {
        self.live()?;
        crate::store::check_blob_size(num_clusters, self.inner.geo.cluster_size)?;
        let mut md = self.inner.md_writable()?;
        // Inline data of the log past the new end would be written again by a replay, into
        // whatever clusters the blob maps there by then: a checkpoint retires it first (and
        // settles it, so no overlay bytes outlive the clusters they belong to).
        let new_end = num_clusters.saturating_mul(self.inner.geo.cluster_size);
        if self.inline_in_log(new_end, u64::MAX) {
            md.checkpoint(&self.inner, None).map_err(|e| e.error)?;
        }
        let mut guard = self.entry.write();
        let st = &mut *guard;
        if st.current.is_read_only() {
            return Err(BsError::ReadOnly);
        }
        let old = st.current.num_clusters;
        if num_clusters == old {
            // Nothing changes: the blob stays clean (no record to write at the next sync).
            return Ok(());
        }
        if num_clusters > old {
            if !st.current.is_thin() {
                let runs = self.inner.alloc_zeroed(&mut md, num_clusters - old)?;
                map_runs(&mut Arc::make_mut(&mut st.current).extents, old, &runs);
            }
        } else if num_clusters < old {
            let mut kept = Vec::new();
            // Physical cluster ranges `[start, end)` the shrink drops.
            let mut dropped = Vec::new();
            for e in &st.current.extents {
                if e.logical + e.count <= num_clusters {
                    kept.push(*e);
                } else if e.logical >= num_clusters {
                    dropped.push((e.physical, e.physical + e.count));
                } else {
                    let k = num_clusters - e.logical;
                    kept.push(Extent { count: k, ..*e });
                    dropped.push((e.physical + k, e.physical + e.count));
                }
            }
            Arc::make_mut(&mut st.current).extents = kept;
            // Clusters no durable record names can be reused at once; the others wait.
            let committed = merge_ranges(ranges_of(&st.committed).collect());
            for (a, b) in range_difference(merge_ranges(dropped), &committed) {
                for c in a..b {
                    md.alloc.release(c);
                }
            }
        }
        Arc::make_mut(&mut st.current).num_clusters = num_clusters;
        st.dirty = true;
        Ok(())
    }

    /// Writes the blob's metadata to the log if it changed, and flushes; this also makes every
    /// data write that completed before the call, and every earlier deferred commit, durable.
    /// Costs one device flush (shared with concurrent callers: group commit), plus one before
    /// the record if new clusters were zeroed or copied since the last flush. Blocks.
    pub fn sync_md(&self) -> Result<()> {
        self.commit_md(crate::Durability::Durable)
    }

    /// Writes the blob's metadata to the log if it changed, without a flush: durable with the
    /// next flush of the store (`sync_md` of any blob, [`crate::BlobStore::flush`], a durable
    /// commit). New clusters the record maps are still flushed before it is written.
    pub fn commit_md_deferred(&self) -> Result<()> {
        self.commit_md(crate::Durability::Deferred)
    }

    /// [`Blob::sync_md`] or [`Blob::commit_md_deferred`].
    pub fn commit_md(&self, durability: crate::Durability) -> Result<()> {
        self.live()?;
        if self.inner.read_only {
            return Ok(());
        }
        let t = {
            let mut md = self.inner.md_writable()?;
            // The record goes into the transaction as is (shared, not copied).
            let rec = {
                let st = self.entry.read();
                st.dirty.then(|| Arc::clone(&st.current))
            };
            if let Some(rec) = rec {
                if md
                    .commit_apply(&self.inner, &[Mutation::PutBlob(rec)], false)
                    .map_err(|e| e.error)?
                {
                    return Ok(());
                }
                md.last_ticket
            } else {
                self.inner.group.ticket()
            }
        };
        match durability {
            crate::Durability::Durable => self.inner.wait_durable(t),
            crate::Durability::Deferred => Ok(()),
        }
    }

    /// Writes the blob's metadata to the log together with a **data check**: the record
    /// states that bytes `[offset, offset + len)` of the blob have CRC-32C `crc`, and a
    /// replay that finds other bytes there skips the record. So the data and the record that
    /// makes it visible (typically a larger size in an xattr) can share **one** flush: if a
    /// crash keeps the record but not the data, the record is dropped instead of exposing
    /// bytes that never reached the media. With `Durable` this costs one record write and one
    /// flush (group commit), against a flush, a record write and a flush for an ordered
    /// commit.
    ///
    /// The caller's writes of those bytes must have **completed** before the call, and until
    /// the log holding the record is checkpointed (any later load, or the store's own
    /// checkpoints), bytes of the range must not be changed in place without
    /// [`Blob::confirm_checked`] first: a replayed check would then fail and drop an
    /// acknowledged record. [`Blob::checked_overlaps`] tells whether that applies.
    /// `len` 0 is a plain [`Blob::commit_md`]. Errors: `InvalidArgument` for a clone, a range
    /// past the blob or longer than 16 MiB.
    pub fn commit_md_checked(
        &self,
        offset: u64,
        len: u64,
        crc: u32,
        durability: crate::Durability,
    ) -> Result<()> {
        self.checked_commit(None, offset, len, crc, durability)
    }

    /// [`Blob::commit_md_checked`] that also **writes** `data` at byte `at` of the blob, in
    /// the same device round trip as the record (both submitted at once, then one flush):
    /// an appending fsync costs one write time and one flush. `at` and `data.len()` must be
    /// multiples of the io unit and every cluster of the range allocated
    /// ([`Blob::is_allocated`]); otherwise `InvalidArgument` (write the data with
    /// [`Blob::write`] and use `commit_md_checked`). The checked range must lie within the
    /// bytes written here or written (completed) before. If the commit fails, the blob's
    /// committed state is unchanged and the data may or may not have reached the device.
    #[allow(clippy::too_many_arguments)]
    pub fn write_commit_checked(
        &self,
        at: u64,
        data: &[u8],
        offset: u64,
        len: u64,
        crc: u32,
        durability: crate::Durability,
    ) -> Result<()> {
        self.checked_commit(Some((at, data)), offset, len, crc, durability)
    }

    /// Writes `data` at byte `offset` of the blob **inside the metadata record** that commits
    /// the blob's current state (a `WriteData` mutation next to its `PutBlob`), not in the
    /// blob's clusters: an appending fsync of a few KiB then costs **one** device write (the
    /// log record) and one flush, against two writes and a flush for
    /// [`Blob::write_commit_checked`]. The bytes reach their clusters later, in bulk (see the
    /// overlay in the format documentation); reads see them at once.
    ///
    /// Every cluster of the range must be allocated ([`Blob::is_allocated`]) and `data` at
    /// most [`oxblob_format::record::MAX_WRITE_LEN`] bytes; otherwise `InvalidArgument`.
    /// `ReadOnly` for a read-only blob or store. Until the log holding the record is
    /// checkpointed, the bytes must not be changed in place without
    /// [`Blob::confirm_checked`] first (a replay would write them again, over newer ones);
    /// [`Blob::checked_overlaps`] tells whether that applies. Appending past them never
    /// needs it, and a shrinking [`Blob::resize`] confirms by itself. If the commit fails, the
    /// blob's committed state and what reads return are unchanged.
    pub fn write_commit_inline(
        &self,
        offset: u64,
        data: &[u8],
        durability: crate::Durability,
    ) -> Result<()> {
        self.live()?;
        if self.inner.read_only {
            return Err(BsError::ReadOnly);
        }
        if data.is_empty() {
            return self.commit_md(durability);
        }
        let len = data.len() as u64;
        let t = {
            let mut md = self.inner.md_writable()?;
            let rec = Arc::clone(&self.entry.read().current);
            if rec.flags & FLAG_READ_ONLY != 0 {
                return Err(BsError::ReadOnly);
            }
            let end = offset.checked_add(len);
            if len > oxblob_format::record::MAX_WRITE_LEN
                || end.is_none_or(|e| {
                    e > rec.num_clusters.saturating_mul(self.inner.geo.cluster_size)
                })
                || !self.is_allocated(offset, len)
            {
                return Err(BsError::InvalidArgument(format!(
                    "inline write of {len} bytes at {offset} of blob {:#x}: longer than {} bytes, \
                     past its {} clusters or in an unallocated one",
                    self.id,
                    oxblob_format::record::MAX_WRITE_LEN,
                    rec.num_clusters
                )));
            }
            // Room for the record's growth first: a refusal must come before the bytes are
            // pending (the checkpoint that measures the state would settle them in place).
            md.admit(&self.inner, &[Mutation::PutBlob(Arc::clone(&rec))])
                .map_err(|e| e.error)?;
            // Into the blob's pending bytes before the commit: a commit that goes through a
            // checkpoint settles them in place before its flush.
            let before = {
                let mut st = self.entry.write();
                let p = st.pending_mut();
                let b0 = p.bytes();
                let before = p.remove_range(offset, len);
                p.insert(offset, data);
                md.pending_bytes = md.pending_bytes - b0 + p.bytes();
                md.pending_blobs.insert(self.id);
                before
            };
            let generation = md.sb.generation;
            let muts = [
                Mutation::PutBlob(rec),
                Mutation::WriteData(oxblob_format::DataWrite {
                    blob: self.id,
                    offset,
                    data: data.to_vec(),
                }),
            ];
            match md.commit_apply(&self.inner, &muts, false) {
                Err(e) => {
                    let mut st = self.entry.write();
                    let p = st.pending_mut();
                    let b0 = p.bytes();
                    p.remove_range(offset, len);
                    for (at, b) in before {
                        p.insert(at, &b);
                    }
                    md.pending_bytes = md.pending_bytes - b0 + p.bytes();
                    if p.is_empty() {
                        md.pending_blobs.remove(&self.id);
                    }
                    st.trim_log();
                    return Err(e.error);
                }
                Ok(true) => return Ok(()), // through a checkpoint: settled and durable
                Ok(false) => {}
            }
            self.note_checked(&md, generation, offset, offset + len, true);
            if md.pending_bytes > crate::overlay::SETTLE_BYTES {
                // A failure leaves the bytes in memory: the next settle retries.
                let _ = md.settle(&self.inner, None);
            }
            md.last_ticket
        };
        match durability {
            crate::Durability::Durable => self.inner.wait_durable(t),
            crate::Durability::Deferred => Ok(()),
        }
    }

    /// Records that the log of `generation` checks (or, with `inline`, carries) bytes
    /// `[lo, hi)` of the blob, unless a checkpoint already replaced that log (`md` is the
    /// state after the commit).
    fn note_checked(&self, md: &MdState, generation: u64, lo: u64, hi: u64, inline: bool) {
        if md.sb.generation == generation {
            let mut st = self.entry.write();
            st.note_checked(lo, hi, generation, inline);
        }
    }

    /// Whether inline data of the current log (see [`Blob::write_commit_inline`]) may lie in
    /// `[lo, hi)`.
    fn inline_in_log(&self, lo: u64, hi: u64) -> bool {
        inline_in_log(&self.inner, &self.entry, lo, hi)
    }

    /// Whether every cluster of bytes `[offset, offset + len)` is allocated (a write there
    /// needs no thin allocation).
    pub fn is_allocated(&self, offset: u64, len: u64) -> bool {
        let cs = self.inner.geo.cluster_size;
        if len == 0 {
            return true;
        }
        let st = self.entry.read();
        let last = (offset.saturating_add(len) - 1) / cs;
        (offset / cs..=last).all(|c| st.current.lookup(c).is_some())
    }

    fn checked_commit(
        &self,
        data: Option<(u64, &[u8])>,
        offset: u64,
        len: u64,
        crc: u32,
        durability: crate::Durability,
    ) -> Result<()> {
        self.live()?;
        if self.inner.read_only {
            return Ok(());
        }
        if len == 0 && data.is_none() {
            return self.commit_md(durability);
        }
        let t = {
            let mut md = self.inner.md_writable()?;
            // Logged bytes of the blob go in place before newer data or a check over them.
            if self.entry.read().pending().is_some() {
                md.settle(&self.inner, Some(self.id))?;
            }
            let rec = Arc::clone(&self.entry.read().current);
            if let Some((at, bytes)) = data {
                md.piggyback = self.data_writes(&rec, at, bytes)?;
            }
            if len == 0 {
                let r = md.commit_apply(&self.inner, &[Mutation::PutBlob(rec)], false);
                if r.map_err(|e| e.error)? {
                    return Ok(());
                }
                let t = md.last_ticket;
                drop(md);
                return match durability {
                    crate::Durability::Durable => self.inner.wait_durable(t),
                    crate::Durability::Deferred => Ok(()),
                };
            }
            let end = offset.checked_add(len);
            let cap = rec.num_clusters.saturating_mul(self.inner.geo.cluster_size);
            if rec.parent != 0
                || len > oxblob_format::record::MAX_CHECK_LEN
                || end.is_none_or(|e| e > cap)
            {
                md.piggyback.clear();
                return Err(BsError::InvalidArgument(format!(
                    "data check {offset}+{len} on blob {:#x} ({} clusters{})",
                    self.id,
                    rec.num_clusters,
                    if rec.parent != 0 { ", a clone" } else { "" }
                )));
            }
            let generation = md.sb.generation;
            let check = Mutation::CheckData(oxblob_format::DataCheck {
                blob: self.id,
                offset,
                len,
                crc,
            });
            let muts = [Mutation::PutBlob(rec), check];
            if md
                .commit_apply(&self.inner, &muts, false)
                .map_err(|e| e.error)?
            {
                return Ok(()); // went into a checkpoint: durable, nothing to replay
            }
            self.note_checked(&md, generation, offset, offset + len, false);
            md.last_ticket
        };
        match durability {
            crate::Durability::Durable => self.inner.wait_durable(t),
            crate::Durability::Deferred => Ok(()),
        }
    }

    /// The device writes of `bytes` at byte `at` of the blob as `rec` maps it, split where
    /// the clusters are not contiguous. `InvalidArgument` unless aligned and allocated;
    /// `ReadOnly` for a read-only blob.
    fn data_writes(
        &self,
        rec: &oxblob_format::BlobRecord,
        at: u64,
        bytes: &[u8],
    ) -> Result<Vec<(u64, IoBuf)>> {
        let g = &self.inner.geo;
        let len = bytes.len() as u64;
        if at % g.io_unit != 0 || len % g.io_unit != 0 {
            return Err(BsError::InvalidArgument(format!(
                "write of {len} bytes at {at}: not aligned to the io unit {}",
                g.io_unit
            )));
        }
        if rec.flags & FLAG_READ_ONLY != 0 {
            return Err(BsError::ReadOnly);
        }
        let mut out: Vec<(u64, IoBuf)> = Vec::new();
        let mut pos = at;
        let end = at
            .checked_add(len)
            .ok_or_else(|| BsError::InvalidArgument("write range overflows".into()))?;
        while pos < end {
            let lc = pos / g.cluster_size;
            let stop = ((lc + 1) * g.cluster_size).min(end);
            let Some(pc) = rec.lookup(lc) else {
                return Err(BsError::InvalidArgument(format!(
                    "cluster {lc} of blob {:#x} is not allocated",
                    self.id
                )));
            };
            let dev = g.data_first_byte + pc * g.cluster_size + pos % g.cluster_size;
            let piece = &bytes[(pos - at) as usize..(stop - at) as usize];
            match out.last_mut() {
                Some((o, b)) if *o + b.len() as u64 == dev => {
                    let mut v = b.to_vec();
                    v.extend_from_slice(piece);
                    *b = IoBuf::from_slice(&v);
                }
                _ => out.push((dev, IoBuf::from_slice(piece))),
            }
            pos = stop;
        }
        Ok(out)
    }

    /// Whether bytes `[offset, offset + len)` meet a data check still in the log (see
    /// [`Blob::commit_md_checked`]): rewriting them in place needs [`Blob::confirm_checked`]
    /// first. Appending past the checked range never does.
    pub fn checked_overlaps(&self, offset: u64, len: u64) -> bool {
        let g = self
            .inner
            .group
            .log_generation
            .load(std::sync::atomic::Ordering::Acquire);
        match self.entry.read().checked() {
            Some(c) if c.generation == g => offset < c.hi && offset.saturating_add(len) > c.lo,
            _ => false,
        }
    }

    /// Makes the blob's checked and inline records safe to invalidate. For checks: writes its
    /// metadata as a plain record (no check) and flushes, so a replay that skips an earlier
    /// checked record still ends at this state. For inline data: takes a checkpoint (the
    /// bytes settle in place and the log that would write them again is dropped). A no-op
    /// when neither is in the log. Blocks.
    pub fn confirm_checked(&self) -> Result<()> {
        self.live()?;
        if self.inner.read_only || !self.checked_overlaps(0, u64::MAX) {
            return Ok(());
        }
        if self.inline_in_log(0, u64::MAX) {
            let mut md = self.inner.md_writable()?;
            md.checkpoint(&self.inner, None).map_err(|e| e.error)?;
            drop(md);
            self.entry.write().clear_checked();
            return Ok(());
        }
        let t = {
            let mut md = self.inner.md_writable()?;
            let rec = Arc::clone(&self.entry.read().current);
            if md
                .commit_apply(&self.inner, &[Mutation::PutBlob(rec)], false)
                .map_err(|e| e.error)?
            {
                self.entry.write().clear_checked();
                return Ok(());
            }
            md.last_ticket
        };
        self.inner.wait_durable(t)?;
        self.entry.write().clear_checked();
        Ok(())
    }

    /// Makes the blob read-only (data and metadata). In memory until `sync_md`.
    pub fn set_read_only(&self) -> Result<()> {
        self.live()?;
        let _md = self.inner.md_writable()?;
        let mut st = self.entry.write();
        if !st.current.is_read_only() {
            Arc::make_mut(&mut st.current).flags |= FLAG_READ_ONLY;
        }
        st.dirty = true;
        Ok(())
    }

    fn set_x(&self, name: &str, value: &[u8], internal: bool) -> Result<()> {
        self.live()?;
        check_xattr(name, value)?;
        let _md = self.inner.md_writable()?;
        let mut st = self.entry.write();
        if st.current.is_read_only() {
            return Err(BsError::ReadOnly);
        }
        put_xattr(Arc::make_mut(&mut st.current), name, value, internal)?;
        st.dirty = true;
        Ok(())
    }

    fn remove_x(&self, name: &str, internal: bool) -> Result<bool> {
        self.live()?;
        let _md = self.inner.md_writable()?;
        let mut st = self.entry.write();
        if st.current.is_read_only() {
            return Err(BsError::ReadOnly);
        }
        let present = st.current.xattrs.contains(name, internal);
        if present {
            // Copied only when something changes.
            del_xattr(Arc::make_mut(&mut st.current), name, internal);
            st.dirty = true;
        }
        Ok(present)
    }

    fn get_x(&self, name: &str, internal: bool) -> Option<Vec<u8>> {
        self.entry
            .read()
            .current
            .xattrs
            .get(name, internal)
            .map(<[u8]>::to_vec)
    }

    /// Sets a user xattr (name 1..=255 bytes, value ≤ 64 KiB). In memory until `sync_md`.
    pub fn set_xattr(&self, name: &str, value: &[u8]) -> Result<()> {
        self.set_x(name, value, false)
    }

    /// A user xattr's value.
    pub fn get_xattr(&self, name: &str) -> Option<Vec<u8>> {
        self.get_x(name, false)
    }

    /// Removes a user xattr; returns whether it existed. In memory until `sync_md`.
    pub fn remove_xattr(&self, name: &str) -> Result<bool> {
        self.remove_x(name, false)
    }

    /// Names of the user xattrs, sorted.
    pub fn xattr_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entry
            .read()
            .current
            .xattrs
            .iter()
            .filter(|x| !x.internal)
            .map(|x| x.name.to_string())
            .collect();
        v.sort();
        v
    }

    /// Sets an internal xattr (for layers above: not listed by `xattr_names`).
    pub fn set_internal_xattr(&self, name: &str, value: &[u8]) -> Result<()> {
        self.set_x(name, value, true)
    }

    /// An internal xattr's value.
    pub fn get_internal_xattr(&self, name: &str) -> Option<Vec<u8>> {
        self.get_x(name, true)
    }

    /// Removes an internal xattr; returns whether it existed.
    pub fn remove_internal_xattr(&self, name: &str) -> Result<bool> {
        self.remove_x(name, true)
    }

    /// Syncs the metadata if dirty (as `sync_md`), then releases the handle. A clean blob's
    /// close does no I/O at all (no flush: data writes are made durable by a later `sync_md`
    /// or [`crate::BlobStore::flush`]). On error the handle is still released (the blob stays
    /// dirty in memory and is written by `unload`).
    pub fn close(mut self) -> Result<()> {
        let r = if self.inner.is_unloaded() {
            Err(BsError::Unloaded)
        } else if self.is_dirty() && !self.inner.read_only {
            self.sync_md()
        } else {
            Ok(())
        };
        self.release();
        r
    }

    fn release(&mut self) {
        if !self.closed {
            self.closed = true;
            let mut st = self.entry.write();
            st.open = st.open.saturating_sub(1);
        }
    }

    /// Allocates every unallocated cluster in `first..=last` (`all`) or only those whose parent
    /// chain has data (`!all`), filling each with the parent's data or zeroes. Blocks: takes
    /// the md mutex, writes the new clusters and leaves them to be flushed before the record
    /// that maps them (at the next `sync_md`).
    pub(crate) fn ensure_allocated(
        &self,
        first: u64,
        last: u64,
        all: bool,
        fill: Fill,
    ) -> Result<()> {
        let mut md = self.inner.md_writable()?;
        fill_clusters(&self.inner, &mut md, &self.entry, first, last, all, fill)
    }
}

/// What a new cluster without a parent's data is filled with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fill {
    /// Zeroes over the whole cluster.
    Zeroes,
    /// A write of blob bytes `[start, end)` follows: zeroes before it, and after it up to
    /// `valid_end` (io-unit aligned); the rest is left as it is (see
    /// [`Blob::write_buf_within`]).
    Around {
        start: u64,
        end: u64,
        valid_end: u64,
    },
}

/// The blob byte ranges of cluster `[c0, c1)` that `fill` zeroes.
fn zero_ranges(fill: Fill, c0: u64, c1: u64) -> [(u64, u64); 2] {
    match fill {
        Fill::Zeroes => [(c0, c1), (c1, c1)],
        Fill::Around {
            start,
            end,
            valid_end,
        } => [
            (c0, start.clamp(c0, c1)),
            (end.clamp(c0, c1), valid_end.clamp(c0, c1)),
        ],
    }
}

/// See [`Blob::ensure_allocated`]; the caller holds the md mutex.
pub(crate) fn fill_clusters(
    inner: &Inner,
    md: &mut MdState,
    entry: &BlobEntry,
    first: u64,
    last: u64,
    all: bool,
    fill: Fill,
) -> Result<()> {
    let mut st = entry.write();
    if st.current.is_read_only() {
        return Err(BsError::ReadOnly);
    }
    let parent = st.current.parent;
    let mut need: Vec<(u64, Option<u64>)> = Vec::new();
    for c in first..=last {
        if st.current.lookup(c).is_none() {
            let src = if parent != 0 {
                resolve(inner, parent, c)?
            } else {
                None
            };
            if all || src.is_some() {
                need.push((c, src));
            }
        }
    }
    if need.is_empty() {
        return Ok(());
    }
    let runs = md.alloc.alloc(need.len() as u64)?;
    let phys: Vec<u64> = runs.iter().flat_map(|&(p, k)| p..p + k).collect();
    let cs = inner.geo.cluster_size;
    let base = inner.geo.data_first_byte;
    for (&(c, src), &p) in need.iter().zip(&phys) {
        let res = match src {
            Some(sp) => usize::try_from(cs)
                .map_err(|_| BsError::InvalidArgument("cluster too large".into()))
                .and_then(|len| {
                    let buf = blocking::read(md.ch.as_mut(), base + sp * cs, len)?;
                    blocking::write(md.ch.as_mut(), base + p * cs, buf)?;
                    Ok(())
                }),
            None => zero_ranges(fill, c * cs, (c + 1) * cs)
                .into_iter()
                .filter(|&(a, b)| a < b)
                .try_for_each(|(a, b)| {
                    blocking::write_zeroes(md.ch.as_mut(), base + p * cs + (a - c * cs), b - a)
                })
                .map_err(BsError::from),
        };
        if let Err(e) = res {
            release_runs(md, &runs);
            return Err(e);
        }
    }
    md.data_written();
    let cur = Arc::make_mut(&mut st.current);
    for (&(c, _), &p) in need.iter().zip(&phys) {
        insert_extent(&mut cur.extents, c, p, 1);
    }
    st.dirty = true;
    Ok(())
}

impl Drop for Blob {
    fn drop(&mut self) {
        self.release();
    }
}

/// The physical cluster holding logical cluster `c` of blob `id` or its ancestors, if any.
pub(crate) fn resolve(inner: &Inner, mut id: u64, c: u64) -> Result<Option<u64>> {
    for _ in 0..MAX_CHAIN {
        let e = inner.entry(id)?;
        let st = e.read();
        if c >= st.current.num_clusters {
            return Ok(None);
        }
        if let Some(p) = st.current.lookup(c) {
            return Ok(Some(p));
        }
        if st.current.parent == 0 {
            return Ok(None);
        }
        id = st.current.parent;
    }
    Err(BsError::corrupt(
        format!("blob {id:#x}"),
        "parent chain too long (cycle?)",
    ))
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Blob>();
    ok::<crate::BlobStore>();
    let _ = IoBuf::zeroed(0);
}
