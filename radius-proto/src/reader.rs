//! A strict, bounded byte reader for decoding RADIUS datagrams.
//!
//! Modelled on the `Reader` of rustls' `msgs::codec`: every read is checked
//! against the bytes that remain, nothing ever panics, and nothing is ever
//! allocated from a length read off the wire. Reads hand out borrowed slices of
//! the input; a caller that wants to own the bytes copies exactly what it was
//! given, so an attacker's length field can at most select a part of a buffer
//! that already exists.
//!
//! A reader that should have consumed its whole input is closed with
//! [`Reader::finish`], which refuses trailing bytes.

/// Trailing bytes were left in a [`Reader`] that was expected to be empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{left} trailing byte(s) after the end of the structure")]
pub struct TrailingBytes {
    /// How many bytes were left unread.
    pub left: usize,
}

/// A cursor over a borrowed byte slice that never reads past its end.
///
/// Every method that reads returns `None` when the input is too short, and in
/// that case consumes nothing, so a failed read leaves the reader where it was.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    /// The whole input; never modified.
    buf: &'a [u8],
    /// How many bytes of `buf` have been consumed; always `<= buf.len()`.
    cursor: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, cursor: 0 }
    }

    /// How many bytes have been consumed so far (the offset of the next read).
    #[must_use]
    pub fn used(&self) -> usize {
        self.cursor
    }

    /// How many bytes remain to be read.
    #[must_use]
    pub fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.cursor)
    }

    /// Whether any bytes remain.
    #[must_use]
    pub fn any_left(&self) -> bool {
        self.left() > 0
    }

    /// Takes the next `len` bytes, or `None` (consuming nothing) if fewer remain.
    pub fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.cursor.checked_add(len)?;
        let out = self.buf.get(self.cursor..end)?;
        self.cursor = end;
        Some(out)
    }

    /// Takes everything that remains (possibly nothing).
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.cursor..).unwrap_or_default();
        self.cursor = self.buf.len();
        out
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    /// Reads a big-endian (network order) `u16`.
    pub fn u16_be(&mut self) -> Option<u16> {
        let bytes: [u8; 2] = self.array()?;
        Some(u16::from_be_bytes(bytes))
    }

    /// Reads a big-endian (network order) `u32`.
    pub fn u32_be(&mut self) -> Option<u32> {
        let bytes: [u8; 4] = self.array()?;
        Some(u32::from_be_bytes(bytes))
    }

    /// Reads exactly `N` bytes into an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let before = self.cursor;
        let bytes = self.take(N)?;
        match <[u8; N]>::try_from(bytes) {
            Ok(array) => Some(array),
            Err(_) => {
                // Unreachable: `take(N)` returns exactly N bytes. Kept total anyway.
                self.cursor = before;
                None
            }
        }
    }

    /// Splits off a sub-reader over the next `len` bytes, consuming them here.
    ///
    /// Used for length-prefixed structures: the sub-reader cannot read past the
    /// structure's own length even if its contents lie about theirs.
    pub fn sub(&mut self, len: usize) -> Option<Reader<'a>> {
        self.take(len).map(Reader::new)
    }

    /// Closes a reader that should have been read to its end.
    ///
    /// # Errors
    ///
    /// [`TrailingBytes`] if any input is left unread.
    pub fn finish(self) -> Result<(), TrailingBytes> {
        match self.left() {
            0 => Ok(()),
            left => Err(TrailingBytes { left }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_and_tracks_position() {
        let mut r = Reader::new(&[1, 0, 2, 0, 0, 0, 3, 9]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16_be(), Some(2));
        assert_eq!(r.used(), 3);
        assert_eq!(r.u32_be(), Some(3));
        assert_eq!(r.left(), 1);
        assert!(r.any_left());
        assert_eq!(r.rest(), &[9]);
        assert!(!r.any_left());
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_reads_fail_without_consuming() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32_be(), None);
        assert_eq!(r.array::<4>(), None);
        assert_eq!(r.take(4), None);
        assert_eq!(r.used(), 0);
        assert_eq!(r.take(3), Some(&[1u8, 2, 3][..]));
        assert_eq!(r.u8(), None);
        assert_eq!(r.u16_be(), None);
        assert_eq!(r.take(0), Some(&[][..]));
    }

    #[test]
    fn huge_lengths_do_not_overflow_or_allocate() {
        let mut r = Reader::new(&[0; 8]);
        assert_eq!(r.u8(), Some(0));
        assert_eq!(r.take(usize::MAX), None);
        assert!(r.sub(usize::MAX).is_none());
        assert_eq!(r.left(), 7);
    }

    #[test]
    fn finish_refuses_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.finish(), Err(TrailingBytes { left: 2 }));
    }

    #[test]
    fn sub_reader_is_bounded_by_its_length() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5]);
        let mut sub = r.sub(2).expect("two bytes available");
        assert_eq!(r.used(), 2);
        assert_eq!(sub.u8(), Some(1));
        assert_eq!(sub.u16_be(), None);
        assert_eq!(sub.u8(), Some(2));
        assert_eq!(sub.finish(), Ok(()));
        assert_eq!(r.rest(), &[3, 4, 5]);
    }

    #[test]
    fn rest_of_an_empty_reader_is_empty() {
        let mut r = Reader::new(&[]);
        assert_eq!(r.rest(), &[] as &[u8]);
        assert_eq!(r.finish(), Ok(()));
    }
}
