//! How every subcommand names a device: a spec string, or a JSON config plus a bdev name.

use crate::error::{CliError, CliResult};
use clap::Args;
use oxblob_bdev::BlockDevice;
use std::path::PathBuf;
use std::sync::Arc;

/// Device selection shared by every subcommand that opens a block device.
///
/// Either `--dev SPEC` or `--config FILE.json --bdev NAME`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[group(required = true, multiple = true)]
pub struct DeviceArgs {
    /// Device spec: `malloc:SIZE` (RAM), `file:PATH` (io_uring with O_DIRECT where possible,
    /// pread/pwrite where io_uring is unavailable), `uring:PATH` (io_uring only), `psync:PATH`
    /// (pread/pwrite only), or a bare path (same as `file:`). Options follow `?`, joined by `&`:
    /// bs, name, direct, create, qd, sqpoll (e.g. `file:/var/tmp/x.img?create=1GiB`).
    #[arg(long = "dev", value_name = "SPEC", conflicts_with_all = ["config", "bdev"])]
    pub dev: Option<String>,

    /// SPDK-style JSON bdev config file (use with --bdev).
    #[arg(long, value_name = "FILE.json", requires = "bdev")]
    pub config: Option<PathBuf>,

    /// Name of the bdev to open from the --config file.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub bdev: Option<String>,
}

impl DeviceArgs {
    /// A short description of the device for messages: the spec, or `NAME in FILE`.
    pub fn describe(&self) -> String {
        match (&self.dev, &self.config, &self.bdev) {
            (Some(spec), _, _) => format!("'{spec}'"),
            (None, Some(cfg), Some(name)) => format!("bdev '{name}' of {}", cfg.display()),
            _ => "(no device given)".to_string(),
        }
    }

    /// Opens the device.
    pub fn open(&self) -> CliResult<Arc<dyn BlockDevice>> {
        let what = format!("opening device {}", self.describe());
        match (&self.dev, &self.config, &self.bdev) {
            (Some(spec), None, None) => {
                oxblob_bdev::spec::open(spec).map_err(|e| CliError::new(what, e))
            }
            (None, Some(cfg), Some(name)) => {
                oxblob_bdev::config::open_from_config(cfg, name).map_err(|e| CliError::new(what, e))
            }
            _ => Err(CliError::new(
                what,
                "give either --dev SPEC or both --config FILE.json and --bdev NAME",
            )),
        }
    }
}
