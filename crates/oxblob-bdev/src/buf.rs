//! Owned, aligned I/O buffers.
//!
//! Every buffer handed to a channel is an [`IoBuf`]: its start is aligned to
//! [`IO_BUF_ALIGN`] bytes, which satisfies `O_DIRECT` on every device whose logical block size is
//! at most 4 KiB. Ownership moves into the channel on submit and comes back in the
//! [`Completion`](crate::Completion), so the device reads and writes the caller's memory directly
//! (zero copy) and no one else can touch it while the I/O is in flight.
//!
//! Buffers are recycled: a dropped buffer goes to one of two small per-thread free lists —
//! large (at least 64 KiB: at most 8 buffers, 16 MiB) and small (a page up to 64 KiB: at most
//! 16 buffers) — and the next buffer of a fitting size made on that thread reuses it.
//! Without it, the allocator hands freed memory back to the kernel and the next buffer faults
//! in and clears fresh pages: for large buffers every I/O maps fresh memory (`clear_page` was
//! ~13% of the CPU time of a RocksDB fill through blobfs, whose flushes move 1 MiB buffers);
//! for page-sized ones, the heap's top is trimmed and regrown around each metadata record
//! (`clear_page` under the record path was ~10% of the CPU time of creating 300,000 files).

use aligned_vec::{AVec, ConstAlign};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Alignment, in bytes, of the first byte of every [`IoBuf`].
pub const IO_BUF_ALIGN: usize = 4096;

type Storage = AVec<u8, ConstAlign<IO_BUF_ALIGN>>;

/// Smallest capacity a buffer of the large pool has.
const POOL_MIN: usize = 64 * 1024;
/// Most buffers kept per thread in the large pool.
const POOL_BUFS: usize = 8;
/// Most bytes kept per thread in the large pool.
const POOL_BYTES: usize = 16 << 20;
/// Smallest capacity a buffer of the small pool has (smaller ones are not recycled).
const SMALL_MIN: usize = 4096;
/// Most buffers kept per thread in the small pool (each under [`POOL_MIN`]: under 1 MiB).
const SMALL_BUFS: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Storage>> = const { RefCell::new(Vec::new()) };
    static SMALL: RefCell<Vec<Storage>> = const { RefCell::new(Vec::new()) };
}

/// The pool buffers of `cap` bytes belong to, if any.
fn pool_of(cap: usize) -> Option<&'static std::thread::LocalKey<RefCell<Vec<Storage>>>> {
    if cap >= POOL_MIN {
        Some(&POOL)
    } else if cap >= SMALL_MIN {
        Some(&SMALL)
    } else {
        None
    }
}

/// Empty storage with room for `len` bytes: a recycled buffer of this thread when one fits
/// (capacity from `len` to twice `len`), else a new allocation.
fn storage(len: usize) -> Storage {
    // A request of half a pool's smallest capacity can take a buffer of that pool.
    if let Some(pool) = pool_of(len.saturating_mul(2)) {
        let reused = pool
            .try_with(|p| {
                let mut p = p.try_borrow_mut().ok()?;
                let i = p
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
                    .min_by_key(|(_, v)| v.capacity())
                    .map(|(i, _)| i)?;
                Some(p.swap_remove(i))
            })
            .ok()
            .flatten();
        if let Some(v) = reused {
            return v;
        }
    }
    AVec::with_capacity(IO_BUF_ALIGN, pooled_capacity(len))
}

/// The capacity of a new buffer for `len` bytes: rounded up to an eighth of its power of two
/// (at most 12.5% more) when it will be recycled, so that the next request of about the same
/// size (a 1 MiB flush plus a few blocks, say) fits a recycled buffer instead of faulting in
/// fresh memory.
fn pooled_capacity(len: usize) -> usize {
    if pool_of(len).is_none() {
        return len;
    }
    let step = (len.next_power_of_two() / 8).max(SMALL_MIN);
    len.checked_next_multiple_of(step).unwrap_or(len)
}

/// An owned byte buffer whose start is aligned to [`IO_BUF_ALIGN`].
pub struct IoBuf {
    data: AVec<u8, ConstAlign<IO_BUF_ALIGN>>,
}

impl IoBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut data = storage(len);
        data.resize(len, 0);
        IoBuf { data }
    }

    /// An empty buffer with room for `cap` bytes, to be filled with
    /// [`IoBuf::extend_from_slice`]: building a buffer from pieces this way writes each byte
    /// once, where [`IoBuf::zeroed`] would clear it first.
    pub fn with_capacity(cap: usize) -> Self {
        IoBuf { data: storage(cap) }
    }

    /// Appends a copy of `bytes` (growing the buffer if needed, keeping its alignment).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut data = storage(bytes.len());
        data.extend_from_slice(bytes);
        IoBuf { data }
    }

    /// A buffer of `len` bytes, each set to `byte`.
    pub fn filled(len: usize, byte: u8) -> Self {
        let mut data = storage(len);
        data.resize(len, byte);
        IoBuf { data }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Empties the buffer, keeping its memory (and alignment) for the bytes put in next.
    pub fn clear(&mut self) {
        self.data.clear();
    }

    /// Room in bytes: how long the buffer can grow without a new allocation.
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Changes the length, filling new bytes with zero. Keeps the alignment.
    pub fn resize(&mut self, len: usize) {
        self.data.resize(len, 0);
    }

    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The bytes as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Copies the bytes out into a plain vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.to_vec()
    }
}

impl Drop for IoBuf {
    /// Keeps the buffer for reuse on this thread while its pool has room.
    fn drop(&mut self) {
        let cap = self.data.capacity();
        let Some(pool) = pool_of(cap) else {
            return;
        };
        let (most_bufs, most_bytes) = if cap >= POOL_MIN {
            (POOL_BUFS, POOL_BYTES)
        } else {
            (SMALL_BUFS, usize::MAX)
        };
        let mut v = std::mem::replace(&mut self.data, AVec::new(IO_BUF_ALIGN));
        v.clear();
        let _ = pool.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                let held: usize = p.iter().map(|b| b.capacity()).sum();
                if p.len() < most_bufs && held + cap <= most_bytes {
                    p.push(v);
                }
            }
        });
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Clone for IoBuf {
    fn clone(&self) -> Self {
        IoBuf::from_slice(&self.data)
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBuf({} bytes)", self.data.len())
    }
}

impl PartialEq for IoBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for IoBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned() {
        for len in [0usize, 1, 512, 4096, 65536 + 7] {
            let b = IoBuf::zeroed(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % IO_BUF_ALIGN, 0);
            assert!(b.iter().all(|&x| x == 0));
        }
        let mut b = IoBuf::from_slice(b"hello");
        b.resize(8192);
        assert_eq!(&b[..5], b"hello");
        assert_eq!(b.as_ptr() as usize % IO_BUF_ALIGN, 0);
    }

    #[test]
    fn large_buffers_are_recycled_with_fresh_contents() {
        let mut a = IoBuf::filled(1 << 20, 0xab);
        a[7] = 1;
        let p = a.as_ptr();
        drop(a);
        // The same memory comes back, holding exactly what the constructor says.
        let z = IoBuf::zeroed(1 << 20);
        assert_eq!(z.as_ptr(), p);
        assert!(z.iter().all(|&x| x == 0));
        drop(z);
        let src: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let c = IoBuf::from_slice(&src);
        assert_eq!(c.as_ptr(), p, "a 700 KB buffer reuses the 1 MiB one");
        assert_eq!(c.as_slice(), &src[..]);
        assert_eq!(c.as_ptr() as usize % IO_BUF_ALIGN, 0);
        // Too small for the recycled buffer (less than half of it): a new allocation.
        let small = IoBuf::zeroed(100_000);
        assert_ne!(small.as_ptr(), p);
        drop(c);
        // Small buffers never go to the large pool; the pool is bounded.
        let many: Vec<IoBuf> = (0..20).map(|_| IoBuf::zeroed(4 << 20)).collect();
        drop(many);
        POOL.with(|p| {
            let p = p.borrow();
            assert!(p.len() <= POOL_BUFS);
            assert!(p.iter().map(|b| b.capacity()).sum::<usize>() <= POOL_BYTES);
            assert!(p.iter().all(|b| b.is_empty() && b.capacity() >= POOL_MIN));
        });
    }

    #[test]
    fn buffers_built_from_pieces_hold_exactly_the_pieces_and_recycle_by_size_class() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i % 249) as u8).collect();
        let b: Vec<u8> = (0..(1 << 20) as u32).map(|i| (i % 241) as u8).collect();
        let mut x = IoBuf::with_capacity(a.len() + b.len());
        assert!(x.is_empty());
        x.extend_from_slice(&a);
        x.extend_from_slice(&b);
        assert_eq!(x.as_ptr() as usize % IO_BUF_ALIGN, 0);
        assert_eq!(&x[..a.len()], &a[..]);
        assert_eq!(&x[a.len()..], &b[..]);
        let p = x.as_ptr();
        drop(x);
        // A slightly larger request of the same size class reuses the buffer.
        let y = IoBuf::with_capacity(a.len() + b.len() + 8192);
        assert_eq!(y.as_ptr(), p);
        assert!(y.is_empty(), "a recycled buffer starts empty");
        // Growing past the capacity keeps the alignment and the bytes.
        let mut z = IoBuf::with_capacity(4096);
        z.extend_from_slice(&b);
        assert_eq!(z.as_ptr() as usize % IO_BUF_ALIGN, 0);
        assert_eq!(z.as_slice(), &b[..]);
    }

    #[test]
    fn page_sized_buffers_are_recycled_in_their_own_bounded_pool() {
        let a = IoBuf::filled(4096, 0xab);
        let p = a.as_ptr();
        drop(a);
        // The same page comes back, holding exactly what the constructor says.
        let src: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
        let b = IoBuf::from_slice(&src);
        assert_eq!(b.as_ptr(), p, "a 3000-byte buffer reuses the 4 KiB one");
        assert_eq!(b.as_slice(), &src[..]);
        drop(b);
        let z = IoBuf::zeroed(4096);
        assert_eq!(z.as_ptr(), p);
        assert!(z.iter().all(|&x| x == 0));
        // Under a page: never pooled.
        let tiny = IoBuf::zeroed(512);
        drop(tiny);
        let many: Vec<IoBuf> = (0..40).map(|_| IoBuf::zeroed(8192)).collect();
        drop(many);
        SMALL.with(|s| {
            let s = s.borrow();
            assert!(s.len() <= SMALL_BUFS);
            assert!(s
                .iter()
                .all(|b| b.is_empty() && (SMALL_MIN..POOL_MIN).contains(&b.capacity())));
        });
        POOL.with(|p| assert!(p.borrow().iter().all(|b| b.capacity() >= POOL_MIN)));
        drop(z);
    }
}
