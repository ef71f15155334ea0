//! # oxblob-cli — the `oxblob` command-line tool
//!
//! This crate owns the `oxblob` binary: argument parsing (clap), the user-facing error format
//! (`oxblob: <what>: <why>`, non-zero exit, never a panic), the shared way of naming a device
//! ([`device_args::DeviceArgs`]: a spec string or a JSON config plus a bdev name), and the
//! subcommands, one module each under [`cmd`]. Today that is `oxblob bench bdev`, whose engine is
//! [`bdev_bench`]: per-thread channels kept at a fixed queue depth, latency histograms, a
//! readable or JSON report.
//!
//! It does **not** own any storage logic: devices and their spec/config parsing live in
//! `oxblob-bdev`, and later subcommands (mkfs, fsck, ls, mount, ...) are thin front ends over
//! the blobstore and blob file system crates.

pub mod bdev_bench;
pub mod blob_bench;
pub mod cmd;
pub mod device_args;
pub mod error;
pub mod meta_bench;
pub mod size;
