//! How keys and values become bytes for the byte-oriented stores (redb, Redis).
//!
//! The [`Codec`] trait is the seam: a byte store is generic over it, so it works for any
//! `K: Serialize + DeserializeOwned` and `V: Serialize + DeserializeOwned`. The default is
//! [`PostcardCodec`]: serde + postcard (compact, varint-based, no schema), with a small header
//! in front of every value:
//!
//! ```text
//! byte 0      format version (currently 1); any other value is refused with a clear error
//! byte 1      flags: bit 0 = body is lz4-compressed, bit 1 = a deadline follows
//! [8 bytes]   deadline, nanoseconds since the UNIX epoch, little endian (only with bit 1)
//! body        postcard(value), lz4-compressed with a 4-byte length prefix when bit 0 is set
//! ```
//!
//! The deadline sits outside the (possibly compressed) body so a store can skip an expired
//! record without decoding its value ([`peek_deadline`]).
//!
//! Keys carry no header: they are lookup keys, and postcard encodes equal values to equal bytes
//! (as long as the key type itself serializes deterministically; a `HashMap` inside a key does
//! not).
//!
//! Decoding never panics: bad bytes come back as a [`StoreError`] of kind
//! [`StoreErrorKind::Fail`](super::StoreErrorKind::Fail) whose message says what is wrong.

use super::{StoreError, Stored};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The value format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

const FLAG_COMPRESSED: u8 = 0b01;
const FLAG_DEADLINE: u8 = 0b10;
const KNOWN_FLAGS: u8 = FLAG_COMPRESSED | FLAG_DEADLINE;
const HEADER: usize = 2;

/// Turns keys and values into bytes and back.
///
/// Implementations must be deterministic for keys (equal keys give equal bytes) and must not
/// panic on any input to the `decode_*` methods. Errors are [`StoreError`]s of kind `Fail`:
/// an encode error means nothing was written, a decode error means the stored bytes are not
/// readable by this codec.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// A short name of the format, including its version (e.g. `"postcard-v1"`). Stores that
    /// persist data record it when they create a file and refuse a file written with another.
    fn name(&self) -> &'static str;

    /// Encode a key.
    fn encode_key<K: Serialize + ?Sized>(&self, key: &K) -> Result<Vec<u8>, StoreError>;

    /// Decode a key produced by [`encode_key`](Codec::encode_key).
    fn decode_key<K: DeserializeOwned>(&self, bytes: &[u8]) -> Result<K, StoreError>;

    /// Encode a value together with its wall-clock deadline.
    fn encode_value<V: Serialize + ?Sized>(
        &self,
        value: &V,
        expires_at: Option<SystemTime>,
    ) -> Result<Vec<u8>, StoreError>;

    /// Decode a value produced by [`encode_value`](Codec::encode_value).
    fn decode_value<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<Stored<V>, StoreError>;
}

/// The default codec: serde + postcard, a version byte, optional lz4 compression.
///
/// ```
/// use cogwheel::store::codec::{Codec, PostcardCodec};
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let codec = PostcardCodec::new();
/// let deadline = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
/// let bytes = codec.encode_value(&vec![1u32, 2, 3], Some(deadline)).unwrap();
/// let stored = codec.decode_value::<Vec<u32>>(&bytes).unwrap();
/// assert_eq!(stored.value, vec![1, 2, 3]);
/// assert_eq!(stored.expires_at, Some(deadline));
/// assert!(codec.decode_value::<Vec<u32>>(&[9, 0, 0]).is_err()); // unknown format version
/// ```
#[derive(Debug, Clone, Default)]
pub struct PostcardCodec {
    /// Compress value bodies of at least this many bytes (`None`: never compress).
    #[cfg(feature = "compression")]
    compress_min: Option<usize>,
}

impl PostcardCodec {
    /// A codec that does not compress (it still reads compressed records when the
    /// `compression` feature is on).
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec that lz4-compresses value bodies of at least `min_len` bytes, keeping the
    /// compressed form only when it is smaller. 64 is a sensible threshold: below it lz4 rarely
    /// wins.
    #[cfg(feature = "compression")]
    pub fn compressed(min_len: usize) -> Self {
        PostcardCodec {
            compress_min: Some(min_len),
        }
    }

    #[cfg(feature = "compression")]
    fn maybe_compress(&self, body: Vec<u8>) -> (Vec<u8>, bool) {
        match self.compress_min {
            // lz4_flex prepends the length as a `u32`: a longer body would decompress wrong.
            Some(min) if body.len() >= min && u32::try_from(body.len()).is_ok() => {
                let packed = lz4_flex::compress_prepend_size(&body);
                if packed.len() < body.len() {
                    (packed, true)
                } else {
                    (body, false)
                }
            }
            _ => (body, false),
        }
    }

    #[cfg(not(feature = "compression"))]
    fn maybe_compress(&self, body: Vec<u8>) -> (Vec<u8>, bool) {
        (body, false)
    }
}

impl Codec for PostcardCodec {
    fn name(&self) -> &'static str {
        "postcard-v1"
    }

    fn encode_key<K: Serialize + ?Sized>(&self, key: &K) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(key).map_err(|e| StoreError::fail("cannot encode key").with_source(e))
    }

    fn decode_key<K: DeserializeOwned>(&self, bytes: &[u8]) -> Result<K, StoreError> {
        let (key, rest) = postcard::take_from_bytes::<K>(bytes)
            .map_err(|e| StoreError::fail("corrupt key: cannot decode").with_source(e))?;
        if !rest.is_empty() {
            return Err(StoreError::fail(format!(
                "corrupt key: {} trailing bytes after the encoded key",
                rest.len()
            )));
        }
        Ok(key)
    }

    fn encode_value<V: Serialize + ?Sized>(
        &self,
        value: &V,
        expires_at: Option<SystemTime>,
    ) -> Result<Vec<u8>, StoreError> {
        let body = postcard::to_stdvec(value)
            .map_err(|e| StoreError::fail("cannot encode value").with_source(e))?;
        let (body, compressed) = self.maybe_compress(body);
        let mut flags = 0;
        if compressed {
            flags |= FLAG_COMPRESSED;
        }
        let deadline = expires_at.map(deadline_nanos);
        if deadline.is_some() {
            flags |= FLAG_DEADLINE;
        }
        let mut out = Vec::with_capacity(HEADER + 8 + body.len());
        out.push(FORMAT_VERSION);
        out.push(flags);
        if let Some(d) = deadline {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn decode_value<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<Stored<V>, StoreError> {
        let (flags, expires_at, body) = split_header(bytes)?;
        let value = if flags & FLAG_COMPRESSED != 0 {
            let plain = decompress(body)?;
            decode_body(&plain)?
        } else {
            decode_body(body)?
        };
        Ok(Stored { value, expires_at })
    }
}

/// The deadline of an encoded value, read from its header without decoding the value.
///
/// Errors like [`Codec::decode_value`] on a bad header.
pub fn peek_deadline(bytes: &[u8]) -> Result<Option<SystemTime>, StoreError> {
    split_header(bytes).map(|(_, deadline, _)| deadline)
}

/// Nanoseconds since the UNIX epoch, clamped to `0..=u64::MAX` (a deadline before 1970 is long
/// past anyway; one after the year 2554 is as good as never).
fn deadline_nanos(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

fn split_header(bytes: &[u8]) -> Result<(u8, Option<SystemTime>, &[u8]), StoreError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| StoreError::fail("corrupt value: empty record"))?;
    if version != FORMAT_VERSION {
        return Err(StoreError::fail(format!(
            "incompatible value format: record has format version {version}, \
             this build reads version {FORMAT_VERSION}"
        )));
    }
    let (&flags, rest) = rest
        .split_first()
        .ok_or_else(|| StoreError::fail("corrupt value: record ends inside its header"))?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(StoreError::fail(format!(
            "corrupt value: unknown flags {flags:#04x}"
        )));
    }
    if flags & FLAG_DEADLINE == 0 {
        return Ok((flags, None, rest));
    }
    let (d, rest) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::fail("corrupt value: record ends inside its deadline"))?;
    let nanos = u64::from_le_bytes(*d);
    Ok((flags, Some(UNIX_EPOCH + Duration::from_nanos(nanos)), rest))
}

fn decode_body<V: DeserializeOwned>(body: &[u8]) -> Result<V, StoreError> {
    let (value, rest) = postcard::take_from_bytes::<V>(body)
        .map_err(|e| StoreError::fail("corrupt value: cannot decode").with_source(e))?;
    if !rest.is_empty() {
        return Err(StoreError::fail(format!(
            "corrupt value: {} trailing bytes after the encoded value",
            rest.len()
        )));
    }
    Ok(value)
}

#[cfg(feature = "compression")]
fn decompress(body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let (len, packed) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| StoreError::fail("corrupt value: compressed body too short"))?;
    let len = u32::from_le_bytes(*len) as usize;
    // lz4 cannot expand a block by more than ~255×; refuse larger claims instead of allocating
    // whatever a corrupt length prefix asks for.
    if len > packed.len().saturating_mul(255).saturating_add(16) {
        return Err(StoreError::fail(format!(
            "corrupt value: compressed body of {} bytes claims {len} bytes",
            packed.len()
        )));
    }
    lz4_flex::decompress(packed, len)
        .map_err(|e| StoreError::fail("corrupt value: cannot decompress").with_source(e))
}

#[cfg(not(feature = "compression"))]
fn decompress(_body: &[u8]) -> Result<Vec<u8>, StoreError> {
    Err(StoreError::fail(
        "compressed value: this build lacks the `compression` feature needed to read it",
    ))
}

#[cfg(test)]
mod tests;
