//! Owned, aligned I/O buffers.
//!
//! Every buffer handed to a channel is an [`IoBuf`]: its start is aligned to
//! [`IO_BUF_ALIGN`] bytes, which satisfies `O_DIRECT` on every device whose logical block size is
//! at most 4 KiB. Ownership moves into the channel on submit and comes back in the
//! [`Completion`](crate::Completion), so the device reads and writes the caller's memory directly
//! (zero copy) and no one else can touch it while the I/O is in flight.

use aligned_vec::{AVec, ConstAlign};
use std::ops::{Deref, DerefMut};

/// Alignment, in bytes, of the first byte of every [`IoBuf`].
pub const IO_BUF_ALIGN: usize = 4096;

/// An owned byte buffer whose start is aligned to [`IO_BUF_ALIGN`].
pub struct IoBuf {
    data: AVec<u8, ConstAlign<IO_BUF_ALIGN>>,
}

impl IoBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut data = AVec::with_capacity(IO_BUF_ALIGN, len);
        data.resize(len, 0);
        IoBuf { data }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        IoBuf {
            data: AVec::from_slice(IO_BUF_ALIGN, bytes),
        }
    }

    /// A buffer of `len` bytes, each set to `byte`.
    pub fn filled(len: usize, byte: u8) -> Self {
        let mut data = AVec::with_capacity(IO_BUF_ALIGN, len);
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
}
