//! The malloc backend: a device in RAM.
//!
//! Memory is an array of `AtomicU64` words, so threads can read and write through their own
//! channels with no lock at all and no `unsafe`: overlapping concurrent writes give some mix of
//! the two at 8-byte granularity (as on a real device, where the outcome of racing writes is
//! unspecified), never undefined behaviour. Requests complete inside `submit`; `poll` hands the
//! completions back. There is no volatile cache, so a flush has nothing to do.

use crate::{
    check_read_into, BdevError, BlockDevice, Capabilities, Completion, DeviceInfo, IoChannel, IoOp,
    Rejected,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Default number of requests a malloc channel holds.
pub const MALLOC_QUEUE_DEPTH: usize = 1024;

struct Shared {
    info: DeviceInfo,
    words: Box<[AtomicU64]>,
    closed: AtomicBool,
}

/// A RAM-backed block device.
pub struct MallocDevice {
    shared: Arc<Shared>,
}

impl MallocDevice {
    /// A zero-filled device of `num_blocks` blocks of `block_size` bytes, named `name`.
    /// `block_size` must be a power of two between 512 and 65536.
    pub fn new(name: &str, block_size: u32, num_blocks: u64) -> Result<Self, BdevError> {
        if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(BdevError::Config(format!(
                "malloc bdev '{name}': block size {block_size} must be a power of two from 512 to 65536"
            )));
        }
        if num_blocks == 0 {
            return Err(BdevError::Config(format!(
                "malloc bdev '{name}': size must be at least one block"
            )));
        }
        let size = num_blocks
            .checked_mul(u64::from(block_size))
            .ok_or_else(|| BdevError::Config(format!("malloc bdev '{name}': size overflows")))?;
        let words = usize::try_from(size / 8).map_err(|_| {
            BdevError::Config(format!(
                "malloc bdev '{name}': {size} bytes do not fit in memory"
            ))
        })?;
        let mut v = Vec::new();
        v.try_reserve_exact(words).map_err(|_| BdevError::Open {
            path: format!("malloc:{name}"),
            message: format!("cannot allocate {size} bytes"),
        })?;
        v.resize_with(words, || AtomicU64::new(0));
        Ok(MallocDevice {
            shared: Arc::new(Shared {
                info: DeviceInfo {
                    name: name.to_string(),
                    backend: "malloc".to_string(),
                    block_size,
                    num_blocks,
                    caps: Capabilities {
                        volatile_write_cache: false,
                        atomic_write_unit: block_size,
                        buf_align: 8,
                        unmap: true,
                        write_zeroes: true,
                        direct_io: false,
                    },
                },
                words: v.into_boxed_slice(),
                closed: AtomicBool::new(false),
            }),
        })
    }
}

impl Shared {
    fn read_into(&self, offset: u64, buf: &mut [u8]) {
        let first = (offset / 8) as usize;
        for (chunk, word) in buf.chunks_exact_mut(8).zip(&self.words[first..]) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    fn write_from(&self, offset: u64, buf: &[u8]) {
        let first = (offset / 8) as usize;
        for (chunk, word) in buf.chunks_exact(8).zip(&self.words[first..]) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn zero(&self, offset: u64, len: u64) {
        let first = (offset / 8) as usize;
        let n = (len / 8) as usize;
        for word in &self.words[first..first + n] {
            word.store(0, Ordering::Relaxed);
        }
    }

    fn execute(&self, op: &mut IoOp) {
        match op {
            IoOp::Read { offset, buf } => self.read_into(*offset, buf),
            IoOp::Readv { offset, bufs } => {
                let mut at = *offset;
                for b in bufs {
                    self.read_into(at, b);
                    at += b.len() as u64;
                }
            }
            IoOp::Write { offset, buf } => self.write_from(*offset, buf),
            IoOp::Writev { offset, bufs } => {
                let mut at = *offset;
                for b in bufs.iter() {
                    self.write_from(at, b);
                    at += b.len() as u64;
                }
            }
            IoOp::Flush => {}
            IoOp::Unmap { offset, len } | IoOp::WriteZeroes { offset, len } => {
                self.zero(*offset, *len)
            }
        }
    }
}

impl BlockDevice for MallocDevice {
    fn info(&self) -> &DeviceInfo {
        &self.shared.info
    }

    fn channel(&self) -> Result<Box<dyn IoChannel>, BdevError> {
        if self.is_closed() {
            return Err(BdevError::Closed);
        }
        Ok(Box::new(MallocChannel {
            shared: Arc::clone(&self.shared),
            done: VecDeque::with_capacity(MALLOC_QUEUE_DEPTH),
        }))
    }

    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn read_into(&self, offset: u64, dst: &mut [u8]) -> Result<bool, BdevError> {
        if !check_read_into(&self.shared.info, self.is_closed(), offset, dst)? {
            return Ok(false);
        }
        self.shared.read_into(offset, dst);
        Ok(true)
    }
}

/// A channel of a [`MallocDevice`].
struct MallocChannel {
    shared: Arc<Shared>,
    done: VecDeque<Completion>,
}

impl IoChannel for MallocChannel {
    fn submit(&mut self, token: u64, mut op: IoOp) -> Result<(), Rejected> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Rejected {
                error: BdevError::Closed,
                op,
            });
        }
        if self.done.len() >= MALLOC_QUEUE_DEPTH {
            return Err(Rejected {
                error: BdevError::QueueFull {
                    capacity: MALLOC_QUEUE_DEPTH,
                },
                op,
            });
        }
        if let Err(error) = op.validate(&self.shared.info) {
            return Err(Rejected { error, op });
        }
        self.shared.execute(&mut op);
        self.done.push_back(Completion {
            token,
            result: Ok(()),
            op,
        });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>, _min: usize) -> Result<usize, BdevError> {
        let n = self.done.len();
        out.extend(self.done.drain(..));
        Ok(n)
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    fn capacity(&self) -> usize {
        MALLOC_QUEUE_DEPTH
    }
}
