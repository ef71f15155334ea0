//! `oxblob bs <command> IMAGE [ARGS]`: blobstore management, like SPDK's blobcli (init, dump,
//! fsck, create, ls, stat, xattr, import, export, rm, resize, snapshot, clone).
//!
//! IMAGE is a device spec string or a path (`disk.img`, `file:/x.img`, `malloc:64M`), or
//! `--config FILE.json --bdev NAME` in its place. Read-only commands (`dump`, `fsck` without
//! `--repair`, `ls`, `stat`, `xattr get`, `export`) load the store read-only and write
//! nothing. Blob ids are decimal on output and accept decimal or `0x` hex on input.

use crate::error::{CliError, CliResult};
use crate::size::format_size;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use oxblob_bdev::{BlockDevice, FileOptions};
use oxblob_blobstore::{
    bstype, fsck, inspect, BlobStore, BsError, CreateOptions, FsckOptions, InitOptions,
    LoadOptions, Severity,
};
use oxblob_format::record::{Mutation, RecordKind};
use oxblob_format::{BlobRecord, Superblock};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Internal xattr holding an imported file's exact length (u64 little-endian), so `export`
/// gives back the same bytes.
pub const LENGTH_XATTR: &str = "oxblob.length";

/// `oxblob bs`.
#[derive(Args, Debug)]
pub struct BsArgs {
    /// The blobstore command.
    #[command(subcommand)]
    pub command: BsCommand,
}

/// Where the store is: IMAGE (spec or path) or `--config FILE --bdev NAME`.
#[derive(Args, Debug, Clone, Default)]
pub struct Image {
    /// SPDK-style JSON bdev config file (with --bdev), in place of IMAGE.
    #[arg(long, value_name = "FILE.json", requires = "bdev")]
    pub config: Option<PathBuf>,
    /// Name of the bdev to open from the --config file.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub bdev: Option<String>,
}

/// Every `oxblob bs` command. Positional arguments: IMAGE first (unless --config/--bdev).
#[derive(Subcommand, Debug)]
pub enum BsCommand {
    /// Format IMAGE as a new, empty blobstore.
    Init {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE (device spec or path).
        #[arg(value_name = "IMAGE")]
        args: Vec<String>,
        /// Cluster size (power of two, 64KiB..256MiB).
        #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = crate::size::parse_nonzero_size)]
        cluster_size: u64,
        /// Create the image file if missing and grow it to SIZE.
        #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_nonzero_size)]
        size: Option<u64>,
        /// Application tag stored in the superblock (up to 16 bytes).
        #[arg(long, value_name = "NAME")]
        bstype: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print both superblock slots, the checkpoint and the live log records.
    Dump {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE.
        #[arg(value_name = "IMAGE")]
        args: Vec<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check the store (exit 0 clean, 1 damage found); --repair fixes what can be fixed.
    Fsck {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE.
        #[arg(value_name = "IMAGE")]
        args: Vec<String>,
        /// Repair: rewrite a clean checkpoint, drop what cannot be kept.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a blob; prints its id alone on stdout.
    Create {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE.
        #[arg(value_name = "IMAGE")]
        args: Vec<String>,
        /// Size: a plain number is clusters, a number with a suffix (k, M, G, B) is bytes
        /// (rounded up to clusters).
        #[arg(long, value_name = "N", default_value = "0")]
        size: String,
        /// Thin provisioned: clusters are allocated on first write.
        #[arg(long)]
        thin: bool,
        /// A user xattr, name=value (repeatable).
        #[arg(long, value_name = "NAME=VALUE")]
        xattr: Vec<String>,
    },
    /// List blobs (from the metadata only; opens nothing).
    Ls {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE.
        #[arg(value_name = "IMAGE")]
        args: Vec<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one blob: size, allocation, flags, parent, extents, xattrs.
    Stat {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID.
        #[arg(value_name = "IMAGE ID")]
        args: Vec<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Get, set or remove a user xattr.
    Xattr {
        /// The xattr operation.
        #[command(subcommand)]
        op: XattrOp,
    },
    /// Import a file as a new blob; prints the new id.
    Import {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE FILE.
        #[arg(value_name = "IMAGE FILE")]
        args: Vec<String>,
        /// Thin blob: all-zero clusters of the file are not allocated.
        #[arg(long)]
        thin: bool,
    },
    /// Export a blob's contents to a file (an imported blob gives back its exact length).
    Export {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID FILE.
        #[arg(value_name = "IMAGE ID FILE")]
        args: Vec<String>,
    },
    /// Delete a blob.
    Rm {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID.
        #[arg(value_name = "IMAGE ID")]
        args: Vec<String>,
    },
    /// Snapshot a blob: a new read-only blob takes its clusters, the blob becomes a thin clone
    /// of it. Prints the snapshot's id.
    Snapshot {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID.
        #[arg(value_name = "IMAGE ID")]
        args: Vec<String>,
    },
    /// Create a thin clone of a read-only blob (a snapshot). Prints the clone's id.
    Clone {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID.
        #[arg(value_name = "IMAGE ID")]
        args: Vec<String>,
    },
    /// Resize a blob (clusters, or bytes with a suffix).
    Resize {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID SIZE.
        #[arg(value_name = "IMAGE ID SIZE")]
        args: Vec<String>,
    },
}

/// `oxblob bs xattr ...`.
#[derive(Subcommand, Debug)]
pub enum XattrOp {
    /// Print an xattr's value (raw bytes).
    Get {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID NAME.
        #[arg(value_name = "IMAGE ID NAME")]
        args: Vec<String>,
    },
    /// Set an xattr.
    Set {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID NAME VALUE.
        #[arg(value_name = "IMAGE ID NAME VALUE")]
        args: Vec<String>,
    },
    /// Remove an xattr.
    Rm {
        /// --config FILE --bdev NAME, in place of IMAGE.
        #[command(flatten)]
        image: Image,
        /// IMAGE ID NAME.
        #[arg(value_name = "IMAGE ID NAME")]
        args: Vec<String>,
    },
}

/// The positional arguments of one command: IMAGE (unless --config) then the rest.
struct Pos {
    cmd: &'static str,
    dev: crate::device_args::DeviceArgs,
    image_name: String,
    rest: VecDeque<String>,
}

impl Pos {
    fn new(cmd: &'static str, image: Image, args: Vec<String>, names: &[&str]) -> CliResult<Pos> {
        let mut rest: VecDeque<String> = args.into();
        let usage = |why: String| CliError::new(format!("usage: bs {cmd}"), why);
        let (dev, image_name) = match (image.config, image.bdev) {
            (Some(c), Some(b)) => {
                let name = b.to_string();
                (
                    crate::device_args::DeviceArgs {
                        dev: None,
                        config: Some(c),
                        bdev: Some(b),
                    },
                    name,
                )
            }
            _ => {
                let Some(spec) = rest.pop_front() else {
                    return Err(usage(
                        "IMAGE is required (a device spec or path, or --config FILE --bdev NAME)"
                            .into(),
                    ));
                };
                (
                    crate::device_args::DeviceArgs {
                        dev: Some(spec.clone()),
                        config: None,
                        bdev: None,
                    },
                    spec,
                )
            }
        };
        if rest.len() < names.len() {
            return Err(usage(format!(
                "missing {} (expected IMAGE {})",
                names[rest.len()..].join(" "),
                names.join(" ")
            )));
        }
        if rest.len() > names.len() {
            return Err(usage(format!(
                "unexpected argument '{}'",
                rest[names.len()]
            )));
        }
        Ok(Pos {
            cmd,
            dev,
            image_name,
            rest,
        })
    }

    fn next(&mut self) -> String {
        self.rest.pop_front().unwrap_or_default()
    }

    fn id(&mut self) -> CliResult<u64> {
        let t = self.next();
        parse_id(&t).map_err(|e| CliError::new(format!("usage: bs {}", self.cmd), e))
    }

    fn open(&self) -> CliResult<Arc<dyn BlockDevice>> {
        self.dev.open()
    }

    fn load(&self, what: &str, read_only: bool) -> CliResult<BlobStore> {
        let dev = self.open()?;
        BlobStore::load(
            dev,
            LoadOptions {
                read_only,
                ..Default::default()
            },
        )
        .map_err(|e| bs_err(what, e))
    }
}

fn parse_id(t: &str) -> Result<u64, String> {
    let v = if let Some(h) = t.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else {
        t.parse()
    };
    match v {
        Ok(0) | Err(_) => Err(format!("'{t}' is not a blob id (a number from 1)")),
        Ok(v) => Ok(v),
    }
}

/// A blobstore error as the CLI says it (ids in decimal).
fn bs_err(what: &str, e: BsError) -> CliError {
    let why = match e {
        BsError::NotFound(id) => format!("blob {id} not found"),
        BsError::BlobOpen(id) => format!("blob {id} is open"),
        BsError::HasClones(id) => format!("blob {id} has clones"),
        BsError::ReadOnly => "the blob is read-only".to_string(),
        BsError::InvalidArgument(m) if m.contains("not read-only") => {
            "the blob is not read-only (snapshot it first, then clone the snapshot)".to_string()
        }
        BsError::NotABlobstore => {
            "it is not an oxblob blobstore (no superblock magic in either slot)".to_string()
        }
        other => other.to_string(),
    };
    CliError::new(what, why)
}

/// Parses a blob size: a plain number is clusters, a suffixed one bytes (rounded up).
fn parse_blob_size(t: &str, cluster: u64) -> Result<u64, String> {
    let t = t.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map_err(|_| format!("'{t}' is not a number of clusters"));
    }
    let bytes = oxblob_bdev::parse_size(t).map_err(|e| e.to_string())?;
    Ok(bytes.div_ceil(cluster))
}

fn out(text: &str) -> CliResult<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{text}")
        .and_then(|()| o.flush())
        .map_err(|e| CliError::new("writing the output", e))
}

fn to_json(v: &Value) -> CliResult<String> {
    serde_json::to_string_pretty(v).map_err(|e| CliError::new("formatting JSON", e))
}

fn flag_names(flags: u64) -> Vec<&'static str> {
    use oxblob_format::blob::{FLAG_READ_ONLY, FLAG_SNAPSHOT, FLAG_THIN};
    let mut v = Vec::new();
    for (b, n) in [
        (FLAG_THIN, "thin"),
        (FLAG_READ_ONLY, "read-only"),
        (FLAG_SNAPSHOT, "snapshot"),
    ] {
        if flags & b != 0 {
            v.push(n);
        }
    }
    v
}

fn text_of(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_string(),
        Err(_) => v.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Runs `oxblob bs ...`.
pub fn run(a: BsArgs) -> CliResult<()> {
    match a.command {
        BsCommand::Init {
            image,
            args,
            cluster_size,
            size,
            bstype: tag,
            json,
        } => init(
            Pos::new("init", image, args, &[])?,
            cluster_size,
            size,
            tag,
            json,
        ),
        BsCommand::Dump { image, args, json } => dump(Pos::new("dump", image, args, &[])?, json),
        BsCommand::Fsck {
            image,
            args,
            repair,
            json,
        } => run_fsck(Pos::new("fsck", image, args, &[])?, repair, json),
        BsCommand::Create {
            image,
            args,
            size,
            thin,
            xattr,
        } => create(Pos::new("create", image, args, &[])?, &size, thin, &xattr),
        BsCommand::Ls { image, args, json } => ls(Pos::new("ls", image, args, &[])?, json),
        BsCommand::Stat { image, args, json } => {
            stat(Pos::new("stat", image, args, &["ID"])?, json)
        }
        BsCommand::Xattr { op } => match op {
            XattrOp::Get { image, args } => {
                xattr(Pos::new("xattr get", image, args, &["ID", "NAME"])?, 'g')
            }
            XattrOp::Set { image, args } => xattr(
                Pos::new("xattr set", image, args, &["ID", "NAME", "VALUE"])?,
                's',
            ),
            XattrOp::Rm { image, args } => {
                xattr(Pos::new("xattr rm", image, args, &["ID", "NAME"])?, 'r')
            }
        },
        BsCommand::Import { image, args, thin } => {
            import(Pos::new("import", image, args, &["FILE"])?, thin)
        }
        BsCommand::Export { image, args } => {
            export(Pos::new("export", image, args, &["ID", "FILE"])?)
        }
        BsCommand::Rm { image, args } => rm(Pos::new("rm", image, args, &["ID"])?),
        BsCommand::Snapshot { image, args } => {
            derive(Pos::new("snapshot", image, args, &["ID"])?, true)
        }
        BsCommand::Clone { image, args } => derive(Pos::new("clone", image, args, &["ID"])?, false),
        BsCommand::Resize { image, args } => {
            resize(Pos::new("resize", image, args, &["ID", "SIZE"])?)
        }
    }
}

fn init(p: Pos, cluster: u64, size: Option<u64>, tag: Option<String>, json: bool) -> CliResult<()> {
    let what = format!("bs init {}", p.image_name);
    let dev = match (size, &p.dev.dev) {
        (Some(s), Some(spec)) => {
            let opts = FileOptions {
                create_size: Some(s),
                ..Default::default()
            };
            oxblob_bdev::spec::open_with(spec, &opts).map_err(|e| CliError::new(&what, e))?
        }
        (Some(_), None) => {
            return Err(CliError::new(
                &what,
                "--size creates an image file; it cannot be used with --config",
            ))
        }
        (None, _) => p.open()?,
    };
    if let Some(t) = &tag {
        if t.len() > 16 {
            return Err(CliError::new(
                &what,
                format!("--bstype '{t}' is longer than 16 bytes"),
            ));
        }
    }
    let opts = InitOptions {
        cluster_size: cluster,
        bstype: bstype(tag.as_deref().unwrap_or("")),
        ..Default::default()
    };
    let bs = BlobStore::init(dev, opts).map_err(|e| bs_err(&what, e))?;
    let total = bs.total_clusters();
    let cs = bs.cluster_size();
    bs.unload().map_err(|e| bs_err(&what, e))?;
    if json {
        out(&to_json(&json!({
            "image": p.image_name, "cluster_size": cs, "clusters": total,
        }))?)
    } else {
        out(&format!(
            "initialized {}: {total} clusters of {} ({} of data)",
            p.image_name,
            format_size(cs),
            format_size(total * cs)
        ))
    }
}

fn sb_json(sb: &Superblock) -> Value {
    json!({
        "version": sb.version,
        "generation": sb.generation,
        "store_id": format!("{:#018x}", sb.store_id),
        "bstype": String::from_utf8_lossy(&sb.bstype).trim_end_matches('\0').to_string(),
        "compat": sb.compat, "ro_compat": sb.ro_compat, "incompat": sb.incompat,
        "io_unit": sb.io_unit,
        "cluster_size": sb.cluster_size,
        "device_size": sb.device_size,
        "md_first_page": sb.md_first_page,
        "md_page_count": sb.md_page_count,
        "md_segment_pages": sb.md_segment_pages,
        "data_first_byte": sb.data_first_byte,
        "data_cluster_count": sb.data_cluster_count,
        "checkpoint": {
            "first_page": sb.checkpoint.first_page,
            "page_count": sb.checkpoint.page_count,
            "len": sb.checkpoint.len,
            "crc": format!("{:#010x}", sb.checkpoint.crc),
        },
        "log_first_page": sb.log_first_page,
        "log_first_seq": sb.log_first_seq,
    })
}

fn blob_json(r: &BlobRecord) -> Value {
    json!({
        "id": r.id,
        "num_clusters": r.num_clusters,
        "allocated_clusters": r.allocated_clusters(),
        "flags": flag_names(r.flags),
        "parent": r.parent,
        "extents": r.extents.iter().map(|e| json!([e.logical, e.physical, e.count])).collect::<Vec<_>>(),
        "xattrs": r.xattrs.iter().map(|x| json!({
            "name": x.name, "internal": x.internal, "len": x.value.len(),
        })).collect::<Vec<_>>(),
    })
}

fn mutation_json(m: &Mutation) -> Value {
    match m {
        Mutation::PutBlob(r) => json!({"put_blob": blob_json(r)}),
        Mutation::DeleteBlob(id) => json!({"delete_blob": id}),
        Mutation::SetSuperBlob(s) => json!({"set_super_blob": s}),
        Mutation::SetNextId(n) => json!({"set_next_id": n}),
        Mutation::CheckData(c) => json!({"check_data": {
            "blob": c.blob, "offset": c.offset, "len": c.len, "crc": c.crc,
        }}),
        Mutation::WriteData(w) => json!({"write_data": {
            "blob": w.blob, "offset": w.offset, "len": w.data.len(),
            "crc": oxblob_format::crc32c(&w.data),
        }}),
    }
}

/// One line describing a blob record: "blob ID (N clusters, ...)".
fn blob_text(r: &BlobRecord) -> String {
    format!(
        "blob {} ({} clusters, {} allocated, {} extents, {} xattrs{})",
        r.id,
        r.num_clusters,
        r.allocated_clusters(),
        r.extents.len(),
        r.xattrs.len(),
        flag_names(r.flags)
            .iter()
            .map(|f| format!(", {f}"))
            .collect::<String>()
    )
}

fn mutation_text(m: &Mutation) -> String {
    match m {
        Mutation::PutBlob(r) => format!("put {}", blob_text(r)),
        Mutation::DeleteBlob(id) => format!("delete blob {id}"),
        Mutation::SetSuperBlob(Some(s)) => format!("set super blob {s}"),
        Mutation::SetSuperBlob(None) => "clear super blob".to_string(),
        Mutation::SetNextId(n) => format!("next id {n}"),
        Mutation::CheckData(c) => format!(
            "if blob {} bytes {}+{} have crc {:#010x}",
            c.blob, c.offset, c.len, c.crc
        ),
        Mutation::WriteData(w) => format!(
            "write blob {} bytes {}+{} inline (crc {:#010x})",
            w.blob,
            w.offset,
            w.data.len(),
            oxblob_format::crc32c(&w.data)
        ),
    }
}

fn dump(p: Pos, json: bool) -> CliResult<()> {
    let what = format!("bs dump {}", p.image_name);
    let dev = p.open()?;
    let ins = inspect(dev.as_ref()).map_err(|e| bs_err(&what, e))?;
    let slot_json = |i: usize| match &ins.slots[i] {
        Ok(sb) => {
            json!({"valid": true, "current": ins.current_slot == i, "superblock": sb_json(sb)})
        }
        Err(e) => json!({"valid": false, "current": false, "error": e.to_string()}),
    };
    let log: Vec<Value> = ins
        .log
        .iter()
        .map(|e| {
            json!({
                "page": e.page,
                "offset": e.offset,
                "seq": e.header.seq,
                "epoch": e.header.epoch,
                "kind": match e.header.kind { RecordKind::Txn => "txn", RecordKind::Link => "link" },
                "bytes": if ins.packed { e.header.packed_len() } else { e.header.pages() * 4096 },
                "link": e.link,
                "mutations": e.mutations.iter().map(mutation_json).collect::<Vec<_>>(),
                "skipped": e.skipped,
            })
        })
        .collect();
    let ck = &ins.checkpoint;
    if json {
        let v = json!({
            "slots": [slot_json(0), slot_json(1)],
            "current_slot": ins.current_slot,
            "checkpoint": {
                "next_blob_id": ck.next_blob_id,
                "super_blob": ck.super_blob,
                "blob_count": ck.blobs.len(),
                "blobs": ck.blobs.iter().map(blob_json).collect::<Vec<_>>(),
            },
            "log": log,
            "log_segments": ins.log_segments,
            "tail_page": ins.tail_page,
            "tail_offset": ins.tail_offset,
            "packed_log": ins.packed,
            "next_seq": ins.next_seq,
            "log_end": ins.stop_reason,
        });
        return out(&to_json(&v)?);
    }
    let mut t = String::new();
    for i in 0..2 {
        let name = if i == 0 { "A" } else { "B" };
        match &ins.slots[i] {
            Ok(sb) => {
                t += &format!(
                    "superblock {name} (page {i}){}: generation {}, store id {:#018x}, bstype {:?}\n",
                    if ins.current_slot == i { " [current]" } else { "" },
                    sb.generation,
                    sb.store_id,
                    String::from_utf8_lossy(&sb.bstype).trim_end_matches('\0')
                );
                t += &format!(
                    "  cluster {} io unit {}, md pages {}..{} (segments of {}), data from byte {} \
                     ({} clusters), device {} bytes\n",
                    format_size(sb.cluster_size),
                    sb.io_unit,
                    sb.md_first_page,
                    sb.md_end_page(),
                    sb.md_segment_pages,
                    sb.data_first_byte,
                    sb.data_cluster_count,
                    sb.device_size
                );
                t += &format!(
                    "  checkpoint pages {}+{} len {} crc {:#010x}; log from page {} seq {}\n",
                    sb.checkpoint.first_page,
                    sb.checkpoint.page_count,
                    sb.checkpoint.len,
                    sb.checkpoint.crc,
                    sb.log_first_page,
                    sb.log_first_seq
                );
            }
            Err(e) => t += &format!("superblock {name} (page {i}): invalid: {e}\n"),
        }
    }
    t += &format!(
        "checkpoint: {} blobs, next id {}, super blob {}\n",
        ck.blobs.len(),
        ck.next_blob_id,
        ck.super_blob.map_or("none".to_string(), |s| s.to_string())
    );
    for r in &ck.blobs {
        t += &format!("  {}\n", blob_text(r));
    }
    t += &format!(
        "log: {} records in segments {:?}\n",
        ins.log.len(),
        ins.log_segments
    );
    for e in &ins.log {
        match e.link {
            Some(l) => {
                t += &format!(
                    "  byte {} (page {}) seq {}: link to page {l}\n",
                    e.offset, e.page, e.header.seq
                )
            }
            None => {
                let ms: Vec<String> = e.mutations.iter().map(mutation_text).collect();
                t += &format!(
                    "  byte {} (page {}) seq {}: {}{}\n",
                    e.offset,
                    e.page,
                    e.header.seq,
                    ms.join("; "),
                    e.skipped
                        .as_ref()
                        .map(|w| format!(" — SKIPPED: {w}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    t += &format!(
        "log ends at byte {} (page {}, next seq {}): {}",
        ins.tail_offset, ins.tail_page, ins.next_seq, ins.stop_reason
    );
    out(&t)
}

fn run_fsck(p: Pos, repair: bool, json: bool) -> CliResult<()> {
    let what = format!("bs fsck {}", p.image_name);
    let dev = p.open()?;
    let r = fsck(&dev, FsckOptions { repair }).map_err(|e| bs_err(&what, e))?;
    if json {
        let v = serde_json::to_value(&r).map_err(|e| CliError::new("formatting JSON", e))?;
        let mut v = v;
        if let Value::Object(m) = &mut v {
            m.insert("clean".into(), Value::Bool(r.is_clean()));
        }
        out(&to_json(&v)?)?;
    } else {
        out(&r.to_string())?;
    }
    if r.is_clean() {
        return Ok(());
    }
    let errors: Vec<&oxblob_blobstore::Finding> = r
        .current_findings()
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    let first = errors
        .first()
        .map(|f| f.message.clone())
        .or_else(|| r.unrepaired.first().cloned())
        .unwrap_or_default();
    let why = if repair {
        format!(
            "damage remains after repair ({} errors): {first}",
            errors.len()
        )
    } else {
        format!("{} errors found: {first}", errors.len())
    };
    Err(CliError::new(what, why))
}

fn create(p: Pos, size: &str, thin: bool, xattrs: &[String]) -> CliResult<()> {
    let what = format!("bs create {}", p.image_name);
    let mut xs = Vec::new();
    for x in xattrs {
        let Some((n, v)) = x.split_once('=') else {
            return Err(CliError::new(
                &what,
                format!("--xattr '{x}' is not NAME=VALUE"),
            ));
        };
        xs.push((n.to_string(), v.as_bytes().to_vec()));
    }
    let bs = p.load(&what, false)?;
    let n = parse_blob_size(size, bs.cluster_size())
        .map_err(|e| CliError::new(&what, format!("--size: {e}")))?;
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: n,
            thin,
            xattrs: xs,
        })
        .map_err(|e| bs_err(&what, e))?;
    bs.unload().map_err(|e| bs_err(&what, e))?;
    out(&id.to_string())
}

fn ls(p: Pos, json: bool) -> CliResult<()> {
    let what = format!("bs ls {}", p.image_name);
    let bs = p.load(&what, true)?;
    let blobs = bs.blobs().map_err(|e| bs_err(&what, e))?;
    let cs = bs.cluster_size();
    use oxblob_format::blob::{FLAG_READ_ONLY, FLAG_THIN};
    if json {
        let v: Vec<Value> = blobs
            .iter()
            .map(|b| {
                json!({
                    "id": b.id,
                    "num_clusters": b.num_clusters,
                    "size_bytes": b.num_clusters * cs,
                    "allocated_clusters": b.allocated_clusters,
                    "thin": b.flags & FLAG_THIN != 0,
                    "read_only": b.flags & FLAG_READ_ONLY != 0,
                    "parent": if b.parent == 0 { Value::Null } else { json!(b.parent) },
                    "xattrs": b.xattrs.len(),
                })
            })
            .collect();
        return out(&to_json(&Value::Array(v))?);
    }
    let mut t = format!(
        "{:>10} {:>10} {:>10} {:>5} {:>3} {:>10} {:>6}",
        "ID", "SIZE", "ALLOC", "THIN", "RO", "PARENT", "XATTRS"
    );
    for b in &blobs {
        t += &format!(
            "\n{:>10} {:>10} {:>10} {:>5} {:>3} {:>10} {:>6}",
            b.id,
            format_size(b.num_clusters * cs),
            format_size(b.allocated_clusters * cs),
            if b.flags & FLAG_THIN != 0 {
                "yes"
            } else {
                "no"
            },
            if b.flags & FLAG_READ_ONLY != 0 {
                "yes"
            } else {
                "no"
            },
            if b.parent == 0 {
                "-".to_string()
            } else {
                b.parent.to_string()
            },
            b.xattrs.len()
        );
    }
    out(&t)
}

fn stat(mut p: Pos, json: bool) -> CliResult<()> {
    let id = p.id()?;
    let what = format!("bs stat {id}");
    let bs = p.load(&what, true)?;
    let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
    let cs = bs.cluster_size();
    let names = b.xattr_names();
    let xattrs: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (n.clone(), b.get_xattr(n).unwrap_or_default()))
        .collect();
    let len = b
        .get_internal_xattr(LENGTH_XATTR)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes);
    let mut flags = Vec::new();
    if b.is_thin() {
        flags.push("thin");
    }
    if b.is_read_only() {
        flags.push("read-only");
    }
    if json {
        let v = json!({
            "id": id,
            "num_clusters": b.num_clusters(),
            "size_bytes": b.size_bytes(),
            "allocated_clusters": b.allocated_clusters(),
            "thin": b.is_thin(),
            "read_only": b.is_read_only(),
            "parent": if b.parent() == 0 { Value::Null } else { json!(b.parent()) },
            "imported_length": len,
            "extents": b.extents().iter().map(|e| json!({"logical": e.logical, "physical": e.physical, "count": e.count})).collect::<Vec<_>>(),
            "xattrs": xattrs.iter().map(|(n, v)| json!({"name": n, "value": text_of(v)})).collect::<Vec<_>>(),
        });
        return out(&to_json(&v)?);
    }
    let mut t = format!(
        "blob {id}\n  size       {} clusters ({})\n  allocated  {} clusters ({})\n  flags      {}\n  \
         parent     {}",
        b.num_clusters(),
        format_size(b.size_bytes()),
        b.allocated_clusters(),
        format_size(b.allocated_clusters() * cs),
        if flags.is_empty() { "-".to_string() } else { flags.join(", ") },
        if b.parent() == 0 { "-".to_string() } else { b.parent().to_string() },
    );
    if let Some(l) = len {
        t += &format!("\n  imported   {l} bytes");
    }
    for e in b.extents() {
        t += &format!(
            "\n  extent     logical {}..{} -> cluster {}",
            e.logical,
            e.logical + e.count,
            e.physical
        );
    }
    for (n, v) in &xattrs {
        t += &format!("\n  xattr      {n} = {}", text_of(v));
    }
    out(&t)
}

fn xattr(mut p: Pos, op: char) -> CliResult<()> {
    let id = p.id()?;
    let name = p.next();
    let what = format!(
        "bs xattr {} {id} {name}",
        match op {
            'g' => "get",
            's' => "set",
            _ => "rm",
        }
    );
    match op {
        'g' => {
            let bs = p.load(&what, true)?;
            let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
            let v = b
                .get_xattr(&name)
                .ok_or_else(|| CliError::new(&what, format!("blob {id} has no xattr '{name}'")))?;
            let mut o = std::io::stdout().lock();
            o.write_all(&v)
                .and_then(|()| {
                    if std::io::stdout().is_terminal() {
                        o.write_all(b"\n")
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| o.flush())
                .map_err(|e| CliError::new("writing the output", e))
        }
        's' => {
            let value = p.next();
            let bs = p.load(&what, false)?;
            let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
            b.set_xattr(&name, value.as_bytes())
                .map_err(|e| bs_err(&what, e))?;
            b.close().map_err(|e| bs_err(&what, e))?;
            bs.unload().map_err(|e| bs_err(&what, e))
        }
        _ => {
            let bs = p.load(&what, false)?;
            let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
            let had = b.remove_xattr(&name).map_err(|e| bs_err(&what, e))?;
            b.close().map_err(|e| bs_err(&what, e))?;
            bs.unload().map_err(|e| bs_err(&what, e))?;
            if had {
                Ok(())
            } else {
                Err(CliError::new(
                    &what,
                    format!("blob {id} has no xattr '{name}'"),
                ))
            }
        }
    }
}

/// Bytes per import/export request.
const CHUNK: usize = 1 << 20;

fn bar(len: u64, label: &str) -> Option<ProgressBar> {
    if len < (64 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(len);
    if let Ok(s) = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        b.set_style(s.progress_chars("=> "));
    }
    b.set_prefix(label.to_string());
    Some(b)
}

fn import(mut p: Pos, thin: bool) -> CliResult<()> {
    let path = p.next();
    let what = format!("bs import {path}");
    let mut f = std::fs::File::open(&path).map_err(|e| CliError::new(&what, e))?;
    let len = f.metadata().map_err(|e| CliError::new(&what, e))?.len();
    let bs = p.load(&what, false)?;
    let cs = bs.cluster_size();
    let io = bs.io_unit() as usize;
    let id = bs
        .create_blob(CreateOptions {
            num_clusters: len.div_ceil(cs),
            thin,
            xattrs: Vec::new(),
        })
        .map_err(|e| bs_err(&what, e))?;
    let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
    b.set_internal_xattr(LENGTH_XATTR, &len.to_le_bytes())
        .map_err(|e| bs_err(&what, e))?;
    let mut ch = bs.channel().map_err(|e| bs_err(&what, e))?;
    let pb = bar(len, "import");
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < len {
        let want = ((len - off) as usize).min(CHUNK);
        f.read_exact(&mut buf[..want])
            .map_err(|e| CliError::new(&what, format!("reading at byte {off}: {e}")))?;
        let padded = want.div_ceil(io) * io;
        buf[want..padded].fill(0);
        if thin {
            // A thin blob stays unallocated where the file is all zeroes, cluster by cluster
            // (chunks start cluster-aligned or inside one cluster).
            let piece = (cs as usize).min(CHUNK);
            for (i, part) in buf[..padded].chunks(piece).enumerate() {
                if part.iter().any(|&x| x != 0) {
                    b.write(&mut ch, off + (i * piece) as u64, part)
                        .map_err(|e| bs_err(&what, e))?;
                }
            }
        } else {
            b.write(&mut ch, off, &buf[..padded])
                .map_err(|e| bs_err(&what, e))?;
        }
        off += want as u64;
        if let Some(pb) = &pb {
            pb.set_position(off);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    b.close().map_err(|e| bs_err(&what, e))?;
    bs.unload().map_err(|e| bs_err(&what, e))?;
    out(&id.to_string())
}

fn export(mut p: Pos) -> CliResult<()> {
    let id = p.id()?;
    let path = p.next();
    let what = format!("bs export {id} {path}");
    let bs = p.load(&what, true)?;
    let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
    let len = b
        .get_internal_xattr(LENGTH_XATTR)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_le_bytes)
        .unwrap_or(b.size_bytes())
        .min(b.size_bytes());
    let io = bs.io_unit() as usize;
    let mut f = std::fs::File::create(&path).map_err(|e| CliError::new(&what, e))?;
    let mut ch = bs.channel().map_err(|e| bs_err(&what, e))?;
    let pb = bar(len, "export");
    let mut off = 0u64;
    while off < len {
        let want = ((len - off) as usize).min(CHUNK);
        let data = b
            .read(&mut ch, off, want.div_ceil(io) * io)
            .map_err(|e| bs_err(&what, e))?;
        f.write_all(&data[..want])
            .map_err(|e| CliError::new(&what, e))?;
        off += want as u64;
        if let Some(pb) = &pb {
            pb.set_position(off);
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    f.sync_all().map_err(|e| CliError::new(&what, e))
}

fn rm(mut p: Pos) -> CliResult<()> {
    let id = p.id()?;
    let what = format!("bs rm {id}");
    let bs = p.load(&what, false)?;
    bs.delete_blob(id).map_err(|e| bs_err(&what, e))?;
    bs.unload().map_err(|e| bs_err(&what, e))
}

/// `snapshot ID` (true) or `clone ID` (false): prints the new blob's id.
fn derive(mut p: Pos, snapshot: bool) -> CliResult<()> {
    let id = p.id()?;
    let what = format!("bs {} {id}", if snapshot { "snapshot" } else { "clone" });
    let bs = p.load(&what, false)?;
    let new = if snapshot {
        bs.snapshot(id)
    } else {
        bs.create_clone(id)
    }
    .map_err(|e| bs_err(&what, e))?;
    bs.unload().map_err(|e| bs_err(&what, e))?;
    out(&new.to_string())
}

fn resize(mut p: Pos) -> CliResult<()> {
    let id = p.id()?;
    let size = p.next();
    let what = format!("bs resize {id} {size}");
    let bs = p.load(&what, false)?;
    let n = parse_blob_size(&size, bs.cluster_size()).map_err(|e| CliError::new(&what, e))?;
    let b = bs.open_blob(id).map_err(|e| bs_err(&what, e))?;
    b.resize(n).map_err(|e| bs_err(&what, e))?;
    b.close().map_err(|e| bs_err(&what, e))?;
    bs.unload().map_err(|e| bs_err(&what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_sizes_parse() {
        assert_eq!(parse_id("42"), Ok(42));
        assert_eq!(parse_id("0x2a"), Ok(42));
        assert!(parse_id("0").is_err());
        assert!(parse_id("x").is_err());
        assert_eq!(parse_blob_size("3", 1 << 20), Ok(3));
        assert_eq!(parse_blob_size("3M", 1 << 20), Ok(3));
        assert_eq!(parse_blob_size("1k", 1 << 20), Ok(1));
        assert_eq!(parse_blob_size("0", 1 << 20), Ok(0));
        assert!(parse_blob_size("3q", 1 << 20).is_err());
    }
}
