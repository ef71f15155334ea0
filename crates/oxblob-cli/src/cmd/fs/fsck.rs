//! `oxblob fsck IMAGE [--repair] [--json]`: the blobstore check, then the namespace check
//! (`oxblob_blobfs::fsck`). Exit 0 clean, 1 damage (left) found.

use super::{line, to_json, ImageOpts, Target};
use crate::error::{CliError, CliResult};
use clap::Args;
use oxblob_blobfs::{fsck, FsckOptions, NsFinding};
use serde_json::{json, Value};

/// `oxblob fsck`.
#[derive(Args, Debug)]
pub struct FsckArgs {
    /// --config FILE --bdev NAME, in place of IMAGE.
    #[command(flatten)]
    pub image: ImageOpts,
    /// Repair: the blobstore first, then dangling inodes go to /lost+found (or are removed
    /// when their type is unreadable) and orphans are removed. Says which, per inode.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// IMAGE
    #[arg(value_name = "IMAGE")]
    pub args: Vec<String>,
}

fn finding_json(f: &NsFinding) -> Value {
    json!({
        "severity": f.severity,
        "kind": format!("{:?}", f.kind),
        "ino": f.ino,
        "message": f.message,
    })
}

/// Runs `oxblob fsck`.
pub fn run(a: FsckArgs) -> CliResult<()> {
    let t = Target::new("fsck", a.image, a.args, 0, 0, "IMAGE [--repair] [--json]")?;
    let what = format!("fsck {}", t.name);
    let dev = t.dev.open()?;
    let r = fsck(&dev, FsckOptions { repair: a.repair })
        .map_err(|e| CliError::new(&what, super::mount_why(&e)))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let bs =
            serde_json::to_value(&r.blobstore).map_err(|e| CliError::new("formatting JSON", e))?;
        let v = json!({
            "clean": r.is_clean(),
            "blobstore": bs,
            "blobstore_clean": r.blobstore.is_clean(),
            "namespace_checked": r.namespace_checked,
            "not_checked_why": r.not_checked_why,
            "directories": r.dirs,
            "files": r.files,
            "orphans": r.orphans,
            "findings": r.findings.iter().map(finding_json).collect::<Vec<_>>(),
            "repairs": r.repairs,
            "unrepaired": r.unrepaired,
            "after_repair": r.after_repair.as_ref().map(|v| v.iter().map(finding_json).collect::<Vec<_>>()),
            "errors": r.errors(),
        });
        line(&mut out, &to_json(&v)?)?;
    } else {
        line(&mut out, &r.to_string())?;
    }
    if r.is_clean() {
        return Ok(());
    }
    // The first error that describes the image now: the blobstore's before the namespace's
    // (a namespace is checked only on a store that loads).
    let bs_errors: Vec<&str> = r
        .blobstore
        .current_findings()
        .iter()
        .filter(|f| f.severity == oxblob_blobstore::Severity::Error)
        .map(|f| f.message.as_str())
        .collect();
    let first = bs_errors
        .first()
        .map(|m| m.to_string())
        .or_else(|| r.blobstore.unrepaired.first().cloned())
        .or_else(|| {
            r.current_findings()
                .iter()
                .find(|f| f.severity == oxblob_blobstore::Severity::Error)
                .map(|f| f.message.clone())
        })
        .or_else(|| r.unrepaired.first().cloned())
        .or_else(|| r.not_checked_why.clone())
        .unwrap_or_else(|| "the blobstore is damaged".to_string());
    let why = if a.repair {
        format!("damage remains after repair: {first}")
    } else {
        let ns = if r.namespace_checked {
            format!("{} namespace errors", r.errors())
        } else {
            "namespace not checked".to_string()
        };
        format!("{} blobstore errors, {ns}: {first}", bs_errors.len())
    };
    Err(CliError::new(what, why))
}
