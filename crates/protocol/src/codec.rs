//! Little-endian byte writer and a bounds-checked reader.
//!
//! The reader never panics and never allocates more than the input could
//! describe: every length prefix is checked against the bytes that remain
//! before anything is reserved, so hostile input (a fuzzer, a broken worker)
//! yields a [`ProtocolError`] and nothing else.

use crate::error::ProtocolError;

/// Appends little-endian values to a byte buffer.
pub(crate) struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// A length prefix: lengths are validated against the limits before
    /// encoding, so they always fit a `u32`.
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    pub fn u32s(&mut self, v: &[u32]) {
        self.len(v.len());
        for &x in v {
            self.u32(x);
        }
    }
    pub fn pairs(&mut self, v: &[(u32, f32)]) {
        self.len(v.len());
        for &(t, x) in v {
            self.u32(t);
            self.f32(x);
        }
    }
}

/// Reads little-endian values from an untrusted payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(ProtocolError::Truncated)?;
        self.buf = rest;
        Ok(*head)
    }

    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    pub fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub fn f32(&mut self) -> Result<f32, ProtocolError> {
        Ok(f32::from_le_bytes(self.take()?))
    }
    pub fn bool(&mut self) -> Result<bool, ProtocolError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::invalid(format!("boolean byte {other}"))),
        }
    }

    /// A length prefix for `elem`-byte elements, checked against what is
    /// left (so an allocation of that size is always backed by input).
    pub fn len(&mut self, elem: usize, max: usize) -> Result<usize, ProtocolError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(ProtocolError::invalid(format!(
                "{n} elements exceed the limit of {max}"
            )));
        }
        if n.saturating_mul(elem) > self.buf.len() {
            return Err(ProtocolError::Truncated);
        }
        Ok(n)
    }

    pub fn str(&mut self, max: usize) -> Result<String, ProtocolError> {
        let n = self.len(1, max)?;
        let (s, rest) = self
            .buf
            .split_at_checked(n)
            .ok_or(ProtocolError::Truncated)?;
        self.buf = rest;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::invalid("string is not UTF-8"))
    }

    pub fn bytes(&mut self, max: usize) -> Result<Vec<u8>, ProtocolError> {
        let n = self.len(1, max)?;
        let (b, rest) = self
            .buf
            .split_at_checked(n)
            .ok_or(ProtocolError::Truncated)?;
        self.buf = rest;
        Ok(b.to_vec())
    }

    pub fn u32s(&mut self, max: usize) -> Result<Vec<u32>, ProtocolError> {
        let n = self.len(4, max)?;
        (0..n).map(|_| self.u32()).collect()
    }

    pub fn pairs(&mut self, max: usize) -> Result<Vec<(u32, f32)>, ProtocolError> {
        let n = self.len(8, max)?;
        (0..n).map(|_| Ok((self.u32()?, self.f32()?))).collect()
    }

    /// Fails if bytes are left over: a payload is exactly one message.
    pub fn finish(self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::invalid(format!(
                "{} trailing bytes",
                self.buf.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_short_input_is_truncated() {
        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        w.u8(7);
        w.u16(0xBEEF);
        w.u64(u64::MAX - 1);
        w.str("héllo");
        w.pairs(&[(3, -0.5)]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8().expect("u8"), 7);
        assert_eq!(r.u16().expect("u16"), 0xBEEF);
        assert_eq!(r.u64().expect("u64"), u64::MAX - 1);
        assert_eq!(r.str(100).expect("str"), "héllo");
        assert_eq!(r.pairs(10).expect("pairs"), vec![(3, -0.5)]);
        r.finish().expect("nothing left");
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            let all = (|| {
                r.u8()?;
                r.u16()?;
                r.u64()?;
                r.str(100)?;
                r.pairs(10)
            })();
            assert!(all.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_allocating() {
        let buf = u32::MAX.to_le_bytes();
        assert!(matches!(
            Reader::new(&buf).u32s(usize::MAX),
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            Reader::new(&buf).u32s(10),
            Err(ProtocolError::Invalid(_))
        ));
    }
}
