//! `fsck`: checks a blobstore image and, on request, repairs what can be repaired.
//!
//! Everything is decoded with the library's own decoders: the superblock slots with
//! [`Superblock::decode`], the checkpoint and the live log with [`inspect`] (the same walk
//! [`BlobStore::load`] does), and pages beyond the end of the log with
//! [`oxblob_format::record::decode_record`]. There is no second parser.
//!
//! ## What is checked
//! 1. Both superblock slots: which decodes, which wins (highest generation). A damaged slot
//!    next to a valid one is a **warning** (the store still loads); no valid slot is an error.
//! 2. The checkpoint: the superblock pointer's CRC-32C and the decode.
//! 3. The live log: every record's header and payload CRC, store id, epoch and seq (done by
//!    [`inspect`]), and where the log ends. The end of the log is an **info** finding: after a
//!    crash a torn or unwritten record there is expected. But if a valid record of the *same*
//!    epoch with a *later* seq lies beyond the end (later in the tail segment, or at the head of
//!    an unused segment), the log was cut by damage in its middle and durable records are lost:
//!    an error ([`FindingKind::LogRecordLost`]). One case is ambiguous and is a warning: the
//!    record right after a lost Link at the head of another segment (a crash can drop an
//!    unflushed Link and keep the unflushed record after it).
//! 4. The replayed state: every extent inside the data region, no cluster owned twice, blob ids
//!    below `next_blob_id`, parents exist, no parent cycles, blobs with clones read-only, xattr
//!    sizes within limits, the super blob exists, and the live md space (checkpoint and log
//!    segments) inside the md region and not overlapping.
//!
//! ## Repair ([`FsckOptions::repair`])
//! Repair needs a valid superblock and checkpoint. It never touches data clusters.
//! - Replayed-state damage is fixed in the state, then written as a new checkpoint with a new
//!   superblock generation in the other slot: a cluster owned twice stays with the blob with the
//!   lower id and is unmapped from the others (they are marked thin and read zeroes, or their
//!   parent's data, there); an extent outside the data region is unmapped the same way;
//!   `next_blob_id` is raised above every blob id; a missing parent is cleared; a parent cycle
//!   is broken at its highest id; a blob with clones is made read-only; an oversized xattr is
//!   dropped; a missing super blob is cleared; a delete of an unknown blob is skipped.
//! - Then the store is loaded writable and unloaded: this rewrites a clean checkpoint (a torn
//!   log tail is dropped, a fresh log is started in a new epoch) and rewrites the other slot
//!   (so a damaged slot becomes valid again).
//! - Records lost behind a damaged log record cannot be brought back: repair keeps the state
//!   up to the damage and says so.
//! - **Not repairable**: no valid superblock slot, a damaged checkpoint, a corrupt live log
//!   record whose CRCs verify (bad Link target, undecodable transaction), unknown incompatible
//!   features, a device smaller than the store. The report says so and
//!   [`FsckReport::is_clean`] stays false.
//!
//! ## Cost
//! Reads both slots, the checkpoint, the log (one read per segment), the rest of the tail
//! segment and the first page of every unused md segment; no data cluster.

use crate::error::{BsError, Result};
use crate::md::PAGE;
use crate::store::{inspect, BlobStore, Inspection, LoadOptions};
use oxblob_bdev::{blocking, BlockDevice, IoChannel};
use oxblob_format::blob::{FLAG_READ_ONLY, FLAG_THIN};
use oxblob_format::record::{self, Mutation};
use oxblob_format::{BlobRecord, Checkpoint, CheckpointRef, Extent, Superblock, MD_PAGE_SIZE};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// Options of [`fsck`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FsckOptions {
    /// Repair what can be repaired (writes to the device), then check again.
    pub repair: bool,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Expected state worth knowing (the end of the log after a crash).
    Info,
    /// Redundancy lost or something odd; the store loads and nothing is lost.
    Warning,
    /// Damage: the store does not load, or loads with something lost or wrong.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// What a finding is about. Tests match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Neither slot carries the superblock magic.
    NotABlobstore,
    /// One superblock slot does not decode (the other is current).
    SuperblockSlotInvalid,
    /// No superblock slot decodes.
    NoValidSuperblock,
    /// The superblock sets feature bits this build does not know.
    UnknownFeature,
    /// The device is smaller than the store.
    DeviceTooSmall,
    /// The checkpoint fails its checksum, does not decode, or belongs to another store.
    CheckpointInvalid,
    /// The superblock or the live log is inconsistent in a way the load rejects (a record whose
    /// CRCs verify but whose content is invalid, a bad Link, misaligned pointers).
    MetadataInvalid,
    /// Where the log ends and why (informational).
    LogEnd,
    /// A log record is skipped because its data check failed: it was written with its data
    /// by an fsync that a crash interrupted, and never acknowledged (informational).
    SkippedRecord,
    /// The log stops at a damaged record, but durable records of the same epoch follow it.
    LogRecordLost,
    /// A log record deletes a blob that does not exist.
    DeleteOfUnknownBlob,
    /// An extent maps clusters outside the data region.
    ExtentOutsideData,
    /// A cluster is mapped by two blobs (or twice by one).
    ClusterOwnedTwice,
    /// A blob id is not below `next_blob_id`.
    BlobIdNotBelowNextId,
    /// A blob's parent does not exist.
    ParentMissing,
    /// Parent links form a cycle.
    ParentCycle,
    /// A blob with clones is not read-only.
    ParentNotReadOnly,
    /// The super blob does not exist.
    SuperBlobMissing,
    /// Live md pages (checkpoint, log) lie outside the md region.
    MdSpaceOutsideRegion,
    /// Live md segments overlap.
    MdSpaceOverlap,
}

impl FindingKind {
    /// Damage that [`fsck`] cannot repair.
    pub fn is_repairable(self) -> bool {
        !matches!(
            self,
            FindingKind::NotABlobstore
                | FindingKind::NoValidSuperblock
                | FindingKind::UnknownFeature
                | FindingKind::DeviceTooSmall
                | FindingKind::CheckpointInvalid
                | FindingKind::MetadataInvalid
        )
    }
}

/// One problem (or fact) found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What kind.
    pub kind: FindingKind,
    /// The blob concerned, if any.
    pub blob: Option<u64>,
    /// The absolute md page concerned, if any.
    pub page: Option<u64>,
    /// A readable explanation.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)
    }
}

/// Sizes and usage of the checked store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckCounts {
    /// Blobs in the replayed state.
    pub blobs: u64,
    /// Clusters in the data region.
    pub clusters_total: u64,
    /// Clusters mapped by some blob (each counted once).
    pub clusters_used: u64,
    /// Clusters mapped by no blob.
    pub clusters_free: u64,
    /// Pages of the md region.
    pub md_pages_total: u64,
    /// Live md pages: the checkpoint's segments plus the log's segments.
    pub md_pages_used: u64,
    /// Checkpoint payload bytes.
    pub checkpoint_bytes: u64,
    /// Blobs in the checkpoint.
    pub checkpoint_blobs: u64,
    /// Transaction records in the live log (Links not counted).
    pub log_records: u64,
    /// Segments of the live log.
    pub log_segments: u64,
}

/// The result of [`fsck`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsckReport {
    /// The current superblock slot (0 = A, 1 = B), if one is valid.
    pub current_slot: Option<usize>,
    /// Its generation.
    pub generation: Option<u64>,
    /// What the check found (before any repair), errors first.
    pub findings: Vec<Finding>,
    /// Counts of the checked state (after repair, when repaired).
    pub counts: FsckCounts,
    /// Whether a repair was asked for.
    pub repair_requested: bool,
    /// What the repair did, one line each (empty without repair).
    pub repairs: Vec<String>,
    /// Damage the repair could not fix, one line each.
    pub unrepaired: Vec<String>,
    /// Findings of the check run after a repair that wrote something.
    pub after_repair: Option<Vec<Finding>>,
}

impl FsckReport {
    /// Findings of `severity` in the initial check.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// True if the initial check found `kind`.
    pub fn has(&self, kind: FindingKind) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }

    /// The findings that describe the store now: the post-repair check if a repair wrote
    /// something, else the initial check.
    pub fn current_findings(&self) -> &[Finding] {
        self.after_repair.as_deref().unwrap_or(&self.findings)
    }

    /// True when the store now has no error finding (warnings and info are allowed) and
    /// nothing was left unrepaired.
    pub fn is_clean(&self) -> bool {
        self.unrepaired.is_empty()
            && !self
                .current_findings()
                .iter()
                .any(|f| f.severity == Severity::Error)
    }
}

impl fmt::Display for FsckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.current_slot, self.generation) {
            (Some(s), Some(g)) => writeln!(
                f,
                "superblock: slot {} current, generation {g}",
                if s == 0 { "A" } else { "B" }
            )?,
            _ => writeln!(f, "superblock: no valid slot")?,
        }
        let c = &self.counts;
        writeln!(
            f,
            "blobs: {}  clusters: {} used, {} free of {}  md pages: {} used of {}  \
             log: {} records in {} segments",
            c.blobs,
            c.clusters_used,
            c.clusters_free,
            c.clusters_total,
            c.md_pages_used,
            c.md_pages_total,
            c.log_records,
            c.log_segments
        )?;
        for x in &self.findings {
            writeln!(f, "{x}")?;
        }
        for r in &self.repairs {
            writeln!(f, "repaired: {r}")?;
        }
        for r in &self.unrepaired {
            writeln!(f, "not repaired: {r}")?;
        }
        if let Some(after) = &self.after_repair {
            writeln!(f, "after repair:")?;
            for x in after {
                writeln!(f, "  {x}")?;
            }
        }
        let errors = self
            .current_findings()
            .iter()
            .filter(|x| x.severity == Severity::Error)
            .count();
        let warnings = self
            .current_findings()
            .iter()
            .filter(|x| x.severity == Severity::Warning)
            .count();
        if self.is_clean() {
            write!(f, "clean ({warnings} warnings)")
        } else {
            write!(f, "DAMAGED: {errors} errors, {warnings} warnings")
        }
    }
}

/// Checks the blobstore on `dev` (and repairs it with `opts.repair`). Findings are in the
/// report; `Err` only when the device itself fails (or a repair write fails).
pub fn fsck(dev: &Arc<dyn BlockDevice>, opts: FsckOptions) -> Result<FsckReport> {
    let first = check(dev.as_ref())?;
    let mut report = first.report.clone();
    report.repair_requested = opts.repair;
    if !opts.repair {
        return Ok(report);
    }
    let blockers: Vec<&Finding> = first
        .report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error && !f.kind.is_repairable())
        .collect();
    if !blockers.is_empty() {
        report.unrepaired = blockers
            .iter()
            .map(|f| format!("{} (not repairable)", f.message))
            .collect();
        return Ok(report);
    }
    let (Some(ins), Some(fix)) = (first.inspection, first.fixed) else {
        report
            .unrepaired
            .push("the store could not be inspected".to_string());
        return Ok(report);
    };
    report.repairs.extend(fix.actions.iter().cloned());
    if !fix.actions.is_empty() {
        write_checkpoint(dev.as_ref(), &ins, &fix)?;
        report.repairs.push(format!(
            "wrote a checkpoint of the repaired state ({} blobs) under superblock generation {}",
            fix.blobs.len(),
            ins.superblock.generation + 1
        ));
    }
    let bs = BlobStore::load(Arc::clone(dev), LoadOptions::default())?;
    bs.unload()?;
    report.repairs.push(
        "loaded and unloaded the store: clean checkpoint, fresh log in a new epoch, both \
         superblock slots valid"
            .to_string(),
    );
    let again = check(dev.as_ref())?;
    report.counts = again.report.counts;
    report.current_slot = again.report.current_slot;
    report.generation = again.report.generation;
    report.after_repair = Some(again.report.findings);
    Ok(report)
}

/// The replayed state with every repairable violation fixed, and what was changed.
struct Fixed {
    blobs: BTreeMap<u64, BlobRecord>,
    /// The log's inline data (`WriteData`), which the repaired checkpoint drops the log of:
    /// written in place first.
    overlay: crate::overlay::Overlay,
    next_id: u64,
    super_blob: Option<u64>,
    actions: Vec<String>,
}

struct Checked {
    report: FsckReport,
    inspection: Option<Inspection>,
    fixed: Option<Fixed>,
}

fn finding(
    severity: Severity,
    kind: FindingKind,
    blob: Option<u64>,
    page: Option<u64>,
    message: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        kind,
        blob,
        page,
        message: message.into(),
    }
}

fn slot_name(i: usize) -> &'static str {
    if i == 0 {
        "A"
    } else {
        "B"
    }
}

fn check(dev: &dyn BlockDevice) -> Result<Checked> {
    let mut out = Checked {
        report: FsckReport::default(),
        inspection: None,
        fixed: None,
    };
    let f = &mut out.report.findings;
    if dev.info().size_bytes() < 2 * PAGE {
        f.push(finding(
            Severity::Error,
            FindingKind::NotABlobstore,
            None,
            None,
            format!(
                "not an oxblob blobstore: the device has only {} bytes",
                dev.info().size_bytes()
            ),
        ));
        return Ok(out);
    }
    let mut ch = dev.channel()?;
    let pages = blocking::read(ch.as_mut(), 0, 2 * MD_PAGE_SIZE)?;
    let slots = [
        Superblock::decode(&pages[..MD_PAGE_SIZE]),
        Superblock::decode(&pages[MD_PAGE_SIZE..]),
    ];
    let magic = |i: usize| {
        pages[i * MD_PAGE_SIZE..i * MD_PAGE_SIZE + 8] == oxblob_format::superblock::SUPERBLOCK_MAGIC
    };
    if !magic(0) && !magic(1) {
        f.push(finding(
            Severity::Error,
            FindingKind::NotABlobstore,
            None,
            Some(0),
            "not an oxblob blobstore: neither superblock slot carries the magic",
        ));
        return Ok(out);
    }
    let valid = slots.iter().filter(|s| s.is_ok()).count();
    for (i, s) in slots.iter().enumerate() {
        if let Err(e) = s {
            let sev = if valid > 0 {
                Severity::Warning
            } else {
                Severity::Error
            };
            let tail = if valid > 0 {
                "; the other slot is current, the store loads (repair rewrites this slot)"
            } else {
                ""
            };
            f.push(finding(
                sev,
                FindingKind::SuperblockSlotInvalid,
                None,
                Some(i as u64),
                format!("superblock slot {} (page {i}): {e}{tail}", slot_name(i)),
            ));
        }
    }
    if valid == 0 {
        f.push(finding(
            Severity::Error,
            FindingKind::NoValidSuperblock,
            None,
            None,
            "no valid superblock slot: the store cannot be loaded",
        ));
        return Ok(out);
    }
    let ins = match inspect(dev) {
        Ok(ins) => ins,
        Err(BsError::Io(e)) => return Err(BsError::Io(e)),
        Err(BsError::DeviceTooSmall(_)) => {
            // Nothing past the superblock is read from a device smaller than the store.
            if let Some(sb) = slots
                .iter()
                .filter_map(|s| s.as_ref().ok())
                .max_by_key(|s| s.generation)
            {
                check_superblock(dev, sb, f);
            }
            return Ok(out);
        }
        Err(e) => {
            classify_inspect_error(ch.as_mut(), &slots, e, f)?;
            return Ok(out);
        }
    };
    out.report.current_slot = Some(ins.current_slot);
    out.report.generation = Some(ins.superblock.generation);
    check_superblock(dev, &ins.superblock, f);
    check_log_end(ch.as_mut(), &ins, f)?;
    let fixed = check_state(&ins, &mut out.report);
    out.report
        .findings
        .sort_by_key(|f| std::cmp::Reverse(f.severity));
    out.inspection = Some(ins);
    out.fixed = Some(fixed);
    Ok(out)
}

/// `inspect` refused the store: find out whether the checkpoint is at fault (decoding it
/// with the codec), else report the library's reason.
fn classify_inspect_error(
    ch: &mut dyn IoChannel,
    slots: &[std::result::Result<Superblock, oxblob_format::DecodeError>; 2],
    e: BsError,
    f: &mut Vec<Finding>,
) -> Result<()> {
    let best = slots
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .max_by_key(|s| s.generation);
    if let Some(sb) = best {
        let c = sb.checkpoint;
        let len = usize::try_from(c.len).unwrap_or(usize::MAX);
        let pages = len.div_ceil(MD_PAGE_SIZE).max(1);
        if pages as u64 <= c.page_count {
            let buf = blocking::read(ch, c.first_page * PAGE, pages * MD_PAGE_SIZE)?;
            let problem = match Checkpoint::decode_checked(&buf[..len], c.crc) {
                Err(d) => Some(d.to_string()),
                Ok(ck) if ck.store_id != sb.store_id => {
                    Some("store id differs from the superblock's".to_string())
                }
                Ok(_) => None,
            };
            if let Some(p) = problem {
                f.push(finding(
                    Severity::Error,
                    FindingKind::CheckpointInvalid,
                    None,
                    Some(c.first_page),
                    format!(
                        "checkpoint at md pages {}..{} ({} bytes): {p}; the store cannot be \
                         loaded",
                        c.first_page,
                        c.first_page + c.page_count,
                        c.len
                    ),
                ));
                return Ok(());
            }
        }
    }
    f.push(finding(
        Severity::Error,
        FindingKind::MetadataInvalid,
        None,
        None,
        format!("{e}; the store cannot be loaded"),
    ));
    Ok(())
}

fn check_superblock(dev: &dyn BlockDevice, sb: &Superblock, f: &mut Vec<Finding>) {
    if sb.unknown_incompat() != 0 {
        f.push(finding(
            Severity::Error,
            FindingKind::UnknownFeature,
            None,
            None,
            format!(
                "unknown incompatible features {:#x}: this build cannot load the store",
                sb.unknown_incompat()
            ),
        ));
    }
    if sb.unknown_ro_compat() != 0 {
        f.push(finding(
            Severity::Warning,
            FindingKind::UnknownFeature,
            None,
            None,
            format!(
                "unknown read-only-compatible features {:#x}: loads read-only",
                sb.unknown_ro_compat()
            ),
        ));
    }
    let size = dev.info().size_bytes();
    if size < sb.device_size {
        f.push(finding(
            Severity::Error,
            FindingKind::DeviceTooSmall,
            None,
            None,
            format!(
                "device has {size} bytes, the store was made on {}",
                sb.device_size
            ),
        ));
    }
}

/// Reports where the log ends and looks beyond it for durable records that the damage cut
/// off: later pages of the tail segment, and the first page of every unused segment.
fn check_log_end(ch: &mut dyn IoChannel, ins: &Inspection, f: &mut Vec<Finding>) -> Result<()> {
    let sb = &ins.superblock;
    let seg = u64::from(sb.md_segment_pages);
    let records = ins.log.iter().filter(|e| e.link.is_none()).count();
    f.push(finding(
        Severity::Info,
        FindingKind::LogEnd,
        None,
        Some(ins.tail_page),
        format!(
            "log: {records} records, seq {}..{}, ends at byte {} (md page {}): {}",
            sb.log_first_seq, ins.next_seq, ins.tail_offset, ins.tail_page, ins.stop_reason
        ),
    ));
    let is_ours = |h: &record::RecordHeader| {
        h.store_id == sb.store_id && h.epoch == sb.generation && h.seq >= ins.next_seq
    };
    // The rest of the tail segment: every place a later record could start (each 64-byte
    // boundary of a packed log, each page of a page-aligned one).
    let tail_seg = (ins.tail_page - sb.md_first_page) / seg;
    let seg_first = sb.md_first_page + tail_seg * seg;
    let seg_end = seg_first + seg;
    let step = if ins.packed {
        record::RECORD_ALIGN as u64
    } else {
        PAGE
    };
    let mut lost: Option<(u64, u64, bool)> = None;
    if ins.tail_page < seg_end && ins.tail_page >= seg_first {
        let data = blocking::read(ch, seg_first * PAGE, (seg as usize) * MD_PAGE_SIZE)?;
        let mut at = ins.tail_offset - seg_first * PAGE + step;
        while at < seg * PAGE {
            if let Ok((h, _)) = record::decode_record(&data[at as usize..]) {
                if is_ours(&h) {
                    lost = Some((seg_first + at / PAGE, h.seq, false));
                    break;
                }
            }
            at += step;
        }
    }
    if lost.is_none() {
        let live: BTreeSet<u64> = ins
            .log_segments
            .iter()
            .copied()
            .chain(ck_segments(sb))
            .collect();
        for s in (0..sb.md_page_count / seg).filter(|s| !live.contains(s)) {
            let p = sb.md_first_page + s * seg;
            let data = blocking::read(ch, p * PAGE, (seg as usize) * MD_PAGE_SIZE)?;
            if let Ok((h, _)) = record::decode_record(&data) {
                if is_ours(&h) {
                    // Right after a Link that a crash dropped (Link and record unflushed)?
                    let ambiguous = h.seq == ins.next_seq + 1;
                    if lost.is_none_or(|(_, q, _)| h.seq < q) {
                        lost = Some((p, h.seq, ambiguous));
                    }
                }
            }
        }
    }
    if let Some((p, seq, ambiguous)) = lost {
        if ambiguous {
            f.push(finding(
                Severity::Warning,
                FindingKind::LogRecordLost,
                None,
                Some(p),
                format!(
                    "a record of the current epoch with seq {seq} lies at the head of unused \
                     md segment page {p}, after the end of the log (seq {}): either a Link and \
                     its record were cut by a crash before their flush (harmless), or the Link \
                     at md page {} is damaged and records from seq {seq} on are lost",
                    ins.next_seq, ins.tail_page
                ),
            ));
        } else {
            f.push(finding(
                Severity::Error,
                FindingKind::LogRecordLost,
                None,
                Some(ins.tail_page),
                format!(
                    "log record seq {} at md page {} is damaged ({}), but a valid record of \
                     the same epoch with seq {seq} follows at md page {p}: the records from \
                     seq {} on were durable and recovery loses them",
                    ins.next_seq, ins.tail_page, ins.stop_reason, ins.next_seq
                ),
            ));
        }
    }
    Ok(())
}

fn ck_segments(sb: &Superblock) -> std::ops::Range<u64> {
    let seg = u64::from(sb.md_segment_pages);
    let first = sb.checkpoint.first_page.saturating_sub(sb.md_first_page) / seg;
    first..first + sb.checkpoint.page_count / seg
}

/// Replays checkpoint + log, checks the invariants, and builds the repaired state.
fn check_state(ins: &Inspection, report: &mut FsckReport) -> Fixed {
    let sb = &ins.superblock;
    let f = &mut report.findings;
    let mut actions: Vec<String> = Vec::new();
    let mut blobs: BTreeMap<u64, BlobRecord> = ins
        .checkpoint
        .blobs
        .iter()
        .map(|r| (r.id, r.clone()))
        .collect();
    let mut next_id = ins.checkpoint.next_blob_id;
    let mut sup = ins.checkpoint.super_blob;
    let mut overlay = crate::overlay::Overlay::default();
    for e in ins.log.iter().filter(|e| e.link.is_none()) {
        if let Some(why) = &e.skipped {
            f.push(finding(
                Severity::Info,
                FindingKind::SkippedRecord,
                None,
                Some(e.page),
                format!(
                    "log record seq {} at md page {} is skipped: {why}",
                    e.header.seq, e.page
                ),
            ));
            continue;
        }
        for m in &e.mutations {
            match m {
                Mutation::PutBlob(r) => {
                    blobs.insert(r.id, BlobRecord::clone(r));
                }
                Mutation::DeleteBlob(id) => {
                    overlay.remove_blob(*id);
                    if blobs.remove(id).is_none() {
                        f.push(finding(
                            Severity::Error,
                            FindingKind::DeleteOfUnknownBlob,
                            Some(*id),
                            Some(e.page),
                            format!(
                                "log record seq {} at md page {} deletes blob {id}, which does \
                                 not exist; the load rejects the store",
                                e.header.seq, e.page
                            ),
                        ));
                        actions.push(format!(
                            "skipped the delete of unknown blob {id} (record seq {})",
                            e.header.seq
                        ));
                    }
                }
                Mutation::SetSuperBlob(s) => sup = *s,
                Mutation::SetNextId(n) => next_id = next_id.max(*n),
                Mutation::CheckData(_) => {}
                Mutation::WriteData(w) => overlay.insert(w.blob, w.offset, &w.data),
            }
        }
    }

    // md space.
    let seg = u64::from(sb.md_segment_pages);
    let md = sb.md_first_page..sb.md_end_page();
    let c = sb.checkpoint;
    if c.first_page < md.start || c.first_page + c.page_count > md.end {
        f.push(finding(
            Severity::Error,
            FindingKind::MdSpaceOutsideRegion,
            None,
            Some(c.first_page),
            format!(
                "checkpoint pages {}..{} outside the md region {}..{}",
                c.first_page,
                c.first_page + c.page_count,
                md.start,
                md.end
            ),
        ));
    }
    let mut owners: HashMap<u64, &str> = HashMap::new();
    for s in ck_segments(sb) {
        owners.insert(s, "the checkpoint");
    }
    for &s in &ins.log_segments {
        let first = sb.md_first_page + s * seg;
        if first + seg > md.end {
            f.push(finding(
                Severity::Error,
                FindingKind::MdSpaceOutsideRegion,
                None,
                Some(first),
                format!("log segment {s} (md page {first}) outside the md region"),
            ));
        }
        if let Some(o) = owners.insert(s, "the log") {
            f.push(finding(
                Severity::Error,
                FindingKind::MdSpaceOverlap,
                None,
                Some(first),
                format!("log segment {s} (md page {first}) is also used by {o}"),
            ));
        }
    }

    // Next id.
    if let Some((&max, _)) = blobs.last_key_value() {
        if max >= next_id {
            for &id in blobs.keys().filter(|&&id| id >= next_id) {
                f.push(finding(
                    Severity::Error,
                    FindingKind::BlobIdNotBelowNextId,
                    Some(id),
                    None,
                    format!("blob {id} is not below next_blob_id {next_id}"),
                ));
            }
            actions.push(format!("raised next_blob_id from {next_id} to {}", max + 1));
            next_id = max + 1;
        }
    }

    // Extents and cluster ownership, in id order: the lower id keeps a shared cluster.
    let total = sb.data_cluster_count;
    let mut owner: HashMap<u64, u64> = HashMap::new();
    let mut used = 0u64;
    let ids: Vec<u64> = blobs.keys().copied().collect();
    for id in &ids {
        let Some(r) = blobs.get_mut(id) else { continue };
        let mut keep: Vec<Extent> = Vec::with_capacity(r.extents.len());
        let mut dropped = 0u64;
        for e in &r.extents {
            let mut run: Option<Extent> = None;
            // The part past the data region: one finding for the whole range (a damaged count
            // can name billions of clusters).
            let inside = total.saturating_sub(e.physical).min(e.count);
            if inside < e.count {
                let first = e.physical.max(total);
                f.push(finding(
                    Severity::Error,
                    FindingKind::ExtentOutsideData,
                    Some(*id),
                    None,
                    format!(
                        "blob {id}: logical clusters from {} map {} clusters from {first}, \
                         outside the data region of {total} clusters",
                        e.logical.saturating_add(first - e.physical),
                        e.count - inside
                    ),
                ));
                dropped += e.count - inside;
            }
            for k in 0..inside {
                let p = e.physical + k;
                let ok = if let Some(&o) = owner.get(&p) {
                    let who = if o == *id {
                        "itself".to_string()
                    } else {
                        format!("blob {o}")
                    };
                    f.push(finding(
                        Severity::Error,
                        FindingKind::ClusterOwnedTwice,
                        Some(*id),
                        None,
                        format!(
                            "cluster {p} is owned twice: blob {id} (logical {}) and {who}",
                            e.logical + k
                        ),
                    ));
                    false
                } else {
                    owner.insert(p, *id);
                    used += 1;
                    true
                };
                if ok {
                    match &mut run {
                        Some(x) if x.physical + x.count == p => x.count += 1,
                        _ => {
                            if let Some(x) = run.take() {
                                keep.push(x);
                            }
                            run = Some(Extent {
                                logical: e.logical + k,
                                physical: p,
                                count: 1,
                            });
                        }
                    }
                } else {
                    dropped += 1;
                    if let Some(x) = run.take() {
                        keep.push(x);
                    }
                }
            }
            if let Some(x) = run.take() {
                keep.push(x);
            }
        }
        if dropped > 0 {
            r.extents = keep;
            r.flags |= FLAG_THIN;
            actions.push(format!(
                "blob {id}: unmapped {dropped} clusters it cannot keep (they now read as zeroes \
                 or the parent's data); marked thin"
            ));
        }
        // Xattr names and values need no check here: a record whose xattrs break their
        // limits does not decode, and is reported with the other undecodable records.
    }

    // Parents: existence, cycles, read-only.
    for id in &ids {
        let p = blobs.get(id).map_or(0, |r| r.parent);
        if p != 0 && !blobs.contains_key(&p) {
            f.push(finding(
                Severity::Error,
                FindingKind::ParentMissing,
                Some(*id),
                None,
                format!("blob {id}: parent {p} does not exist"),
            ));
            if let Some(r) = blobs.get_mut(id) {
                r.parent = 0;
            }
            actions.push(format!(
                "blob {id}: cleared the missing parent {p} (unallocated clusters read zeroes)"
            ));
        }
    }
    let mut done: BTreeSet<u64> = BTreeSet::new();
    for id in &ids {
        let mut path: Vec<u64> = Vec::new();
        let mut at = *id;
        while at != 0 && !done.contains(&at) {
            if let Some(i) = path.iter().position(|&x| x == at) {
                let cycle = &path[i..];
                let worst = cycle.iter().copied().max().unwrap_or(at);
                f.push(finding(
                    Severity::Error,
                    FindingKind::ParentCycle,
                    Some(worst),
                    None,
                    format!("parent links form a cycle: {cycle:?}"),
                ));
                if let Some(r) = blobs.get_mut(&worst) {
                    r.parent = 0;
                }
                actions.push(format!(
                    "blob {worst}: cleared its parent to break the cycle {cycle:?}"
                ));
                break;
            }
            path.push(at);
            at = blobs.get(&at).map_or(0, |r| r.parent);
        }
        done.extend(path);
    }
    let parents: BTreeSet<u64> = blobs
        .values()
        .map(|r| r.parent)
        .filter(|&p| p != 0)
        .collect();
    for p in parents {
        if let Some(r) = blobs.get_mut(&p) {
            if !r.is_read_only() {
                f.push(finding(
                    Severity::Error,
                    FindingKind::ParentNotReadOnly,
                    Some(p),
                    None,
                    format!("blob {p} has clones but is not read-only"),
                ));
                r.flags |= FLAG_READ_ONLY;
                actions.push(format!("blob {p}: made read-only (it has clones)"));
            }
        }
    }
    if let Some(s) = sup {
        if !blobs.contains_key(&s) {
            f.push(finding(
                Severity::Error,
                FindingKind::SuperBlobMissing,
                Some(s),
                None,
                format!("super blob {s} does not exist"),
            ));
            actions.push(format!("cleared the missing super blob {s}"));
            sup = None;
        }
    }
    if f.iter()
        .any(|x| x.kind == FindingKind::LogRecordLost && x.severity == Severity::Error)
    {
        actions.push(
            "kept the state up to the damaged log record; the records after it cannot be \
             recovered"
                .to_string(),
        );
    }

    report.counts = FsckCounts {
        blobs: blobs.len() as u64,
        clusters_total: total,
        clusters_used: used,
        clusters_free: total.saturating_sub(used),
        md_pages_total: sb.md_page_count,
        md_pages_used: owners.len() as u64 * seg,
        checkpoint_bytes: sb.checkpoint.len,
        checkpoint_blobs: ins.checkpoint.blobs.len() as u64,
        log_records: ins.log.iter().filter(|e| e.link.is_none()).count() as u64,
        log_segments: ins.log_segments.len() as u64,
    };
    Fixed {
        blobs,
        overlay,
        next_id,
        super_blob: sup,
        actions,
    }
}

/// Writes `fix` as a new checkpoint in unused md segments, zeroes the first page of a fresh
/// log segment, flushes, then writes superblock generation + 1 to the other slot and flushes
/// (the library's own checkpoint protocol, `docs/format.md`).
fn write_checkpoint(dev: &dyn BlockDevice, ins: &Inspection, fix: &Fixed) -> Result<()> {
    let sb = &ins.superblock;
    let seg = u64::from(sb.md_segment_pages);
    let ck = Checkpoint {
        store_id: sb.store_id,
        next_blob_id: fix.next_id,
        super_blob: fix.super_blob,
        blobs: fix.blobs.values().cloned().collect(),
    };
    let bytes = ck
        .encode()
        .map_err(|e| BsError::corrupt("repaired checkpoint", e.to_string()))?;
    let pages = (bytes.len() as u64).div_ceil(PAGE).max(1);
    let nsegs = pages.div_ceil(seg);
    let busy: BTreeSet<u64> = ins
        .log_segments
        .iter()
        .copied()
        .chain(ck_segments(sb))
        .collect();
    let total = sb.md_page_count / seg;
    let free: Vec<u64> = (0..total).filter(|s| !busy.contains(s)).collect();
    let run = free
        .iter()
        .copied()
        .find(|&s| s + nsegs <= total && (s..s + nsegs).all(|x| !busy.contains(&x)))
        .ok_or(BsError::NoMetadataSpace)?;
    let log_seg = free
        .iter()
        .copied()
        .find(|s| !(run..run + nsegs).contains(s))
        .ok_or(BsError::NoMetadataSpace)?;
    let mut ch = dev.channel()?;
    // Inline data of the log goes in place (through the repaired extents) before the
    // checkpoint's flush, since the new superblock drops the log.
    let unit = u64::from(sb.io_unit);
    for (blob, pending) in fix.overlay.blobs() {
        if let Some(rec) = fix.blobs.get(blob) {
            for (at, piece) in
                crate::overlay::placements(rec, pending.runs(), sb.cluster_size, sb.data_first_byte)
            {
                crate::overlay::write_in_place(ch.as_mut(), at, piece, unit)?;
            }
        }
    }
    let first_page = sb.md_first_page + run * seg;
    let mut padded = bytes.clone();
    padded.resize(pages as usize * MD_PAGE_SIZE, 0);
    blocking::write_slice(ch.as_mut(), first_page * PAGE, &padded)?;
    let log_first_page = sb.md_first_page + log_seg * seg;
    blocking::write_slice(ch.as_mut(), log_first_page * PAGE, &[0u8; MD_PAGE_SIZE])?;
    blocking::flush(ch.as_mut())?;
    let mut nsb = sb.clone();
    nsb.generation += 1;
    nsb.checkpoint = CheckpointRef {
        first_page,
        page_count: nsegs * seg,
        len: bytes.len() as u64,
        crc: oxblob_format::crc32c(&bytes),
    };
    nsb.log_first_page = log_first_page;
    nsb.log_first_seq = ins.next_seq;
    let page = nsb
        .encode()
        .map_err(|e| BsError::corrupt("repaired superblock", e.to_string()))?;
    let other = 1 - ins.current_slot as u64;
    blocking::write_slice(ch.as_mut(), other * PAGE, &page)?;
    blocking::flush(ch.as_mut())?;
    Ok(())
}
