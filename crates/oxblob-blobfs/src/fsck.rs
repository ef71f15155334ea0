//! `fsck` for blobfs: the blobstore's own check ([`oxblob_blobstore::fsck`]), then the
//! namespace, decoded from every blob's xattrs without mounting (a mount refuses a damaged
//! namespace, so the check must not need one).
//!
//! ## What is checked
//! - The root: the super blob is set, exists and is a directory.
//! - Every inode decodes: a known `type`, 8-byte `parent`/`size`/times, a UTF-8 `name`.
//! - Every inode but the root and orphans has a parent that exists and is a directory, and a
//!   valid entry name (1..=255 bytes, no `/` or NUL, not `.` or `..`).
//! - Names are unique per directory.
//! - No cycles: every inode reaches the root by its parents.
//! - Orphans (files unlinked while open, then a crash or unmount): listed as **info**; the next
//!   writable mount deletes them.
//!
//! ## Repair ([`FsckOptions::repair`])
//! The blobstore is repaired first (its own rules). Then, in one transaction: an inode whose
//! parent is missing or not a directory, that has no parent entry, a bad name, a duplicate
//! name (every inode but the lowest-numbered), or that closes a parent cycle (the highest
//! inode of the cycle) is moved to `/lost+found` (created if missing) as `#<ino>`, with its
//! subtree; an inode without a valid type is removed (its data cannot be interpreted); orphans
//! are removed. [`FsckReport::repairs`] says, per inode, which.

use crate::attr::*;
use crate::error::{FsError, FsErrorKind, Result};
use crate::fs::BSTYPE;
use crate::path::NAME_MAX;
use oxblob_bdev::BlockDevice;
use oxblob_blobstore::{bstype, BlobInfo, BlobStore, CreateOptions, LoadOptions, Severity};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// Name of the directory under the root that receives dangling inodes on repair.
pub const LOST_FOUND: &str = "lost+found";

/// Options of [`fsck`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FsckOptions {
    /// Repair the blobstore and the namespace (writes to the device), then check again.
    pub repair: bool,
}

/// What a namespace finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsFindingKind {
    /// The super blob (the root directory) is not set or does not exist.
    RootMissing,
    /// The root is not a directory.
    RootNotDirectory,
    /// An inode's xattrs do not decode (type, a u64 attribute, the name).
    BadInode,
    /// An inode other than the root has no parent entry and is not an orphan.
    NoParent,
    /// An inode's parent does not exist.
    ParentMissing,
    /// An inode's parent is not a directory.
    ParentNotDirectory,
    /// An entry name is empty, too long, `.`/`..`, or holds `/` or NUL.
    BadName,
    /// Two inodes have the same name in one directory.
    DuplicateName,
    /// Parent links form a cycle: its inodes cannot reach the root.
    Cycle,
    /// An inode unlinked while open (removed at the next writable mount). Info only.
    Orphan,
}

/// One namespace problem (or fact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsFinding {
    /// How bad (`Info` for orphans, `Error` otherwise).
    pub severity: Severity,
    /// What kind.
    pub kind: NsFindingKind,
    /// The inode concerned.
    pub ino: Option<u64>,
    /// A readable explanation.
    pub message: String,
}

impl fmt::Display for NsFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)
    }
}

/// The result of [`fsck`].
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    /// The blobstore's report.
    pub blobstore: oxblob_blobstore::FsckReport,
    /// Whether the namespace could be checked (the store loaded as a blobfs).
    pub namespace_checked: bool,
    /// Why the namespace was not checked.
    pub not_checked_why: Option<String>,
    /// Namespace findings of the initial check, errors first.
    pub findings: Vec<NsFinding>,
    /// Regular files found (orphans excluded).
    pub files: u64,
    /// Directories found (the root included).
    pub dirs: u64,
    /// Orphans found.
    pub orphans: u64,
    /// What the namespace repair did, one line per inode.
    pub repairs: Vec<String>,
    /// Namespace damage the repair could not fix.
    pub unrepaired: Vec<String>,
    /// Namespace findings of the check run after a repair that wrote something.
    pub after_repair: Option<Vec<NsFinding>>,
}

impl FsckReport {
    /// The namespace findings that describe the image now.
    pub fn current_findings(&self) -> &[NsFinding] {
        self.after_repair.as_deref().unwrap_or(&self.findings)
    }

    /// True if the initial namespace check found `kind`.
    pub fn has(&self, kind: NsFindingKind) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }

    /// Namespace errors now.
    pub fn errors(&self) -> usize {
        self.current_findings()
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// True when the blobstore is clean, the namespace was checked and has no error now, and
    /// nothing was left unrepaired.
    pub fn is_clean(&self) -> bool {
        self.blobstore.is_clean()
            && self.namespace_checked
            && self.unrepaired.is_empty()
            && self.errors() == 0
    }
}

impl fmt::Display for FsckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "blobstore:")?;
        for l in self.blobstore.to_string().lines() {
            writeln!(f, "  {l}")?;
        }
        writeln!(f, "namespace:")?;
        if !self.namespace_checked {
            writeln!(
                f,
                "  not checked: {}",
                self.not_checked_why
                    .as_deref()
                    .unwrap_or("the store did not load")
            )?;
        } else {
            writeln!(
                f,
                "  {} directories, {} files, {} orphans",
                self.dirs, self.files, self.orphans
            )?;
        }
        for x in &self.findings {
            writeln!(f, "  {x}")?;
        }
        for r in &self.repairs {
            writeln!(f, "  repaired: {r}")?;
        }
        for r in &self.unrepaired {
            writeln!(f, "  not repaired: {r}")?;
        }
        if let Some(after) = &self.after_repair {
            writeln!(f, "  after repair:")?;
            for x in after {
                writeln!(f, "    {x}")?;
            }
        }
        let bs_errors = self
            .blobstore
            .current_findings()
            .iter()
            .filter(|x| x.severity == Severity::Error)
            .count();
        if self.is_clean() {
            write!(f, "clean")
        } else {
            write!(
                f,
                "DAMAGED: {} blobstore errors, {} namespace errors{}",
                bs_errors,
                self.errors(),
                if self.namespace_checked {
                    ""
                } else {
                    " (namespace not checked)"
                }
            )
        }
    }
}

/// One inode as decoded for the check.
#[derive(Debug, Clone)]
struct Node {
    /// `None`: the type does not decode.
    dir: Option<bool>,
    parent: Option<u64>,
    name: Option<String>,
    orphan: bool,
    /// Why the inode does not decode (beyond the type).
    bad: Option<String>,
}

fn decode(b: &BlobInfo) -> Node {
    let get = |n: &str| {
        b.xattrs
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_slice())
    };
    let mut bad = None;
    let dir = match get(X_TYPE) {
        Some([TYPE_FILE]) => Some(false),
        Some([TYPE_DIR]) => Some(true),
        other => {
            bad = Some(format!(
                "type xattr {other:?} is neither file (1) nor directory (2)"
            ));
            None
        }
    };
    for n in [X_SIZE, X_MTIME, X_CTIME, X_PARENT] {
        if let Some(v) = get(n) {
            if v.len() != 8 {
                bad.get_or_insert_with(|| format!("xattr {n} has {} bytes, not 8", v.len()));
            }
        }
    }
    let parent = get(X_PARENT)
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_le_bytes);
    let name = match get(X_NAME) {
        Some(v) => match String::from_utf8(v.to_vec()) {
            Ok(s) => Some(s),
            Err(_) => {
                bad.get_or_insert_with(|| "name is not UTF-8".to_string());
                None
            }
        },
        None => None,
    };
    Node {
        dir,
        parent: parent.filter(|&p| p != 0),
        name,
        orphan: get(X_ORPHAN).is_some(),
        bad,
    }
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("empty name".into())
    } else if name.len() > NAME_MAX {
        Some(format!("name of {} bytes (max {NAME_MAX})", name.len()))
    } else if name == "." || name == ".." || name.contains(['/', '\0']) {
        Some(format!("invalid name {name:?}"))
    } else {
        None
    }
}

/// What to do with an inode on repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fix {
    LostFound,
    Remove,
}

struct Checked {
    findings: Vec<NsFinding>,
    fixes: BTreeMap<u64, Fix>,
    unrepairable: Vec<String>,
    files: u64,
    dirs: u64,
    orphans: u64,
    /// The root's child named `lost+found`, if it is a valid directory.
    lost_found: Option<u64>,
    lost_found_is_file: bool,
}

fn err(kind: NsFindingKind, ino: u64, message: String) -> NsFinding {
    NsFinding {
        severity: Severity::Error,
        kind,
        ino: Some(ino),
        message,
    }
}

fn check_ns(root: Option<u64>, infos: &[BlobInfo]) -> Checked {
    let nodes: HashMap<u64, Node> = infos.iter().map(|b| (b.id, decode(b))).collect();
    let mut c = Checked {
        findings: Vec::new(),
        fixes: BTreeMap::new(),
        unrepairable: Vec::new(),
        files: 0,
        dirs: 0,
        orphans: 0,
        lost_found: None,
        lost_found_is_file: false,
    };
    let root_ok = match root.map(|r| (r, nodes.get(&r))) {
        None => {
            let m = "no root directory: the super blob is not set".to_string();
            c.unrepairable.push(m.clone());
            c.findings.push(NsFinding {
                severity: Severity::Error,
                kind: NsFindingKind::RootMissing,
                ino: None,
                message: m,
            });
            None
        }
        Some((r, None)) => {
            let m = format!("no root directory: the super blob {r} does not exist");
            c.unrepairable.push(m.clone());
            c.findings.push(err(NsFindingKind::RootMissing, r, m));
            None
        }
        Some((r, Some(n))) if n.dir != Some(true) => {
            let m = format!("the root (inode {r}) is not a directory");
            c.unrepairable.push(m.clone());
            c.findings.push(err(NsFindingKind::RootNotDirectory, r, m));
            None
        }
        Some((r, Some(_))) => Some(r),
    };
    let mut ids: Vec<u64> = nodes.keys().copied().collect();
    ids.sort_unstable();
    // Inodes whose parent edge is valid (a directory that exists): candidates for the tree.
    let mut edge: HashMap<u64, u64> = HashMap::new();
    let mut by_name: BTreeMap<(u64, String), Vec<u64>> = BTreeMap::new();
    for &id in &ids {
        let n = &nodes[&id];
        if Some(id) == root_ok {
            c.dirs += 1;
            continue;
        }
        if n.orphan {
            c.orphans += 1;
            c.findings.push(NsFinding {
                severity: Severity::Info,
                kind: NsFindingKind::Orphan,
                ino: Some(id),
                message: format!(
                    "inode {id} is an orphan (unlinked while open); the next mount removes it"
                ),
            });
            c.fixes.insert(id, Fix::Remove);
            continue;
        }
        let Some(is_dir) = n.dir else {
            c.findings.push(err(
                NsFindingKind::BadInode,
                id,
                format!("inode {id}: {}", n.bad.as_deref().unwrap_or("bad type")),
            ));
            c.fixes.insert(id, Fix::Remove);
            continue;
        };
        if is_dir {
            c.dirs += 1;
        } else {
            c.files += 1;
        }
        let what = if is_dir { "directory" } else { "file" };
        let shown = n.name.as_deref().unwrap_or("?");
        if let Some(b) = &n.bad {
            c.findings.push(err(
                NsFindingKind::BadInode,
                id,
                format!("inode {id} ({what} {shown:?}): {b}"),
            ));
            c.fixes.insert(id, Fix::LostFound);
            continue;
        }
        let Some(p) = n.parent else {
            c.findings.push(err(
                NsFindingKind::NoParent,
                id,
                format!("{what} inode {id} ({shown:?}) has no parent entry and is not an orphan"),
            ));
            c.fixes.insert(id, Fix::LostFound);
            continue;
        };
        match nodes.get(&p) {
            None => {
                c.findings.push(err(
                    NsFindingKind::ParentMissing,
                    id,
                    format!("{what} inode {id} ({shown:?}) names parent {p}, which does not exist"),
                ));
                c.fixes.insert(id, Fix::LostFound);
                continue;
            }
            Some(pn) if pn.dir != Some(true) || pn.orphan => {
                c.findings.push(err(
                    NsFindingKind::ParentNotDirectory,
                    id,
                    format!(
                        "{what} inode {id} ({shown:?}) names parent {p}, which is not a directory"
                    ),
                ));
                c.fixes.insert(id, Fix::LostFound);
                continue;
            }
            Some(_) => {}
        }
        let name = n.name.clone().unwrap_or_default();
        if let Some(why) = name_problem(&name) {
            c.findings.push(err(
                NsFindingKind::BadName,
                id,
                format!("{what} inode {id} in directory {p}: {why}"),
            ));
            c.fixes.insert(id, Fix::LostFound);
            continue;
        }
        edge.insert(id, p);
        by_name.entry((p, name)).or_default().push(id);
    }
    for ((p, name), v) in &by_name {
        if v.len() > 1 {
            for &id in &v[1..] {
                c.findings.push(err(
                    NsFindingKind::DuplicateName,
                    id,
                    format!(
                        "inodes {} and {id} are both named {name:?} in directory {p}",
                        v[0]
                    ),
                ));
                c.fixes.insert(id, Fix::LostFound);
                edge.remove(&id);
            }
        }
        if Some(*p) == root_ok && name == LOST_FOUND {
            if let Some(&lf) = v.first() {
                if nodes.get(&lf).and_then(|n| n.dir) == Some(true) {
                    c.lost_found = Some(lf);
                } else {
                    c.lost_found_is_file = true;
                }
            }
        }
    }
    // Cycles: walk up every valid edge; a walk that meets its own path found a cycle. Known
    // results (reaches the root, or not) are memoized.
    if let Some(r) = root_ok {
        let mut reach: HashMap<u64, bool> = HashMap::from([(r, true)]);
        let mut cycle_seen: HashSet<u64> = HashSet::new();
        for &start in &ids {
            if !edge.contains_key(&start) || reach.contains_key(&start) {
                continue;
            }
            let mut path = Vec::new();
            let mut on_path = HashSet::new();
            let mut cur = start;
            let ok = loop {
                if let Some(&k) = reach.get(&cur) {
                    break k;
                }
                if !on_path.insert(cur) {
                    // `cur` starts a cycle: the part of the path from it.
                    let pos = path.iter().position(|&x| x == cur).unwrap_or(0);
                    let cyc: Vec<u64> = path[pos..].to_vec();
                    if cyc.iter().all(|x| !cycle_seen.contains(x)) {
                        cycle_seen.extend(cyc.iter().copied());
                        let hi = cyc.iter().copied().max().unwrap_or(cur);
                        let chain: Vec<String> = cyc.iter().map(u64::to_string).collect();
                        c.findings.push(err(
                            NsFindingKind::Cycle,
                            hi,
                            format!(
                                "directories {} form a parent cycle, unreachable from the root",
                                chain.join(" -> ")
                            ),
                        ));
                        c.fixes.insert(hi, Fix::LostFound);
                    }
                    break false;
                }
                path.push(cur);
                match edge.get(&cur) {
                    Some(&p) => cur = p,
                    // Its parent has a problem of its own (reported there).
                    None => break false,
                }
            };
            for x in path {
                reach.insert(x, ok);
            }
        }
    }
    c.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    c
}

fn bs_err(e: oxblob_blobstore::BsError) -> FsError {
    FsError::from_bs(e, "/")
}

/// Checks the blobfs on `dev` (and repairs it with `opts.repair`). Findings are in the
/// report; `Err` when the device fails, a repair write fails, or the image is a blobstore of
/// another type.
pub fn fsck(dev: &Arc<dyn BlockDevice>, opts: FsckOptions) -> Result<FsckReport> {
    let bsr = oxblob_blobstore::fsck(
        dev,
        oxblob_blobstore::FsckOptions {
            repair: opts.repair,
        },
    )
    .map_err(bs_err)?;
    let mut report = FsckReport {
        blobstore: bsr,
        ..Default::default()
    };
    let load = |read_only| {
        BlobStore::load(
            Arc::clone(dev),
            LoadOptions {
                bstype: bstype(BSTYPE),
                read_only,
            },
        )
    };
    let bs = match load(!opts.repair) {
        Ok(bs) => bs,
        Err(e @ oxblob_blobstore::BsError::WrongType { .. }) => {
            return Err(FsError::new(
                FsErrorKind::InvalidArgument,
                "/",
                e.to_string(),
            ))
        }
        Err(e) => {
            report.not_checked_why = Some(format!("the store does not load: {e}"));
            return Ok(report);
        }
    };
    let root = bs.super_blob().map_err(bs_err)?;
    let infos = bs.blobs().map_err(bs_err)?;
    let c = check_ns(root, &infos);
    report.namespace_checked = true;
    report.findings = c.findings;
    report.files = c.files;
    report.dirs = c.dirs;
    report.orphans = c.orphans;
    report.unrepaired = if opts.repair {
        c.unrepairable
    } else {
        Vec::new()
    };
    if !opts.repair || c.fixes.is_empty() || !report.unrepaired.is_empty() {
        if opts.repair {
            bs.unload().map_err(bs_err)?;
        }
        return Ok(report);
    }
    let Some(root) = root else {
        return Ok(report);
    };
    if c.lost_found_is_file && c.fixes.values().any(|f| *f == Fix::LostFound) {
        report.unrepaired.push(format!(
            "/{LOST_FOUND} exists and is not a directory: dangling inodes left in place"
        ));
        bs.unload().map_err(bs_err)?;
        return Ok(report);
    }
    let names: HashMap<u64, String> = infos
        .iter()
        .map(|b| (b.id, decode(b).name.unwrap_or_default()))
        .collect();
    let kinds: HashMap<u64, &'static str> = infos
        .iter()
        .map(|b| {
            let k = match decode(b).dir {
                Some(true) => "directory",
                Some(false) => "file",
                None => "inode",
            };
            (b.id, k)
        })
        .collect();
    // Names already used in lost+found (by inodes that stay there).
    let mut taken: HashSet<String> = HashSet::new();
    if let Some(lf) = c.lost_found {
        for b in &infos {
            let n = decode(b);
            if n.parent == Some(lf) && !c.fixes.contains_key(&b.id) {
                if let Some(name) = n.name {
                    taken.insert(name);
                }
            }
        }
    }
    let mut repairs = Vec::new();
    let now = now_ns();
    bs.transaction(|t| {
        let lf = match c.lost_found {
            Some(lf) => lf,
            None if c.fixes.values().any(|f| *f == Fix::LostFound) => {
                let lf = t.create(CreateOptions {
                    num_clusters: 0,
                    thin: true,
                    xattrs: vec![
                        (X_TYPE.to_string(), vec![TYPE_DIR]),
                        (X_MTIME.to_string(), enc_u64(now)),
                        (X_CTIME.to_string(), enc_u64(now)),
                        (X_PARENT.to_string(), enc_u64(root)),
                        (X_NAME.to_string(), LOST_FOUND.as_bytes().to_vec()),
                    ],
                })?;
                repairs.push(format!("created /{LOST_FOUND} (inode {lf})"));
                lf
            }
            None => 0,
        };
        for (&ino, &fix) in &c.fixes {
            let kind = kinds.get(&ino).copied().unwrap_or("inode");
            let was = names.get(&ino).map(String::as_str).unwrap_or("");
            match fix {
                Fix::Remove => {
                    t.delete(ino);
                    if was.is_empty() {
                        repairs.push(format!("removed orphan {kind} {ino}"));
                    } else {
                        repairs.push(format!("removed {kind} {ino} {was:?}"));
                    }
                }
                Fix::LostFound => {
                    let mut name = format!("#{ino}");
                    let mut k = 1;
                    while taken.contains(&name) {
                        name = format!("#{ino}.{k}");
                        k += 1;
                    }
                    taken.insert(name.clone());
                    t.set_xattr(ino, X_PARENT, &enc_u64(lf));
                    t.set_xattr(ino, X_NAME, name.as_bytes());
                    t.set_xattr(ino, X_CTIME, &enc_u64(now));
                    repairs.push(format!(
                        "moved {kind} {ino} (was {was:?}) to /{LOST_FOUND}/{name}"
                    ));
                }
            }
        }
        Ok(())
    })
    .map_err(bs_err)?;
    report.repairs = repairs;
    let infos = bs.blobs().map_err(bs_err)?;
    let after = check_ns(bs.super_blob().map_err(bs_err)?, &infos);
    bs.unload().map_err(bs_err)?;
    report.after_repair = Some(after.findings);
    Ok(report)
}
