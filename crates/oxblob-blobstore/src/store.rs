//! The store: init, load (clean and after a crash), unload, destroy, blob lifecycle,
//! transactions and the read-only inspector.

use crate::alloc::Allocator;
use crate::blob::Blob;
use crate::error::{BsError, Result};
use crate::md::{clusters_of, merge_ranges, range_difference, ranges_of, MdState, PAGE};
use crate::overlay::{Overlay, Pending};
use crate::table::IdTable;
use oxblob_bdev::{blocking, BlockDevice, IoChannel};
use oxblob_format::blob::{Xattrs, FLAG_THIN};
use oxblob_format::record::{self, Mutation, RecordHeader, RecordKind};
use oxblob_format::superblock::{INCOMPAT_CHECKED_DATA, INCOMPAT_INLINE_DATA, INCOMPAT_PACKED_LOG};
use oxblob_format::{
    BlobRecord, Checkpoint, CheckpointRef, DecodeError, Extent, Superblock, FORMAT_VERSION,
    MAX_CLUSTER_SIZE, MAX_XATTR_NAME, MAX_XATTR_VALUE, MD_PAGE_SIZE, MIN_CLUSTER_SIZE,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Default cluster size (1 MiB).
pub const DEFAULT_CLUSTER_SIZE: u64 = 1 << 20;
/// Default md segment size in pages (256 KiB).
pub const DEFAULT_SEGMENT_PAGES: u32 = 64;

/// Turns a short name into a `bstype` tag (truncated to 16 bytes, zero padded).
pub fn bstype(name: &str) -> [u8; 16] {
    let mut t = [0u8; 16];
    let n = name.len().min(16);
    t[..n].copy_from_slice(&name.as_bytes()[..n]);
    t
}

/// When a metadata commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Durable on return: the record is written and a device flush (shared with concurrent
    /// callers) covers it.
    Durable,
    /// Written to the log without a flush: durable with the next flush of the store. After a
    /// crash the log holds a prefix of the records in commit order.
    Deferred,
}

/// Options of [`BlobStore::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Cluster size in bytes: a power of two, 64 KiB ..= 256 MiB.
    pub cluster_size: u64,
    /// Size of the md region in pages; `None` sizes it from the device.
    pub md_pages: Option<u64>,
    /// Pages per md segment (at least 2).
    pub md_segment_pages: u32,
    /// Application tag stored in the superblock.
    pub bstype: [u8; 16],
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            cluster_size: DEFAULT_CLUSTER_SIZE,
            md_pages: None,
            md_segment_pages: DEFAULT_SEGMENT_PAGES,
            bstype: [0; 16],
        }
    }
}

/// Options of [`BlobStore::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Expected application tag; all zeroes accepts any.
    pub bstype: [u8; 16],
    /// Load read-only: nothing is written, not even the load-time superblock.
    pub read_only: bool,
}

/// Options of [`BlobStore::create_blob`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Initial size in clusters.
    pub num_clusters: u64,
    /// Thin provisioned: clusters are allocated on first write.
    pub thin: bool,
    /// Initial user xattrs.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The metadata region's use ([`BlobStore::md_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MdUsage {
    /// The state (what a checkpoint holds), at most: the last checkpoint's size plus the log
    /// written since. Exact right after a checkpoint, which every writable load takes.
    pub state_bytes: u64,
    /// The most the state may grow to, a quarter of the region: a change that would grow it
    /// further fails with `NoMetadataSpace` (deletes never do).
    pub limit_bytes: u64,
    /// The metadata region.
    pub region_bytes: u64,
}

/// What [`BlobStore::blobs`] reports of each blob, without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Blob id.
    pub id: u64,
    /// Size in clusters.
    pub num_clusters: u64,
    /// Allocated clusters.
    pub allocated_clusters: u64,
    /// `oxblob_format::blob::FLAG_*` bits.
    pub flags: u64,
    /// Parent blob id, 0 for none.
    pub parent: u64,
    /// User xattrs, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// One blob's in-memory state.
///
/// `current` and `committed` are shared records: after a commit both point to the record the
/// transaction carried ([`Mutation::PutBlob`]), so a clean blob holds one copy and a commit
/// copies nothing. Every change to `current` goes through `Arc::make_mut`, which copies the
/// record first while it is shared (with `committed` or a transaction being built), so an
/// in-memory change never reaches `committed` and a failed commit leaves both as they were.
pub(crate) struct BlobState {
    /// The in-memory state, what I/O and getters see.
    pub(crate) current: Arc<BlobRecord>,
    /// The state last written to the log (what a crash would recover).
    pub(crate) committed: Arc<BlobRecord>,
    pub(crate) dirty: bool,
    pub(crate) open: u32,
    /// What records of the current log say about the blob's data, and its inline-logged
    /// bytes not yet in place ([`Logged`]). Boxed: only blobs written with checked or inline
    /// commits (a WAL) have one, and every blob pays for the field.
    log: Option<Box<Logged>>,
}

/// The log-related state of a blob ([`BlobState`]'s accessors).
#[derive(Debug, Default)]
struct Logged {
    /// Bytes `[lo, hi)` named by data checks (`CheckData`) in records of the current log,
    /// with the log's generation: while the log may replay, rewriting those bytes in place
    /// would make a replayed check fail and drop an acknowledged record, so
    /// [`crate::Blob::confirm_checked`] writes a plain record first. Inline commits
    /// (`WriteData`) count too: a replay writes their bytes again, over any newer ones, so
    /// confirming them takes a checkpoint.
    checked: Option<Checked>,
    /// Inline-logged bytes not yet in place (see [`crate::overlay`]); reads lay them over
    /// the device's data. The md state's `pending_blobs` lists the blobs that have some.
    pending: Option<Pending>,
}

/// The bytes of a blob that records of the current log check or carry inline
/// ([`BlobState::checked`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked {
    /// First byte.
    pub(crate) lo: u64,
    /// End.
    pub(crate) hi: u64,
    /// Generation of the log that holds the records.
    pub(crate) generation: u64,
    /// Some of the records carry the bytes (`WriteData`), not only a check.
    pub(crate) inline: bool,
}

impl BlobState {
    /// The checked or inline bytes of the log, if any (of whatever generation).
    pub(crate) fn checked(&self) -> Option<&Checked> {
        self.log.as_ref().and_then(|l| l.checked.as_ref())
    }

    /// Adds `[lo, hi)` of a record of the log of `generation` (a newer log starts afresh).
    pub(crate) fn note_checked(&mut self, lo: u64, hi: u64, generation: u64, inline: bool) {
        let l = self.log.get_or_insert_with(Default::default);
        match &mut l.checked {
            Some(c) if c.generation == generation => {
                c.lo = c.lo.min(lo);
                c.hi = c.hi.max(hi);
                c.inline |= inline;
            }
            c => {
                *c = Some(Checked {
                    lo,
                    hi,
                    generation,
                    inline,
                })
            }
        }
    }

    /// Forgets the checked and inline ranges (their log is retired).
    pub(crate) fn clear_checked(&mut self) {
        if let Some(l) = self.log.as_mut() {
            l.checked = None;
        }
        self.trim_log();
    }

    /// The inline-logged bytes not yet in place, if any.
    pub(crate) fn pending(&self) -> Option<&Pending> {
        self.log.as_ref().and_then(|l| l.pending.as_ref())
    }

    /// The inline-logged bytes not yet in place, made present if absent. Call
    /// [`BlobState::trim_log`] after emptying them.
    pub(crate) fn pending_mut(&mut self) -> &mut Pending {
        self.log
            .get_or_insert_with(Default::default)
            .pending
            .get_or_insert_with(Default::default)
    }

    /// Drops empty parts of the log state (and the box when nothing is left).
    pub(crate) fn trim_log(&mut self) {
        if let Some(l) = self.log.as_mut() {
            if l.pending.as_ref().is_some_and(Pending::is_empty) {
                l.pending = None;
            }
            if l.pending.is_none() && l.checked.is_none() {
                self.log = None;
            }
        }
    }
}

pub(crate) struct BlobEntry {
    state: RwLock<BlobState>,
}

impl BlobEntry {
    /// A clean blob: `current` and `committed` are both `r`.
    pub(crate) fn new(r: Arc<BlobRecord>) -> Self {
        BlobEntry {
            state: RwLock::new(BlobState {
                current: Arc::clone(&r),
                committed: r,
                dirty: false,
                open: 0,
                log: None,
            }),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, BlobState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, BlobState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Fixed geometry of a loaded store.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub(crate) cluster_size: u64,
    pub(crate) io_unit: u64,
    pub(crate) data_first_byte: u64,
    pub(crate) total_clusters: u64,
}

pub(crate) struct Inner {
    pub(crate) dev: Arc<dyn BlockDevice>,
    pub(crate) geo: Geometry,
    md: Mutex<MdState>,
    blobs: RwLock<IdTable<BlobEntry>>,
    unloaded: AtomicBool,
    pub(crate) read_only: bool,
    /// Group commit state (shared with `MdState`).
    pub(crate) group: Arc<crate::md::FlushGroup>,
}

impl Inner {
    /// Lock order: md, then the blob map, then one blob's state.
    pub(crate) fn md(&self) -> Result<MutexGuard<'_, MdState>> {
        if self.unloaded.load(Ordering::Acquire) {
            return Err(BsError::Unloaded);
        }
        let mut g = self.md.lock().unwrap_or_else(|e| e.into_inner());
        g.reap();
        Ok(g)
    }

    pub(crate) fn md_writable(&self) -> Result<MutexGuard<'_, MdState>> {
        if self.read_only {
            return Err(BsError::ReadOnly);
        }
        let g = self.md()?;
        if self.unloaded.load(Ordering::Acquire) {
            return Err(BsError::Unloaded);
        }
        Ok(g)
    }

    pub(crate) fn blobs_read(&self) -> RwLockReadGuard<'_, IdTable<BlobEntry>> {
        self.blobs.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn blobs_write(&self) -> RwLockWriteGuard<'_, IdTable<BlobEntry>> {
        self.blobs.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn entry(&self, id: u64) -> Result<Arc<BlobEntry>> {
        self.blobs_read()
            .get(id)
            .cloned()
            .ok_or(BsError::NotFound(id))
    }

    pub(crate) fn is_unloaded(&self) -> bool {
        self.unloaded.load(Ordering::Acquire)
    }

    /// Commits `muts` as one record and returns once it is durable. The record is written
    /// under the md mutex; the flush runs without it, shared with concurrent callers (group
    /// commit, see [`crate::md::FlushGroup`]).
    pub(crate) fn commit_durable(&self, muts: &[Mutation]) -> Result<()> {
        let t = {
            let mut md = self.md_writable()?;
            if md.commit_apply(self, muts, false).map_err(|e| e.error)? {
                return Ok(());
            }
            md.last_ticket
        };
        self.wait_durable(t)
    }

    /// Waits until ticket `t` is durable (sharing one flush with concurrent callers). When a
    /// flush fails, the log can no longer be trusted to reach the media in order, so the
    /// caller takes a checkpoint (a new epoch carrying the whole committed state, which
    /// includes every record written so far); the call succeeds if that checkpoint does.
    pub(crate) fn wait_durable(&self, t: u64) -> Result<()> {
        let err = match self.group.wait(self.dev.as_ref(), t) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let mut md = self.md_writable()?;
        md.needs_checkpoint = true;
        match md.checkpoint(self, None) {
            Ok(()) => {
                self.group.clear_poison();
                Ok(())
            }
            Err(_) => Err(err),
        }
    }

    /// Allocates `n` clusters and zeroes them on the md channel. On error nothing stays
    /// allocated. The zeroes are flushed before any record that maps them (`data_unflushed`).
    pub(crate) fn alloc_zeroed(&self, md: &mut MdState, n: u64) -> Result<Vec<(u64, u64)>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let runs = md.alloc.alloc(n)?;
        for &(p, k) in &runs {
            let off = self.geo.data_first_byte + p * self.geo.cluster_size;
            if let Err(e) = blocking::write_zeroes(md.ch.as_mut(), off, k * self.geo.cluster_size) {
                release_runs(md, &runs);
                return Err(e.into());
            }
        }
        md.data_written();
        Ok(runs)
    }
}

pub(crate) fn release_runs(md: &mut MdState, runs: &[(u64, u64)]) {
    for &(p, k) in runs {
        for c in p..p + k {
            md.alloc.release(c);
        }
    }
}

/// Maps logical clusters `first..` onto `runs`, appending extents to `extents` (kept sorted).
pub(crate) fn map_runs(extents: &mut Vec<Extent>, mut logical: u64, runs: &[(u64, u64)]) {
    for &(p, k) in runs {
        insert_extent(extents, logical, p, k);
        logical += k;
    }
}

/// Inserts a mapping for unmapped logical clusters, merging with neighbours.
pub(crate) fn insert_extent(extents: &mut Vec<Extent>, logical: u64, physical: u64, count: u64) {
    let i = extents.partition_point(|e| e.logical < logical);
    extents.insert(
        i,
        Extent {
            logical,
            physical,
            count,
        },
    );
    // merge with next
    if i + 1 < extents.len() {
        let (a, b) = (extents[i], extents[i + 1]);
        if a.logical + a.count == b.logical && a.physical + a.count == b.physical {
            extents[i].count += b.count;
            extents.remove(i + 1);
        }
    }
    if i > 0 {
        let (a, b) = (extents[i - 1], extents[i]);
        if a.logical + a.count == b.logical && a.physical + a.count == b.physical {
            extents[i - 1].count += b.count;
            extents.remove(i);
        }
    }
}

/// Validates xattr name and value lengths.
pub(crate) fn check_xattr(name: &str, value: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME {
        return Err(BsError::InvalidArgument(format!(
            "xattr name of {} bytes (1..=255)",
            name.len()
        )));
    }
    if value.len() > MAX_XATTR_VALUE {
        return Err(BsError::InvalidArgument(format!(
            "xattr value of {} bytes (max {MAX_XATTR_VALUE})",
            value.len()
        )));
    }
    Ok(())
}

/// Sets (or replaces) an xattr in a record (name and value checked by [`check_xattr`]).
pub(crate) fn put_xattr(
    r: &mut BlobRecord,
    name: &str,
    value: &[u8],
    internal: bool,
) -> Result<()> {
    r.xattrs
        .set(name, value, internal)
        .map_err(|e| BsError::InvalidArgument(e.to_string()))
}

/// A blob's size in bytes must fit in a `u64` (thin blobs may exceed the device).
pub(crate) fn check_blob_size(num_clusters: u64, cluster_size: u64) -> Result<()> {
    match num_clusters.checked_mul(cluster_size) {
        Some(_) => Ok(()),
        None => Err(BsError::InvalidArgument(format!(
            "{num_clusters} clusters of {cluster_size} bytes overflow a 64-bit size"
        ))),
    }
}

/// Removes an xattr from a record; false if absent.
pub(crate) fn del_xattr(r: &mut BlobRecord, name: &str, internal: bool) -> bool {
    r.xattrs.remove(name, internal)
}

/// A blobstore. Cheap to clone (all clones share one store); `Send + Sync`.
#[derive(Clone)]
pub struct BlobStore {
    pub(crate) inner: Arc<Inner>,
}

/// One decoded log record, as [`inspect`] reports it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Absolute md page of the record's header.
    pub page: u64,
    /// Absolute byte offset of the record's header on the device (several records share a
    /// page in a packed log).
    pub offset: u64,
    /// The decoded header.
    pub header: RecordHeader,
    /// The transaction's mutations (empty for a Link).
    pub mutations: Vec<Mutation>,
    /// The Link's target page, for a Link.
    pub link: Option<u64>,
    /// Why a transaction with valid checksums is not applied: one of its data checks
    /// (`CheckData`) failed, so its data never reached the media and it was never
    /// acknowledged. Replay and fsck skip it; the log goes on after it.
    pub skipped: Option<String>,
}

/// Everything on disk that describes the store, decoded without changing anything.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Both superblock slots as decoded (or why not).
    pub slots: [std::result::Result<Superblock, DecodeError>; 2],
    /// The current slot (0 or 1).
    pub current_slot: usize,
    /// The current superblock.
    pub superblock: Superblock,
    /// The checkpoint it points to.
    pub checkpoint: Checkpoint,
    /// The valid log records, in order.
    pub log: Vec<LogEntry>,
    /// Segments (indices in the md region) the log occupies.
    pub log_segments: Vec<u64>,
    /// Absolute md page where the next record would go (the page holding `tail_offset`).
    pub tail_page: u64,
    /// Absolute byte offset on the device where the next record would go.
    pub tail_offset: u64,
    /// The log is packed (superblock feature `PACKED_LOG`): records start at 64-byte
    /// boundaries, several to a page. Otherwise each record has whole pages of its own.
    pub packed: bool,
    /// Sequence number the next record would carry.
    pub next_seq: u64,
    /// Why the log scan stopped at `tail_offset` (the position is not repeated in it).
    pub stop_reason: String,
}

/// Reads and decodes the superblocks, the checkpoint and the log of `dev` without writing
/// anything. For `fsck`, `dump` and [`BlobStore::load`].
pub fn inspect(dev: &dyn BlockDevice) -> Result<Inspection> {
    let mut ch = dev.channel()?;
    inspect_with(ch.as_mut(), dev.info().size_bytes())
}

/// Generations, sequence numbers and blob ids above this cannot be reached by a real store
/// (2^62 operations); a superblock, checkpoint or log claiming one is corrupt. The headroom
/// keeps every `+ 1` on them from overflowing.
pub(crate) const COUNTER_LIMIT: u64 = 1 << 62;

/// Evaluates a `CheckData` of a replayed transaction: reads the blob's bytes through the
/// extents of the transaction's own `PutBlob` (unmapped clusters read as zeroes) and compares
/// their CRC-32C. `None`: the check holds; `Some(why)`: it fails and the transaction is
/// skipped. Ranges past the blob or the data region fail the check (decode validated the
/// rest).
fn verify_check(
    ch: &mut dyn IoChannel,
    sb: &Superblock,
    muts: &[Mutation],
    c: &oxblob_format::DataCheck,
) -> Result<Option<String>> {
    let Some(put) = muts.iter().rev().find_map(|m| match m {
        Mutation::PutBlob(r) if r.id == c.blob => Some(r),
        _ => None,
    }) else {
        return Ok(Some(format!("blob {:#x} not put", c.blob)));
    };
    let cs = sb.cluster_size;
    let unit = u64::from(sb.io_unit).max(1);
    let end = c.offset + c.len;
    if end > put.num_clusters.saturating_mul(cs) {
        return Ok(Some(format!(
            "check {}+{} beyond the blob's {} clusters",
            c.offset, c.len, put.num_clusters
        )));
    }
    let mut crc = 0u32;
    let mut at = c.offset;
    while at < end {
        let lc = at / cs;
        let stop = ((lc + 1) * cs).min(end);
        let n = (stop - at) as usize;
        let i = put.extents.partition_point(|e| e.logical + e.count <= lc);
        match put.extents.get(i).filter(|e| e.logical <= lc) {
            Some(e) => {
                let pc = e.physical + (lc - e.logical);
                if pc >= sb.data_cluster_count {
                    return Ok(Some(format!("cluster {pc} outside the data region")));
                }
                let dev_off = sb.data_first_byte + pc * cs + at % cs;
                let a0 = dev_off / unit * unit;
                let a1 = (dev_off + n as u64).div_ceil(unit) * unit;
                let buf = blocking::read(ch, a0, (a1 - a0) as usize)?;
                let s = (dev_off - a0) as usize;
                crc = oxblob_format::crc32c_append(crc, &buf[s..s + n]);
            }
            None => {
                let z = vec![0u8; n];
                crc = oxblob_format::crc32c_append(crc, &z);
            }
        }
        at = stop;
    }
    Ok((crc != c.crc).then(|| {
        format!(
            "data check failed: blob {:#x} bytes {}+{} have crc {crc:#010x}, the record says {:#010x}",
            c.blob, c.offset, c.len, c.crc
        )
    }))
}

fn inspect_with(ch: &mut dyn IoChannel, dev_size: u64) -> Result<Inspection> {
    let mut buf = blocking::read(ch, 0, 2 * MD_PAGE_SIZE)?;
    let slots = [
        Superblock::decode(&buf[..MD_PAGE_SIZE]),
        Superblock::decode(&buf[MD_PAGE_SIZE..]),
    ];
    let best = (0..2)
        .filter_map(|i| slots[i].as_ref().ok().map(|s| (s.generation, i)))
        .max();
    let Some((_, slot)) = best else {
        let magic = buf
            .chunks(MD_PAGE_SIZE)
            .any(|p| p[..8] == oxblob_format::superblock::SUPERBLOCK_MAGIC);
        if !magic {
            return Err(BsError::NotABlobstore);
        }
        let e = slots
            .iter()
            .find_map(|s| s.as_ref().err().cloned())
            .ok_or(BsError::NotABlobstore)?;
        return Err(BsError::from_decode(e, 0));
    };
    buf.resize(0);
    let sb = match &slots[slot] {
        Ok(s) => s.clone(),
        Err(_) => return Err(BsError::NotABlobstore),
    };
    // Before reading anything the superblock points to: every range it names lies inside
    // `device_size` (validated), so this also bounds the reads' buffers by the real device.
    if dev_size < sb.device_size {
        return Err(BsError::DeviceTooSmall(format!(
            "device has {dev_size} bytes, the store was made on {}",
            sb.device_size
        )));
    }
    if sb.generation > COUNTER_LIMIT || sb.log_first_seq > COUNTER_LIMIT {
        return Err(BsError::corrupt(
            "superblock",
            format!(
                "generation {} or log_first_seq {} beyond {COUNTER_LIMIT}",
                sb.generation, sb.log_first_seq
            ),
        ));
    }
    let seg = u64::from(sb.md_segment_pages);
    let c = sb.checkpoint;
    if (c.first_page - sb.md_first_page) % seg != 0 || c.page_count % seg != 0 {
        return Err(BsError::corrupt(
            "superblock",
            "checkpoint is not segment aligned",
        ));
    }
    let ck_len = usize::try_from(c.len)
        .map_err(|_| BsError::corrupt("superblock", "checkpoint too large"))?;
    let ck_buf = blocking::read(
        ch,
        c.first_page * PAGE,
        (ck_len.div_ceil(MD_PAGE_SIZE).max(1)) * MD_PAGE_SIZE,
    )?;
    let checkpoint = Checkpoint::decode_checked(&ck_buf[..ck_len], c.crc)
        .map_err(|e| BsError::from_decode(e, c.first_page))?;
    if checkpoint.store_id != sb.store_id {
        return Err(BsError::corrupt(
            "checkpoint",
            "store id differs from the superblock's",
        ));
    }
    let ck_segs: BTreeSet<u64> = ((c.first_page - sb.md_first_page) / seg
        ..(c.first_page - sb.md_first_page + c.page_count) / seg)
        .collect();
    let mut log = Vec::new();
    let mut seg_page = sb.log_first_page;
    let mut seq = sb.log_first_seq;
    let mut log_segments = vec![(seg_page - sb.md_first_page) / seg];
    if ck_segs.contains(&log_segments[0]) {
        return Err(BsError::corrupt(
            "superblock",
            "log starts inside the checkpoint",
        ));
    }
    let seg_bytes = seg * PAGE;
    let packed = sb.incompat & INCOMPAT_PACKED_LOG != 0;
    // `off`: bytes from the start of the segment at md page `seg_page`.
    let (tail_offset, stop_reason) = 'outer: loop {
        let data = blocking::read(ch, seg_page * PAGE, seg_bytes as usize)?;
        let mut off = 0u64;
        loop {
            let at = seg_page * PAGE + off;
            let page = at / PAGE;
            if off >= seg_bytes {
                break 'outer (at, "segment full without a link".to_string());
            }
            let (h, payload) = match record::decode_record(&data[off as usize..]) {
                Ok(x) => x,
                Err(e) => break 'outer (at, e.to_string()),
            };
            if h.store_id != sb.store_id || h.epoch != sb.generation || h.seq != seq {
                break 'outer (
                    at,
                    format!(
                        "a stale record follows (epoch {} seq {}; epoch {} seq {seq} would \
                         continue the log)",
                        h.epoch, h.seq, sb.generation
                    ),
                );
            }
            seq += 1;
            match h.kind {
                RecordKind::Txn => {
                    let mutations =
                        record::decode_txn(payload).map_err(|e| BsError::from_decode(e, page))?;
                    let mut skipped = None;
                    for m in &mutations {
                        if let Mutation::CheckData(c) = m {
                            if let Some(why) = verify_check(ch, &sb, &mutations, c)? {
                                skipped = Some(why);
                                break;
                            }
                        }
                    }
                    log.push(LogEntry {
                        page,
                        offset: at,
                        header: h,
                        mutations,
                        link: None,
                        skipped,
                    });
                    off += if packed {
                        h.packed_len()
                    } else {
                        h.pages() * PAGE
                    };
                }
                RecordKind::Link => {
                    let target =
                        record::decode_link(payload).map_err(|e| BsError::from_decode(e, page))?;
                    let ok = target >= sb.md_first_page
                        && target < sb.md_end_page()
                        && (target - sb.md_first_page) % seg == 0;
                    let tseg = target.wrapping_sub(sb.md_first_page) / seg;
                    if !ok || ck_segs.contains(&tseg) || log_segments.contains(&tseg) {
                        return Err(BsError::corrupt(
                            format!("log link at md page {page}"),
                            format!("bad target page {target}"),
                        ));
                    }
                    log.push(LogEntry {
                        page,
                        offset: at,
                        header: h,
                        mutations: Vec::new(),
                        link: Some(target),
                        skipped: None,
                    });
                    log_segments.push(tseg);
                    seg_page = target;
                    continue 'outer;
                }
            }
        }
    };
    Ok(Inspection {
        slots,
        current_slot: slot,
        superblock: sb,
        checkpoint,
        log,
        log_segments,
        tail_page: tail_offset / PAGE,
        tail_offset,
        packed,
        next_seq: seq,
        stop_reason,
    })
}

impl BlobStore {
    /// Formats `dev` as a new, empty blobstore. Blocks; durable on return.
    pub fn init(dev: Arc<dyn BlockDevice>, opts: InitOptions) -> Result<BlobStore> {
        let info = dev.info().clone();
        let bs = u64::from(info.block_size);
        if bs > PAGE || PAGE % bs != 0 {
            return Err(BsError::InvalidArgument(format!(
                "device block size {bs} must divide the 4096-byte md page"
            )));
        }
        let cs = opts.cluster_size;
        if !cs.is_power_of_two() || !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cs) {
            return Err(BsError::InvalidArgument(format!(
                "cluster size {cs} must be a power of two from 64 KiB to 256 MiB"
            )));
        }
        let seg = u64::from(opts.md_segment_pages);
        if seg < 2 {
            return Err(BsError::InvalidArgument(
                "md segments need at least 2 pages".into(),
            ));
        }
        let size = info.size_bytes();
        let est_clusters = size / cs;
        let md_pages = opts
            .md_pages
            .unwrap_or_else(|| (est_clusters / 8).max(8 * seg))
            .div_ceil(seg)
            * seg;
        if md_pages < 4 * seg {
            return Err(BsError::InvalidArgument(format!(
                "md region of {md_pages} pages: at least 4 segments are needed"
            )));
        }
        let md_end = (2 + md_pages)
            .checked_mul(PAGE)
            .ok_or_else(|| BsError::InvalidArgument("md region too large".into()))?;
        let data_first = md_end.div_ceil(cs) * cs;
        let total = size.saturating_sub(data_first) / cs;
        if total == 0 {
            return Err(BsError::DeviceTooSmall(format!(
                "{size} bytes hold no data cluster after a {md_pages}-page md region"
            )));
        }
        let store_id = random_u64();
        let ck = Checkpoint {
            store_id,
            next_blob_id: 1,
            super_blob: None,
            blobs: Vec::new(),
        };
        let ck_bytes = ck
            .encode()
            .map_err(|e| BsError::corrupt("checkpoint", e.to_string()))?;
        let sb = Superblock {
            version: FORMAT_VERSION,
            compat: 0,
            ro_compat: 0,
            incompat: INCOMPAT_CHECKED_DATA | INCOMPAT_PACKED_LOG | INCOMPAT_INLINE_DATA,
            bstype: opts.bstype,
            store_id,
            generation: 1,
            md_page_size: MD_PAGE_SIZE as u32,
            io_unit: info.block_size,
            cluster_size: cs,
            device_size: size,
            md_first_page: 2,
            md_page_count: md_pages,
            md_segment_pages: opts.md_segment_pages,
            data_first_byte: data_first,
            data_cluster_count: total,
            checkpoint: CheckpointRef {
                first_page: 2,
                page_count: seg,
                len: ck_bytes.len() as u64,
                crc: oxblob_format::crc32c(&ck_bytes),
            },
            log_first_page: 2 + seg,
            log_first_seq: 1,
        };
        let sb_page = sb
            .encode()
            .map_err(|e| BsError::InvalidArgument(e.to_string()))?;
        let mut ch = dev.channel()?;
        let mut ck_page = ck_bytes.clone();
        ck_page.resize(ck_bytes.len().div_ceil(MD_PAGE_SIZE) * MD_PAGE_SIZE, 0);
        blocking::write_slice(ch.as_mut(), PAGE, &[0u8; MD_PAGE_SIZE])?;
        blocking::write_slice(ch.as_mut(), 2 * PAGE, &ck_page)?;
        // The first log segment must not hold a valid-looking record of an earlier store with
        // the same id (ids are random, so this only costs one page).
        blocking::write_slice(ch.as_mut(), (2 + seg) * PAGE, &[0u8; MD_PAGE_SIZE])?;
        blocking::flush(ch.as_mut())?;
        blocking::write_slice(ch.as_mut(), 0, &sb_page)?;
        blocking::flush(ch.as_mut())?;
        drop(ch);
        Self::load(
            dev,
            LoadOptions {
                bstype: opts.bstype,
                read_only: false,
            },
        )
    }

    /// Loads the store on `dev`, clean or after a crash: superblocks, checkpoint, then the log
    /// (one read per segment). A writable load then starts a new log epoch: it writes a
    /// checkpoint if the log held records, else only a new superblock (one page + flush).
    pub fn load(dev: Arc<dyn BlockDevice>, opts: LoadOptions) -> Result<BlobStore> {
        let mut ch = dev.channel()?;
        let mut ins = inspect_with(ch.as_mut(), dev.info().size_bytes())?;
        let sb = ins.superblock.clone();
        if sb.unknown_incompat() != 0 {
            return Err(BsError::UnknownFeature {
                bits: sb.unknown_incompat(),
            });
        }
        if opts.bstype != [0; 16] && opts.bstype != sb.bstype {
            return Err(BsError::WrongType {
                expected: opts.bstype,
                found: sb.bstype,
            });
        }
        let info = dev.info();
        if info.size_bytes() < sb.device_size {
            return Err(BsError::DeviceTooSmall(format!(
                "device has {} bytes, the store was made on {}",
                info.size_bytes(),
                sb.device_size
            )));
        }
        if u64::from(info.block_size) > u64::from(sb.io_unit) || info.block_size > 4096 {
            return Err(BsError::InvalidArgument(format!(
                "device block size {} exceeds the store's io unit {}",
                info.block_size, sb.io_unit
            )));
        }
        let read_only = opts.read_only || sb.unknown_ro_compat() != 0;
        // Replay.
        // The checkpoint's records are sorted by id, so this builds the map in one pass.
        let mut map: BTreeMap<u64, Arc<BlobRecord>> = std::mem::take(&mut ins.checkpoint.blobs)
            .into_iter()
            .map(|r| (r.id, Arc::new(r)))
            .collect();
        let mut next_id = ins.checkpoint.next_blob_id;
        let mut sup = ins.checkpoint.super_blob;
        let mut log_records = 0u64;
        let log_empty = ins.log.is_empty();
        // Inline data of the log, in log order (later bytes win).
        let mut overlay = Overlay::default();
        for e in std::mem::take(&mut ins.log) {
            if e.link.is_some() {
                continue;
            }
            log_records += 1;
            if e.skipped.is_some() {
                continue;
            }
            for m in e.mutations {
                match m {
                    Mutation::PutBlob(r) => {
                        map.insert(r.id, r);
                    }
                    Mutation::DeleteBlob(id) => {
                        if map.remove(&id).is_none() {
                            return Err(BsError::corrupt(
                                format!("log record at md page {}", e.page),
                                format!("deletes unknown blob {id:#x}"),
                            ));
                        }
                        overlay.remove_blob(id);
                    }
                    Mutation::SetSuperBlob(s) => sup = s,
                    Mutation::SetNextId(n) => next_id = next_id.max(n),
                    Mutation::CheckData(_) => {}
                    Mutation::WriteData(w) => overlay.insert(w.blob, w.offset, &w.data),
                }
            }
        }
        if next_id > COUNTER_LIMIT {
            return Err(BsError::corrupt(
                "checkpoint or log",
                format!("next_blob_id {next_id} beyond {COUNTER_LIMIT}"),
            ));
        }
        // Derive the allocation and check cross-blob invariants.
        let mut alloc = Allocator::new(sb.data_cluster_count);
        for r in map.values() {
            if check_blob_size(r.num_clusters, sb.cluster_size).is_err() {
                return Err(BsError::corrupt(
                    format!("blob {:#x}", r.id),
                    format!("{} clusters overflow a 64-bit size", r.num_clusters),
                ));
            }
            if r.id >= next_id {
                return Err(BsError::corrupt(
                    format!("blob {:#x}", r.id),
                    "id not below next_blob_id",
                ));
            }
            if r.parent != 0 && !map.contains_key(&r.parent) {
                return Err(BsError::corrupt(
                    format!("blob {:#x}", r.id),
                    format!("parent {:#x} missing", r.parent),
                ));
            }
            for c in clusters_of(r) {
                if !alloc.claim(c) {
                    return Err(BsError::corrupt(
                        format!("blob {:#x}", r.id),
                        format!("cluster {c} is outside the data region or owned twice"),
                    ));
                }
            }
        }
        if let Some(s) = sup {
            if !map.contains_key(&s) {
                return Err(BsError::corrupt("super blob", format!("{s:#x} missing")));
            }
        }
        let seg = u64::from(sb.md_segment_pages);
        let ck_first_seg = (sb.checkpoint.first_page - sb.md_first_page) / seg;
        let ckpt_segments: Vec<u64> =
            (ck_first_seg..ck_first_seg + sb.checkpoint.page_count / seg).collect();
        let total_segs = sb.md_page_count / seg;
        let log_set: BTreeSet<u64> = ins.log_segments.iter().copied().collect();
        let ckpt_range = ck_first_seg..ck_first_seg + sb.checkpoint.page_count / seg;
        let free_segments: BTreeSet<u64> = (0..total_segs)
            .filter(|s| !ckpt_range.contains(s) && !log_set.contains(s))
            .collect();
        let tail_seg = *ins.log_segments.last().unwrap_or(&0);
        let geo = Geometry {
            cluster_size: sb.cluster_size,
            io_unit: u64::from(info.block_size),
            data_first_byte: sb.data_first_byte,
            total_clusters: sb.data_cluster_count,
        };
        let md = MdState {
            ch,
            slot: ins.current_slot as u64,
            log_segments: ins.log_segments.clone(),
            tail: ins.tail_offset,
            seg_end: (sb.md_first_page + (tail_seg + 1) * seg) * PAGE,
            tail_head: Vec::new(),
            tail_next: Vec::new(),
            txn_buf: Vec::new(),
            next_seq: ins.next_seq,
            log_records,
            ckpt_segments,
            free_segments,
            held_segments: Vec::new(),
            next_blob_id: next_id,
            super_blob: sup,
            alloc,
            data_unflushed: false,
            piggyback: Vec::new(),
            data_ticket: 0,
            pending_free: Vec::new(),
            last_ticket: 0,
            group: Arc::new(crate::md::FlushGroup::new()),
            quarantine: Vec::new(),
            needs_checkpoint: false,
            clones: crate::md::clone_index(map.values().map(|r| &**r)),
            ckpt_buf: Vec::new(),
            pending_blobs: BTreeSet::new(),
            pending_bytes: 0,
            sb,
        };
        let mut pending = overlay.into_blobs();
        let mut md = md;
        let blobs = map
            .into_iter()
            .map(|(id, r)| {
                let e = BlobEntry::new(r);
                if let Some(p) = pending.remove(&id).filter(|p| !p.is_empty()) {
                    md.pending_blobs.insert(id);
                    md.pending_bytes += p.bytes();
                    *e.write().pending_mut() = p;
                }
                (id, Arc::new(e))
            })
            .collect();
        let group = Arc::clone(&md.group);
        let inner = Arc::new(Inner {
            dev,
            geo,
            group,
            md: Mutex::new(md),
            blobs: RwLock::new(blobs),
            unloaded: AtomicBool::new(false),
            read_only,
        });
        if !read_only {
            let mut md = inner.md()?;
            // The new superblock this load writes (checkpoint or epoch) announces checked
            // records, inline data and a packed log, which this build writes from now on (the
            // old log, if any, is folded into the checkpoint first, and its inline data
            // settled in place before that checkpoint's flush).
            md.sb.incompat |= INCOMPAT_CHECKED_DATA | INCOMPAT_PACKED_LOG | INCOMPAT_INLINE_DATA;
            if !log_empty {
                md.checkpoint(&inner, None).map_err(|e| e.error)?;
            } else {
                new_epoch(&mut md)?;
            }
        }
        Ok(BlobStore { inner })
    }

    /// Syncs every dirty blob, writes a checkpoint (so the next load reads an empty log) and
    /// flushes. Afterwards every call on this store (and its blobs) returns `Unloaded`.
    pub fn unload(&self) -> Result<()> {
        if self.inner.read_only {
            let _g = self.inner.md()?;
            self.inner.unloaded.store(true, Ordering::Release);
            return Ok(());
        }
        let mut md = self.inner.md()?;
        let dirty: Vec<Arc<BlobRecord>> = self
            .inner
            .blobs_read()
            .values()
            .filter_map(|e| {
                let st = e.read();
                st.dirty.then(|| Arc::clone(&st.current))
            })
            .collect();
        let muts: Vec<Mutation> = dirty.into_iter().map(Mutation::PutBlob).collect();
        if !muts.is_empty() {
            // One checkpoint carries every dirty blob.
            md.checkpoint(&self.inner, Some(&muts))
                .map_err(|e| e.error)?;
            crate::md::apply(&mut md, &self.inner, &muts, true);
        } else {
            md.checkpoint(&self.inner, None).map_err(|e| e.error)?;
        }
        md.flush()?;
        self.inner.unloaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Wipes both superblock slots (the device is no longer a blobstore) and flushes.
    pub fn destroy(self) -> Result<()> {
        if self.inner.read_only {
            return Err(BsError::ReadOnly);
        }
        let mut md = self.inner.md()?;
        blocking::write_slice(md.ch.as_mut(), 0, &[0u8; 2 * MD_PAGE_SIZE])?;
        md.flush()?;
        self.inner.unloaded.store(true, Ordering::Release);
        Ok(())
    }

    /// The device under the store.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.inner.dev
    }

    /// True when loaded read-only (by request or because of unknown ro_compat features).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Clusters in the data region.
    pub fn total_clusters(&self) -> u64 {
        self.inner.geo.total_clusters
    }

    /// Clusters neither owned by a blob nor waiting for the record that freed them to be
    /// durable.
    pub fn free_clusters(&self) -> Result<u64> {
        Ok(self.inner.md()?.alloc.free())
    }

    /// How much of the metadata region the state takes, against the most it may grow to.
    pub fn md_usage(&self) -> Result<MdUsage> {
        let md = self.inner.md()?;
        Ok(MdUsage {
            state_bytes: md.state_bound(),
            limit_bytes: md.state_limit(),
            region_bytes: md.sb.md_page_count * PAGE,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.inner.geo.cluster_size
    }

    /// The io unit (device block size): blob data I/O offsets and lengths are multiples of it.
    pub fn io_unit(&self) -> u64 {
        self.inner.geo.io_unit
    }

    /// The current superblock, as last written.
    pub fn superblock(&self) -> Result<Superblock> {
        Ok(self.inner.md()?.sb.clone())
    }

    /// Sets the application's root blob. Durable on return.
    pub fn set_super_blob(&self, id: Option<u64>) -> Result<()> {
        let md = self.inner.md_writable()?;
        if let Some(id) = id {
            self.inner.entry(id)?;
        }
        drop(md);
        self.inner.commit_durable(&[Mutation::SetSuperBlob(id)])
    }

    /// Makes every record written so far (deferred commits included) and every data write
    /// that completed before the call durable: one device flush, shared with concurrent
    /// callers of `flush`, `sync_md` and durable commits (group commit). Blocks.
    pub fn flush(&self) -> Result<()> {
        if self.inner.is_unloaded() {
            return Err(BsError::Unloaded);
        }
        if self.inner.read_only {
            return Ok(());
        }
        let t = self.inner.group.ticket();
        self.inner.wait_durable(t)
    }

    /// Device flushes this store has submitted since it was loaded (for tests and
    /// measurements: a durable commit with no new cluster costs exactly one).
    pub fn device_flushes(&self) -> u64 {
        self.inner.group.flush_count()
    }

    /// The application's root blob.
    pub fn super_blob(&self) -> Result<Option<u64>> {
        Ok(self.inner.md()?.super_blob)
    }

    /// Creates a blob. Thick blobs get their clusters allocated and zeroed. Durable on return;
    /// blocks for the zeroing, the record and two flushes.
    pub fn create_blob(&self, opts: CreateOptions) -> Result<u64> {
        let mut t = self.begin();
        let id = t.create(opts)?;
        t.commit()?;
        Ok(id)
    }

    /// Opens a blob (no I/O). Each handle counts as one opener until closed or dropped.
    pub fn open_blob(&self, id: u64) -> Result<Blob> {
        let _md = self.inner.md()?;
        let e = self.inner.entry(id)?;
        e.write().open += 1;
        Ok(Blob::new(Arc::clone(&self.inner), id, e))
    }

    /// Deletes a closed blob. Durable on return. Refuses an open blob (`BlobOpen`). A
    /// snapshot with exactly one clone is merged into it (the clone takes the clusters it lacks
    /// and the snapshot's parent, in the same record); with more clones: `HasClones`.
    pub fn delete_blob(&self, id: u64) -> Result<()> {
        if self.delete_merging(id)? {
            return Ok(());
        }
        let mut t = self.begin();
        t.delete(id);
        t.commit()
    }

    /// Every blob's id, size, flags and user xattrs, without opening anything. Sorted by id.
    pub fn blobs(&self) -> Result<Vec<BlobInfo>> {
        let _md = self.inner.md()?;
        let mut v: Vec<BlobInfo> = self
            .inner
            .blobs_read()
            .iter()
            .map(|(id, e)| {
                let st = e.read();
                let r = &st.current;
                let mut xattrs: Vec<(String, Vec<u8>)> = r
                    .xattrs
                    .iter()
                    .filter(|x| !x.internal)
                    .map(|x| (x.name.to_string(), x.value.to_vec()))
                    .collect();
                xattrs.sort();
                BlobInfo {
                    id,
                    num_clusters: r.num_clusters,
                    allocated_clusters: r.allocated_clusters(),
                    flags: r.flags,
                    parent: r.parent,
                    xattrs,
                }
            })
            .collect();
        v.sort_by_key(|b| b.id);
        Ok(v)
    }

    /// Visits every blob's in-memory record in id order, by reference: nothing is copied and
    /// no blob is opened. `f` runs under the metadata mutex and the blob table's read lock
    /// (it must not call back into the store); it returns [`ControlFlow::Break`] to stop
    /// early. The record's xattrs include internal ones (`XattrRef::internal`). This is the
    /// cheap form of [`BlobStore::blobs`] for a caller that decodes a few xattrs of every
    /// blob (a file system's mount).
    pub fn for_each_blob(&self, mut f: impl FnMut(&BlobRecord) -> ControlFlow<()>) -> Result<()> {
        let _md = self.inner.md()?;
        for e in self.inner.blobs_read().values() {
            if f(&e.read().current).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The number of blobs (no blob is opened).
    pub fn blob_count(&self) -> Result<usize> {
        let _md = self.inner.md()?;
        Ok(self.inner.blobs_read().len())
    }

    /// The allocated clusters of blob `id` from its in-memory record, without opening it
    /// (what [`Blob::allocated_clusters`] reports). Errors: `NotFound`, `Unloaded`.
    pub fn allocated_clusters(&self, id: u64) -> Result<u64> {
        if self.inner.is_unloaded() {
            return Err(BsError::Unloaded);
        }
        Ok(self.inner.entry(id)?.read().current.allocated_clusters())
    }

    /// Starts a multi-blob transaction: creates, deletes and xattr changes on several blobs,
    /// committed as one record by [`Txn::commit`].
    pub fn begin(&self) -> Txn {
        Txn {
            store: self.clone(),
            ops: Vec::new(),
            reserved: Vec::new(),
        }
    }

    /// Runs `f` on a new transaction and commits it. Returns `f`'s value.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut Txn) -> Result<T>) -> Result<T> {
        self.transaction_with(Durability::Durable, f)
    }

    /// Runs `f` on a new transaction and commits it durably ([`Txn::commit`]) or deferred
    /// ([`Txn::commit_deferred`]). Returns `f`'s value.
    pub fn transaction_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&mut Txn) -> Result<T>,
    ) -> Result<T> {
        let mut t = self.begin();
        let v = f(&mut t)?;
        t.commit_with(durability)?;
        Ok(v)
    }
}

/// Writes a new superblock generation that keeps the checkpoint and starts a fresh log (the
/// writable load of a store whose log is empty).
fn new_epoch(md: &mut MdState) -> Result<()> {
    let mut sb = md.sb.clone();
    sb.generation += 1;
    sb.log_first_seq = md.next_seq;
    let page = sb
        .encode()
        .map_err(|e| BsError::corrupt("superblock", e.to_string()))?;
    let other = 1 - md.slot;
    md.write_pages(other, &page)?;
    md.flush()?;
    md.group
        .log_generation
        .store(sb.generation, std::sync::atomic::Ordering::Release);
    md.sb = sb;
    md.slot = other;
    md.set_tail_page(md.sb.log_first_page);
    Ok(())
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.write_usize(&h as *const _ as usize);
    h.finish() | 1
}

enum TxnOp {
    Create(u64, CreateOptions),
    Delete(u64),
    SetXattr(u64, String, Vec<u8>, bool),
    RemoveXattr(u64, String, bool),
    SetSuperBlob(Option<u64>),
}

/// A multi-blob transaction: every change is committed in one log record (all or nothing) and
/// is durable when [`Txn::commit`] returns. Nothing happens until then. Validation errors (a
/// missing blob, an open blob to delete, a read-only blob, no space) abort the whole
/// transaction with nothing changed.
pub struct Txn {
    store: BlobStore,
    ops: Vec<TxnOp>,
    reserved: Vec<u64>,
}

impl Txn {
    /// Creates a blob in this transaction; its id is reserved now (ids are never reused, so an
    /// abandoned transaction only skips ids).
    pub fn create(&mut self, opts: CreateOptions) -> Result<u64> {
        for (n, v) in &opts.xattrs {
            check_xattr(n, v)?;
        }
        check_blob_size(opts.num_clusters, self.store.inner.geo.cluster_size)?;
        let mut md = self.store.inner.md_writable()?;
        let id = md.next_blob_id;
        md.next_blob_id += 1;
        self.reserved.push(id);
        self.ops.push(TxnOp::Create(id, opts));
        Ok(id)
    }

    /// Deletes a blob (it must be closed and have no clones).
    pub fn delete(&mut self, id: u64) {
        self.ops.push(TxnOp::Delete(id));
    }

    /// Sets a user xattr of a blob.
    pub fn set_xattr(&mut self, id: u64, name: &str, value: &[u8]) {
        self.ops
            .push(TxnOp::SetXattr(id, name.to_string(), value.to_vec(), false));
    }

    /// Removes a user xattr of a blob (absent is not an error).
    pub fn remove_xattr(&mut self, id: u64, name: &str) {
        self.ops
            .push(TxnOp::RemoveXattr(id, name.to_string(), false));
    }

    /// Sets an internal xattr (not listed with user xattrs).
    pub fn set_internal_xattr(&mut self, id: u64, name: &str, value: &[u8]) {
        self.ops
            .push(TxnOp::SetXattr(id, name.to_string(), value.to_vec(), true));
    }

    /// Sets the super blob.
    pub fn set_super_blob(&mut self, id: Option<u64>) {
        self.ops.push(TxnOp::SetSuperBlob(id));
    }

    /// Validates and commits every change as one record, then flushes (one device flush,
    /// shared with concurrent committers; two if the transaction zeroed new clusters, which
    /// must be durable before the record). Blocks.
    pub fn commit(self) -> Result<()> {
        self.commit_with(Durability::Durable)
    }

    /// Validates and commits every change as one record **without** flushing: the change is
    /// applied and visible at once, and becomes durable with the next flush of the store
    /// ([`BlobStore::flush`], `sync_md`, or any durable commit). After a crash before that,
    /// the log keeps a prefix of the records in commit order: this transaction is then
    /// entirely present or entirely absent, and absent if any earlier record is. A transaction
    /// that zeroes new clusters still flushes them before the record is written.
    pub fn commit_deferred(self) -> Result<()> {
        self.commit_with(Durability::Deferred)
    }

    fn commit_with(self, durability: Durability) -> Result<()> {
        let Txn {
            store,
            ops,
            reserved,
        } = self;
        let inner = store.inner;
        let mut md = inner.md_writable()?;
        // The new state of every touched blob: None = deleted in this transaction. A blob's
        // current record is shared until an op changes it (`Arc::make_mut` copies it then), so
        // nothing here touches the blob's in-memory state before the commit succeeds.
        let mut work: BTreeMap<u64, Option<Arc<BlobRecord>>> = BTreeMap::new();
        let mut runs_new: Vec<(u64, u64)> = Vec::new();
        let mut sup: Option<Option<u64>> = None;
        let result = (|| -> Result<()> {
            // The ops are consumed: a new blob's xattrs move into its record.
            for op in ops {
                match op {
                    TxnOp::Create(id, o) => {
                        let runs = if o.thin {
                            Vec::new()
                        } else {
                            inner.alloc_zeroed(&mut md, o.num_clusters)?
                        };
                        runs_new.extend(&runs);
                        let mut r = BlobRecord {
                            id,
                            flags: if o.thin { FLAG_THIN } else { 0 },
                            num_clusters: o.num_clusters,
                            xattrs: Xattrs::with_capacity(
                                o.xattrs.iter().map(|(n, v)| 6 + n.len() + v.len()).sum(),
                            ),
                            ..Default::default()
                        };
                        map_runs(&mut r.extents, 0, &runs);
                        // Names and values were checked by `Txn::create`.
                        for (n, v) in &o.xattrs {
                            put_xattr(&mut r, n, v, false)?;
                        }
                        work.insert(id, Some(Arc::new(r)));
                    }
                    TxnOp::Delete(id) => {
                        load_work(&inner, &mut work, id)?;
                        if let Ok(e) = inner.entry(id) {
                            if e.read().open > 0 {
                                return Err(BsError::BlobOpen(id));
                            }
                        }
                        let has_clone = md
                            .clones
                            .get(&id)
                            .is_some_and(|c| c.iter().any(|&cid| cid != id))
                            || work
                                .values()
                                .flatten()
                                .any(|r| r.parent == id && r.id != id);
                        if has_clone {
                            return Err(BsError::HasClones(id));
                        }
                        work.insert(id, None);
                        if md.super_blob == Some(id) && sup.is_none() {
                            sup = Some(None);
                        }
                    }
                    TxnOp::SetXattr(id, n, v, internal) => {
                        check_xattr(&n, &v)?;
                        let r = load_work(&inner, &mut work, id)?;
                        if r.is_read_only() {
                            return Err(BsError::ReadOnly);
                        }
                        put_xattr(Arc::make_mut(r), &n, &v, internal)?;
                    }
                    TxnOp::RemoveXattr(id, n, internal) => {
                        let r = load_work(&inner, &mut work, id)?;
                        if r.is_read_only() {
                            return Err(BsError::ReadOnly);
                        }
                        del_xattr(Arc::make_mut(r), &n, internal);
                    }
                    TxnOp::SetSuperBlob(s) => {
                        if let Some(s) = s {
                            let exists = match work.get(&s) {
                                Some(w) => w.is_some(),
                                None => inner.entry(s).is_ok(),
                            };
                            if !exists {
                                return Err(BsError::NotFound(s));
                            }
                        }
                        sup = Some(s);
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            release_runs(&mut md, &runs_new);
            return Err(e);
        }
        let mut muts = Vec::with_capacity(work.len() + 2);
        {
            let blobs = inner.blobs_read();
            for (id, w) in work {
                match w {
                    // The working record itself: the commit shares it, copying nothing.
                    Some(r) => muts.push(Mutation::PutBlob(r)),
                    None if blobs.contains(id) => muts.push(Mutation::DeleteBlob(id)),
                    None => {
                        // Created and deleted in the same transaction: nothing to record.
                    }
                }
            }
        }
        // Clusters of blobs created and deleted here are not named by any record.
        let orphan: Vec<(u64, u64)> = if runs_new.is_empty() {
            Vec::new()
        } else {
            // As cluster ranges: the cost follows the extents, not the blobs' sizes.
            let named = merge_ranges(
                muts.iter()
                    .filter_map(|m| match m {
                        Mutation::PutBlob(r) => Some(r),
                        _ => None,
                    })
                    .flat_map(|r| ranges_of(r))
                    .collect(),
            );
            let new_runs = merge_ranges(runs_new.iter().map(|&(p, k)| (p, p + k)).collect());
            range_difference(new_runs, &named)
                .into_iter()
                .map(|(a, b)| (a, b - a))
                .collect()
        };
        if let Some(s) = sup {
            muts.push(Mutation::SetSuperBlob(s));
        }
        if let Some(&max) = reserved.iter().max() {
            muts.push(Mutation::SetNextId(max + 1));
        }
        if muts.is_empty() {
            release_runs(&mut md, &orphan);
            return Ok(());
        }
        match md.commit_apply(&inner, &muts, false) {
            Ok(durable) => {
                release_runs(&mut md, &orphan);
                if durable || durability == Durability::Deferred {
                    return Ok(());
                }
                let t = md.last_ticket;
                drop(md);
                inner.wait_durable(t)
            }
            Err(e) => {
                if e.maybe_written {
                    // The record may replay after a crash: keep its new clusters unused until
                    // a checkpoint makes it stale.
                    let q: Vec<u64> = runs_new.iter().flat_map(|&(p, k)| p..p + k).collect();
                    md.quarantine.extend(q);
                } else {
                    release_runs(&mut md, &runs_new);
                }
                Err(e.error)
            }
        }
    }
}

/// The working record of blob `id` in a transaction: at first the blob's current record,
/// shared (an op that changes it copies it with `Arc::make_mut`). `NotFound` if the blob does
/// not exist or the transaction deleted it.
fn load_work<'a>(
    inner: &Inner,
    work: &'a mut BTreeMap<u64, Option<Arc<BlobRecord>>>,
    id: u64,
) -> Result<&'a mut Arc<BlobRecord>> {
    if let std::collections::btree_map::Entry::Vacant(v) = work.entry(id) {
        // Under the table's read lock, without taking a reference to the entry itself.
        let r = match inner.blobs_read().get(id) {
            Some(e) => Arc::clone(&e.read().current),
            None => return Err(BsError::NotFound(id)),
        };
        v.insert(Some(r));
    }
    match work.get_mut(&id) {
        Some(Some(r)) => Ok(r),
        _ => Err(BsError::NotFound(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxblob_bdev::MallocDevice;

    fn store() -> BlobStore {
        let dev: Arc<dyn BlockDevice> = Arc::new(MallocDevice::new("t", 4096, 16384).unwrap());
        let opts = InitOptions {
            cluster_size: 64 << 10,
            md_pages: Some(256),
            md_segment_pages: 4,
            bstype: [0; 16],
        };
        BlobStore::init(dev, opts).unwrap()
    }

    /// (current, committed) of blob `id`.
    fn state(bs: &BlobStore, id: u64) -> (Arc<BlobRecord>, Arc<BlobRecord>) {
        let e = bs.inner.entry(id).unwrap();
        let st = e.read();
        (Arc::clone(&st.current), Arc::clone(&st.committed))
    }

    #[test]
    fn commits_share_the_record_and_changes_copy_it() {
        let bs = store();
        let id = bs
            .create_blob(CreateOptions {
                num_clusters: 1,
                ..Default::default()
            })
            .unwrap();
        let (cur, com) = state(&bs, id);
        assert!(Arc::ptr_eq(&cur, &com), "a clean blob holds one record");
        let created = Arc::clone(&com);

        // In-memory changes copy the record; the committed one stays as it was.
        let b = bs.open_blob(id).unwrap();
        b.set_xattr("k", b"v").unwrap();
        b.resize(3).unwrap();
        let (cur, com) = state(&bs, id);
        assert!(Arc::ptr_eq(&com, &created));
        assert_eq!((com.num_clusters, com.xattrs.len()), (1, 0));
        assert_eq!((cur.num_clusters, cur.xattrs.len()), (3, 1));

        // The commit keeps the very record it wrote as both states.
        b.sync_md().unwrap();
        let (cur2, com2) = state(&bs, id);
        assert!(Arc::ptr_eq(&cur2, &com2) && Arc::ptr_eq(&cur2, &cur));
        assert_eq!((created.num_clusters, created.xattrs.len()), (1, 0));

        // A transaction changes a copy, never the shared record in place.
        bs.transaction(|t| {
            t.set_xattr(id, "k", b"w");
            Ok(())
        })
        .unwrap();
        let (cur3, com3) = state(&bs, id);
        assert!(Arc::ptr_eq(&cur3, &com3) && !Arc::ptr_eq(&cur3, &cur2));
        assert_eq!(cur2.xattrs.get("k", false).unwrap_or_default(), b"v");
        assert_eq!(cur3.xattrs.get("k", false).unwrap_or_default(), b"w");

        // A failed transaction leaves both states untouched.
        let r = bs.transaction(|t| {
            t.set_xattr(id, "k", b"x");
            t.set_super_blob(Some(999));
            Ok(())
        });
        assert!(matches!(r, Err(BsError::NotFound(999))), "{r:?}");
        let (cur4, com4) = state(&bs, id);
        assert!(Arc::ptr_eq(&cur4, &cur3) && Arc::ptr_eq(&com4, &com3));
        assert_eq!(cur3.xattrs.get("k", false).unwrap_or_default(), b"w");
        b.close().unwrap();
    }
}
