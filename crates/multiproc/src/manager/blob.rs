//! The bytes of one key, value or item in the manager protocol: owned, or
//! a share of the large frame they arrived in.
//!
//! A large message reaches its reader as one fresh buffer (the frame,
//! copied out of the sender's shared memory). Decoded as a plain byte
//! buffer, a value inside it was copied once more; decoded with
//! [`decode_framed`], a value that is most of its frame keeps the frame
//! (behind an [`Arc`]) and its place in it. The manager then stores it as
//! it came, and a read of it answers another share of the same buffer.
//!
//! Only a value of at least [`SHARE_MIN`] bytes that is more than half of
//! its frame shares it, so a stored value holds at most about twice its
//! size (a frame of many smaller values, an `extend` of a dict say, is
//! copied apart as before and frees each value's memory with the value).
//!
//! The other way, [`Gathered`] encodes a message with its large shared
//! values left out of the encoding buffer: the message goes out as parts
//! (see `Connection::send_bytes_parts`), so a value read from the manager,
//! or a large value a client sends, is not first copied into the buffer.
//!
//! Together: a 1 MiB value set and read back is copied 6 times, where it
//! was 11 (three copies fewer in the manager: the decode, the clone for
//! the answer and its encoding; two in the client: the request's encoding
//! and the answer's decode). What is left: each side encodes or decodes
//! the value itself, and copies each message into, or out of, the shared
//! memory (the reader copies before decoding: the writer could change the
//! memory meanwhile).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::wire::{self, WireError};

/// The fewest bytes a value has to share its frame, or, as the manager
/// stores it, to be kept behind an [`Arc`] (so that reading it costs no
/// copy); smaller ones are copied (a copy costs less than the sharing).
pub(crate) const SHARE_MIN: usize = 64 << 10;

/// Bytes of one encoded key, value or item.
#[derive(Clone, Default)]
pub(crate) struct Blob(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<u8>),
    Shared { frame: Arc<Vec<u8>>, start: usize, len: usize },
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Owned(Vec::new())
    }
}

impl Blob {
    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { frame, start, len } => &frame[*start..*start + *len],
        }
    }

    /// The bytes as a vector of their own (copied if shared, unless this
    /// is the only share of a frame that holds nothing else).
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { frame, start: 0, len } if len == frame.len() => {
                Arc::try_unwrap(frame).unwrap_or_else(|shared| shared[..len].to_vec())
            }
            Repr::Shared { frame, start, len } => frame[start..start + len].to_vec(),
        }
    }

    /// The bytes as the manager keeps them: large owned ones go behind an
    /// [`Arc`] (a move, not a copy), so that every read of them shares
    /// them instead of copying them.
    pub(crate) fn kept(self) -> Blob {
        match self.0 {
            Repr::Owned(v) if v.len() >= SHARE_MIN => {
                let len = v.len();
                Blob(Repr::Shared { frame: Arc::new(v), start: 0, len })
            }
            other => Blob(other),
        }
    }

    /// True when the bytes share a buffer (for tests).
    #[cfg(test)]
    fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(Repr::Owned(v))
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Blob) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Blob {}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be megabytes: their size says enough.
        write!(f, "Blob({} bytes)", self.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Repr::Shared { len, .. } = self.0
            && len >= SHARE_MIN
            && GATHERING.try_with(Cell::get).unwrap_or(false)
        {
            // Offered to the `Gather` output that receives these very
            // bytes next, which keeps this share instead of copying them.
            let _ = OFFERED.try_with(|o| o.replace(Some(self.clone())));
        }
        s.serialize_bytes(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        // `deserialize_bytes`: postcard lends the bytes from the frame
        // (its `deserialize_byte_buf` hands a temporary copy).
        d.deserialize_bytes(BlobVisitor)
    }
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Blob, E> {
        Ok(share_of_frame(v).unwrap_or_else(|| Blob::from(v.to_vec())))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob::from(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob::from(v))
    }
}

thread_local! {
    /// The frame [`decode_framed`] decodes on this thread, if any.
    static FRAME: RefCell<Option<Arc<Vec<u8>>>> = const { RefCell::new(None) };
    /// True while [`Gathered::encode`] runs on this thread.
    static GATHERING: Cell<bool> = const { Cell::new(false) };
    /// The shared value whose bytes the encoder writes next (see
    /// `Blob::serialize`).
    static OFFERED: RefCell<Option<Blob>> = const { RefCell::new(None) };
}

/// `bytes` as a share of the frame being decoded on this thread, when they
/// lie inside it and are worth sharing (see the module's doc).
fn share_of_frame(bytes: &[u8]) -> Option<Blob> {
    if bytes.len() < SHARE_MIN {
        return None;
    }
    FRAME
        .try_with(|f| {
            let f = f.try_borrow().ok()?;
            let frame = f.as_ref()?;
            // Addresses compared as numbers: the bytes are a share only if
            // they lie inside the frame's buffer.
            let base = frame.as_ptr() as usize;
            let start = (bytes.as_ptr() as usize).checked_sub(base)?;
            let inside = start.checked_add(bytes.len())? <= frame.len();
            (inside && bytes.len() * 2 > frame.len())
                .then(|| Blob(Repr::Shared { frame: Arc::clone(frame), start, len: bytes.len() }))
        })
        .ok()
        .flatten()
}

/// Decodes a `T` from a whole frame, which it takes: a large enough
/// [`Blob`] inside keeps the frame and its place in it instead of copying
/// its bytes (see the module's doc).
pub(crate) fn decode_framed<T: DeserializeOwned>(frame: Vec<u8>) -> Result<T, WireError> {
    if frame.len() < SHARE_MIN {
        return wire::decode(&frame, Vec::new());
    }
    let frame = Arc::new(frame);
    // (Without this thread's locals, in a thread-local's destructor, the
    // values are copied out as usual.)
    let before = FRAME.try_with(|f| f.replace(Some(Arc::clone(&frame)))).ok().flatten();
    let decoded = wire::decode(&frame, Vec::new());
    let _ = FRAME.try_with(|f| f.replace(before));
    decoded
}

/// A message encoded with its large shared values left out: `bytes` holds
/// the rest, and each hole says where in it a value's bytes go. Sent as
/// [`Gathered::parts`].
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub bytes: Vec<u8>,
    holes: Vec<(usize, Blob)>,
}

impl Gathered {
    /// Encodes `message` into `bytes` (which it clears first), leaving its
    /// large shared values out; on error, `bytes` is left empty.
    pub(crate) fn encode<T: Serialize + ?Sized>(message: &T, bytes: Vec<u8>) -> Result<Gathered, WireError> {
        let mut out = Gathered { bytes, holes: Vec::new() };
        out.bytes.clear();
        // (`try_with`: in a thread-local's destructor, as the thread ends,
        // this thread's locals may be gone; the message is then whole.)
        let before = GATHERING.try_with(|g| g.replace(true)).unwrap_or(false);
        let result = postcard::serialize_with_flavor(message, Gather(&mut out));
        let _ = GATHERING.try_with(|g| g.set(before));
        let _ = OFFERED.try_with(|o| o.replace(None));
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                out.bytes.clear();
                out.holes.clear();
                Err(WireError::Encode(e.to_string()))
            }
        }
    }

    /// The encoding's length.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() + self.holes.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// Runs `f` on the encoding's parts ([`Gathered::parts`]; no
    /// allocation when there is only `bytes`).
    pub(crate) fn with_parts<R>(&self, f: impl FnOnce(&[&[u8]]) -> R) -> R {
        if self.holes.is_empty() { f(&[&self.bytes]) } else { f(&self.parts()) }
    }

    /// The encoding, in order: pieces of `bytes` and the values between
    /// them.
    pub(crate) fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(2 * self.holes.len() + 1);
        let mut from = 0;
        for (at, blob) in &self.holes {
            parts.push(&self.bytes[from..*at]);
            parts.push(blob.as_slice());
            from = *at;
        }
        parts.push(&self.bytes[from..]);
        parts
    }
}

/// The postcard output of [`Gathered::encode`].
struct Gather<'a>(&'a mut Gathered);

impl postcard::ser_flavors::Flavor for Gather<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() >= SHARE_MIN
            && let Some(blob) = OFFERED.try_with(|o| o.take()).ok().flatten()
            // The same bytes (by address and length) as the value offered.
            && blob.as_ptr() == data.as_ptr()
            && blob.len() == data.len()
        {
            self.0.holes.push((self.0.bytes.len(), blob));
            return Ok(());
        }
        wire::Append(&mut self.0.bytes).try_extend(data)
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        wire::Append(&mut self.0.bytes).try_push(data)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame holding a header of `head` bytes and then `value`, as the
    /// protocol lays out a request: (u8, Blob).
    fn frame(head: u8, value: &[u8]) -> Vec<u8> {
        wire::encode(&(head, Blob::from(value.to_vec()))).unwrap().bytes
    }

    #[test]
    fn a_large_value_shares_its_frame_and_a_small_one_is_copied() {
        let big: Vec<u8> = (0..SHARE_MIN * 2).map(|i| i as u8).collect();
        let (head, blob): (u8, Blob) = decode_framed(frame(7, &big)).unwrap();
        assert_eq!((head, blob.as_slice()), (7, &big[..]));
        assert!(blob.is_shared());

        let small = vec![5u8; 100];
        let (_, blob): (u8, Blob) = decode_framed(frame(7, &small)).unwrap();
        assert!(!blob.is_shared());
        assert_eq!(blob.as_slice(), &small[..]);
    }

    #[test]
    fn values_that_are_not_most_of_their_frame_are_copied() {
        let part = vec![9u8; SHARE_MIN];
        let two = (Blob::from(part.clone()), Blob::from(part.clone()), Blob::from(vec![1u8; 10]));
        let (a, b, c): (Blob, Blob, Blob) = decode_framed(wire::encode(&two).unwrap().bytes).unwrap();
        assert!(!a.is_shared() && !b.is_shared() && !c.is_shared());
        assert_eq!((a.as_slice(), b.as_slice(), c.as_slice()), (&part[..], &part[..], &[1u8; 10][..]));
    }

    #[test]
    fn outside_decode_framed_nothing_is_shared() {
        let big = vec![3u8; SHARE_MIN * 2];
        let bytes = frame(1, &big);
        let (_, blob): (u8, Blob) = wire::decode(&bytes, Vec::new()).unwrap();
        assert!(!blob.is_shared());
        // And a decode inside a framed one, from another buffer, copies.
        let (_, blob): (u8, Blob) = decode_framed(frame(2, &big)).unwrap();
        let nested: (u8, Blob) = FRAME.with(|f| {
            let _ = f.replace(Some(Arc::new(vec![0u8; 8])));
            let nested = wire::decode(&bytes, Vec::new()).unwrap();
            f.replace(None);
            nested
        });
        assert!(blob.is_shared() && !nested.1.is_shared());
        assert_eq!(nested.1.as_slice(), &big[..]);
    }

    #[test]
    fn a_gathered_message_is_its_encoding_in_parts() {
        let big: Vec<u8> = (0..SHARE_MIN * 3).map(|i| (i * 13) as u8).collect();
        let shared = Blob::from(big.clone()).kept();
        let message = (
            7u32,
            shared.clone(),
            Blob::from(vec![1u8; 10]),
            Blob::from(big.clone()), // owned: copied into the buffer
            shared,
            Some(5u64),
        );
        let whole = wire::encode(&message).unwrap().bytes;
        let gathered = Gathered::encode(&message, vec![9; 3]).unwrap();
        assert_eq!(gathered.holes.len(), 2, "the two shares of the kept value");
        assert_eq!(gathered.len(), whole.len());
        assert_eq!(gathered.parts().concat(), whole);
        // Nothing is left offered once the encoding is done.
        assert!(OFFERED.with(|o| o.borrow().is_none()) && !GATHERING.with(Cell::get));
        let plain = wire::encode(&(Blob::from(big.clone()).kept(),)).unwrap().bytes;
        assert!(OFFERED.with(|o| o.borrow().is_none()), "a plain encoding offers nothing");
        assert_eq!(&plain[3..], &big[..]);
    }

    #[test]
    fn into_vec_and_kept_keep_the_bytes() {
        let big: Vec<u8> = (0..SHARE_MIN + 3).map(|i| (i * 7) as u8).collect();
        let (_, shared): (u8, Blob) = decode_framed(frame(4, &big)).unwrap();
        assert_eq!(shared.clone().into_vec(), big);
        let kept = Blob::from(big.clone()).kept();
        assert!(kept.is_shared());
        let reader = kept.clone();
        assert_eq!(reader.as_slice(), &big[..]);
        drop(reader);
        // The only share of a whole buffer gives it back without a copy.
        let ptr = kept.as_ptr();
        let back = kept.into_vec();
        assert_eq!((back.as_ptr(), &back[..]), (ptr, &big[..]));
        assert!(!Blob::from(vec![1, 2, 3]).kept().is_shared());
    }
}
