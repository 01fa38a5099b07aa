//! A batch's (or a preprocessing chunk's) items, encoded in one buffer.
//!
//! Every item is the postcard encoding of one value, or an error message.
//! A batch of 128 travels, and is decoded, as one buffer and one list of
//! item ends instead of 128 separate allocations, and the answers stay in
//! that buffer ([`Encoded::Shared`]) until the last of them is read.

use std::sync::Arc;

use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;

/// Bytes per item to reserve when the items' sizes are not known yet (a
/// small output; larger ones grow the buffer).
pub(crate) const ITEM_BYTES_GUESS: usize = 32;

/// Items in one buffer: item `i` is `buf[ends[i-1].0 .. ends[i].0]`, an
/// encoded value if its flag is true, else an error message (UTF-8).
///
/// On the wire the ends travel packed ([`pack_ends`]): one varint per item
/// of its length and flag, read back in one tight loop (a list of
/// `(u64, bool)` pairs cost serde's per-element calls at each of the four
/// hops a pipeline request makes).
#[derive(Debug, Default, Clone)]
pub(crate) struct Items {
    buf: ByteBuf,
    ends: Vec<(u64, bool)>,
}

impl Serialize for Items {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let packed = pack_ends(&self.ends);
        (serde_bytes::Bytes::new(&self.buf), serde_bytes::Bytes::new(&packed)).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Items {
    /// Bytes from another process are untrusted: the ends must fit the
    /// buffer, and every error message must be UTF-8.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (buf, packed) = <(ByteBuf, serde_bytes::ByteBuf)>::deserialize(d)?;
        let ends = unpack_ends(&packed, &buf).map_err(serde::de::Error::custom)?;
        Ok(Items { buf, ends })
    }
}

/// The ends as sent: for each item, `len << 1 | ok` as a LEB128 varint.
fn pack_ends(ends: &[(u64, bool)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ends.len() + ends.len() / 2);
    let mut start = 0;
    for &(end, ok) in ends {
        // Ends rise (built here, or checked when received).
        let mut v = (end - start) << 1 | u64::from(ok);
        start = end;
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    out
}

/// Reads packed ends back, checking that every item fits in `buf` and
/// that every error message is UTF-8.
fn unpack_ends(packed: &[u8], buf: &[u8]) -> Result<Vec<(u64, bool)>, String> {
    // At most one item per byte: the reservation is bounded by the message.
    let mut ends = Vec::with_capacity(packed.len());
    let (mut start, mut at) = (0u64, 0);
    while at < packed.len() {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let Some(&b) = packed.get(at) else { return Err("an item end is cut short".to_string()) };
            at += 1;
            if (shift == 63 && b > 1) || shift > 63 {
                return Err("an item end overflows".to_string());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        let (len, ok) = (v >> 1, v & 1 == 1);
        let end = start.checked_add(len).filter(|&e| e <= buf.len() as u64);
        let Some(end) = end else {
            return Err(format!("an item of {len} bytes at {start} is past the buffer of {}", buf.len()));
        };
        // In range: `end` is at most the buffer's length.
        if !ok && std::str::from_utf8(&buf[start as usize..end as usize]).is_err() {
            return Err("an item's error message is not UTF-8".to_string());
        }
        ends.push((end, ok));
        start = end;
    }
    Ok(ends)
}

impl Items {
    /// Room for `n` items of `bytes` bytes in all (an estimate: the buffer
    /// grows past it if needed), so that a batch's buffer is allocated once
    /// instead of growing by doubling.
    pub fn with_capacity(n: usize, bytes: usize) -> Items {
        Items { buf: ByteBuf::with_capacity(bytes), ends: Vec::with_capacity(n) }
    }

    /// The bytes of all items together.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    fn close_item(&mut self, ok: bool) {
        self.ends.push((self.buf.len() as u64, ok));
    }

    /// Adds an item already encoded.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.close_item(true);
    }

    /// Adds an error.
    pub fn push_error(&mut self, message: &str) {
        self.buf.extend_from_slice(message.as_bytes());
        self.close_item(false);
    }

    /// Adds one output of a stage (a model's or a preprocessing step's),
    /// encoded for the next; a value that does not encode is that item's
    /// error.
    pub fn push_output<T: Serialize>(&mut self, output: Result<T, String>) {
        let value = match output {
            Ok(v) => v,
            Err(message) => return self.push_error(&message),
        };
        let start = self.buf.len();
        // Encoded straight onto the end of the buffer (a `Vec` is a writer).
        match postcard::to_io(&value, &mut *self.buf) {
            Ok(_) => self.close_item(true),
            Err(e) => {
                self.buf.truncate(start);
                self.push_error(&format!("output does not encode: {e}"));
            }
        }
    }

    /// Takes the first `n` items out (all of them if fewer), leaving the
    /// rest: the items taken keep the buffer; the rest are copied into a
    /// new one as large (so that items added next do not regrow it).
    pub fn split_front(&mut self, n: usize) -> Items {
        let n = n.min(self.len());
        // In range: ends rise within the buffer.
        let cut = n.checked_sub(1).map_or(0, |last| self.ends[last].0);
        let mut rest = Items::with_capacity(self.ends.capacity(), self.buf.capacity());
        rest.buf.extend_from_slice(&self.buf[cut as usize..]);
        rest.ends.extend(self.ends[n..].iter().map(|&(end, ok)| (end - cut, ok)));
        self.buf.truncate(cut as usize);
        self.ends.truncate(n);
        std::mem::replace(self, rest)
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Item `i`: its encoded bytes or its error; `None` past the end.
    pub fn get(&self, i: usize) -> Option<Result<&[u8], &str>> {
        let &(end, ok) = self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1].0 };
        // Checked when built or received: ends rise within the buffer.
        let bytes = &self.buf[start as usize..end as usize];
        Some(if ok { Ok(bytes) } else { Err(std::str::from_utf8(bytes).unwrap_or("(not UTF-8)")) })
    }

    /// Item `i` decoded as a `T`, or why not, as the error that item answers
    /// (`what` names the item in the message: "input", "request").
    pub fn decode<T: DeserializeOwned>(&self, i: usize, what: &str) -> Result<T, String> {
        match self.get(i) {
            Some(Ok(bytes)) => postcard::from_bytes(bytes).map_err(|e| format!("{what} does not decode: {e}")),
            Some(Err(message)) => Err(message.to_string()),
            None => Err(format!("no {what}")),
        }
    }
}

/// One encoded value: bytes of its own, a copy of a small one, or an item
/// of shared [`Items`].
#[derive(Debug, Clone)]
pub(crate) enum Encoded {
    /// Its own bytes.
    Own(Vec<u8>),
    /// A small item's bytes (see [`Encoded::item`]): its length, then room
    /// for [`INLINE`] bytes.
    Inline(u8, [u8; INLINE]),
    /// Item `.1` of shared items (an encoded value, not an error).
    Shared(Arc<Items>, usize),
}

/// The largest item [`Encoded::item`] copies instead of sharing: 38 bytes,
/// so that an `Encoded` takes 40 (a short string, a number, a class label).
pub(crate) const INLINE: usize = 38;

impl Default for Encoded {
    fn default() -> Self {
        Encoded::Own(Vec::new())
    }
}

/// The buffer a request's input is first encoded into: a small input
/// (most requests without tensors) fits it, so it costs one allocation and
/// no reallocation as it grows.
const FIRST_INPUT_BUFFER: usize = 64;

/// The size from which a request's encoded input is kept at its length
/// (see [`Encoded::input`]); below it, as encoded.
const FIT_FROM: usize = 64 << 10;

impl Encoded {
    /// A request's input, encoded (in one pass: its `Serialize` runs once);
    /// the input itself is dropped as soon as it is encoded. The buffer
    /// starts at [`FIRST_INPUT_BUFFER`] bytes, so a small input takes one
    /// allocation (grown from empty, it took one and a reallocation or
    /// two). A large encoding (from [`FIT_FROM`] bytes) whose buffer grew
    /// (by doubling) to over a quarter past its length is shrunk to it: the
    /// queued bytes are then about what a front end counts for them
    /// ([`crate::Request::hold`]), not up to twice as many. Shrinking a
    /// large buffer gives its tail back in place (glibc: a split chunk, or
    /// `mremap` for a mapped one), without a copy: measured at under 30 µs
    /// for 800 MB, against 350 ms to encode them.
    ///
    /// # Errors
    ///
    /// The input does not encode.
    pub fn input<I: Serialize>(input: I) -> Result<Encoded, postcard::Error> {
        let mut bytes = postcard::to_extend(&input, Vec::with_capacity(FIRST_INPUT_BUFFER))?;
        drop(input);
        if bytes.len() >= FIT_FROM && bytes.capacity() - bytes.len() > bytes.len() / 4 {
            bytes.shrink_to_fit();
        }
        Ok(Encoded::Own(bytes))
    }

    /// Item `i` of `items` if it is a value, else its error. A small value
    /// (up to [`INLINE`] bytes) is copied: a shared one costs a change of
    /// the items' reference count where it is made and another where it is
    /// dropped, on a line that the threads making and dropping a batch's
    /// items pass back and forth, once per item (the batch's answers are
    /// made by the model's supervisor and dropped by their callers).
    pub fn item(items: &Arc<Items>, i: usize) -> Result<Encoded, String> {
        match items.get(i) {
            Some(Ok(bytes)) if bytes.len() <= INLINE => {
                let mut inline = [0; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                // At most INLINE (38): fits a u8.
                Ok(Encoded::Inline(bytes.len() as u8, inline))
            }
            Some(Ok(_)) => Ok(Encoded::Shared(Arc::clone(items), i)),
            Some(Err(message)) => Err(message.to_string()),
            None => Err(format!("no answer for item {i} of {}", items.len())),
        }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Encoded::Own(v) => v,
            Encoded::Inline(len, bytes) => &bytes[..usize::from(*len)],
            Encoded::Shared(items, i) => match items.get(*i) {
                Some(Ok(bytes)) => bytes,
                _ => &[],
            },
        }
    }
}

/// A batch's inputs on their way to a worker: the requests' own encoded
/// inputs on the sending side (written into the message as they are, not
/// copied into one buffer first), [`Items`] on the receiving side (one
/// buffer, not one allocation per input). Both travel as a sequence of byte
/// strings.
#[derive(Debug)]
pub(crate) enum Inputs {
    /// The requests' inputs, to send.
    Outgoing(Vec<Encoded>),
    /// The inputs as received.
    Received(Items),
}

impl Inputs {
    /// The inputs as items.
    pub fn into_items(self) -> Items {
        match self {
            Inputs::Received(items) => items,
            Inputs::Outgoing(inputs) => {
                let bytes = inputs.iter().map(|e| e.as_bytes().len()).sum();
                let mut items = Items::with_capacity(inputs.len(), bytes);
                inputs.iter().for_each(|e| items.push_bytes(e.as_bytes()));
                items
            }
        }
    }
}

impl Serialize for Inputs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Inputs::Outgoing(inputs) => s.collect_seq(inputs.iter().map(|e| serde_bytes::Bytes::new(e.as_bytes()))),
            Inputs::Received(items) => s.collect_seq(
                (0..items.len()).map(|i| serde_bytes::Bytes::new(items.get(i).and_then(Result::ok).unwrap_or(&[]))),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(InputsVisitor).map(Inputs::Received)
    }
}

/// Reads a sequence of byte strings into one [`Items`].
struct InputsVisitor;

impl<'de> Visitor<'de> for InputsVisitor {
    type Value = Items;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of byte strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Items, A::Error> {
        // The length comes from another process: reserve a bounded amount
        // (items and bytes, so that the buffer does not grow from empty by
        // doubling); the items themselves are bounded by the message.
        let n = seq.size_hint().unwrap_or(0).min(4096);
        let mut items = Items::with_capacity(n, n * ITEM_BYTES_GUESS);
        while seq.next_element_seed(AppendItem(&mut items))?.is_some() {}
        Ok(items)
    }
}

/// Appends one byte string to [`Items`].
struct AppendItem<'a>(&'a mut Items);

impl<'de> DeserializeSeed<'de> for AppendItem<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for AppendItem<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.0.push_bytes(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_encoded_input_is_kept_at_about_its_length_and_a_small_one_in_its_first_buffer() {
        // Three tensors of 100 KiB: the buffer doubles past 300 KiB, to 400.
        let input: Vec<crate::Tensor> = (0..3)
            .map(|i| crate::Tensor::new(format!("x{i}"), crate::DataType::Uint8, vec![100 << 10], vec![7; 100 << 10]))
            .collect::<Result<_, _>>()
            .unwrap();
        let loose = postcard::to_allocvec(&input).unwrap();
        assert!(loose.capacity() > loose.len() + loose.len() / 4, "the case is not loose: {}", loose.capacity());
        let Encoded::Own(fit) = Encoded::input(input).unwrap() else { panic!("not its own bytes") };
        assert_eq!(fit, loose);
        assert!(fit.capacity() <= fit.len() + fit.len() / 4, "{} bytes in a buffer of {}", fit.len(), fit.capacity());
        // A small one stays in the buffer it was first given (grown from
        // empty, it would have been reallocated to 16 bytes for 10).
        let Encoded::Own(small) = Encoded::input("msg123456".to_string()).unwrap() else { panic!("not its own bytes") };
        assert_eq!(small, postcard::to_allocvec("msg123456").unwrap());
        assert_eq!(small.capacity(), FIRST_INPUT_BUFFER);
    }

    #[test]
    fn items_keep_values_and_errors_in_order_and_survive_the_wire() {
        let mut items = Items::with_capacity(3, 0);
        items.push_output(Ok("a".to_string()));
        items.push_output::<String>(Err("bad".to_string()));
        items.push_bytes(&postcard::to_allocvec(&7u32).unwrap());
        let back: Items = postcard::from_bytes(&postcard::to_allocvec(&items).unwrap()).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(postcard::from_bytes::<String>(back.get(0).unwrap().unwrap()).unwrap(), "a");
        assert_eq!(back.get(1).unwrap(), Err("bad"));
        let shared = Arc::new(back);
        assert_eq!(postcard::from_bytes::<u32>(Encoded::item(&shared, 2).unwrap().as_bytes()).unwrap(), 7);
        assert_eq!(postcard::from_bytes::<String>(Encoded::item(&shared, 0).unwrap().as_bytes()).unwrap(), "a");
        assert_eq!(Encoded::item(&shared, 1).unwrap_err(), "bad");
        assert!(Encoded::item(&shared, 3).is_err());
    }

    #[test]
    fn inputs_sent_from_requests_arrive_as_items() {
        let inputs = vec![Encoded::Own(vec![1, 2, 3]), Encoded::Own(Vec::new()), Encoded::Own(vec![4])];
        let wire = postcard::to_allocvec(&Inputs::Outgoing(inputs)).unwrap();
        let Inputs::Received(items) = postcard::from_bytes::<Inputs>(&wire).unwrap() else { panic!("not received") };
        assert_eq!(items.len(), 3);
        assert_eq!(items.get(0).unwrap().unwrap(), [1, 2, 3]);
        assert_eq!(items.get(1).unwrap().unwrap(), [0u8; 0]);
        assert_eq!(items.get(2).unwrap().unwrap(), [4]);
        assert_eq!(postcard::to_allocvec(&Inputs::Received(items)).unwrap(), wire, "the same bytes either way");
    }

    #[test]
    fn an_item_of_up_to_inline_bytes_is_copied_and_a_longer_one_shared() {
        let mut items = Items::with_capacity(3, 0);
        for len in [0, INLINE, INLINE + 1] {
            items.push_bytes(&vec![7; len]);
        }
        let items = Arc::new(items);
        let got: Vec<Encoded> = (0..3).map(|i| Encoded::item(&items, i).unwrap()).collect();
        assert!(matches!(got[0], Encoded::Inline(0, _)));
        assert!(matches!(got[1], Encoded::Inline(len, _) if usize::from(len) == INLINE));
        assert!(matches!(got[2], Encoded::Shared(_, 2)));
        assert_eq!(Arc::strong_count(&items), 2, "only the long item holds the items");
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.as_bytes(), items.get(i).unwrap().unwrap(), "item {i}");
        }
    }

    #[test]
    fn split_front_takes_the_first_items_and_keeps_the_rest_in_order() {
        let mut items = Items::with_capacity(4, 0);
        for s in ["a", "bb", "ccc"] {
            items.push_output(Ok(s.to_string()));
        }
        items.push_error("bad");
        let front = items.split_front(2);
        let decoded = |items: &Items, i| items.decode::<String>(i, "item");
        assert_eq!((front.len(), items.len()), (2, 2));
        assert_eq!((decoded(&front, 0).unwrap(), decoded(&front, 1).unwrap()), ("a".into(), "bb".into()));
        assert_eq!(decoded(&items, 0).unwrap(), "ccc");
        assert_eq!(items.get(1).unwrap(), Err("bad"));
        let all = items.split_front(10);
        assert_eq!((all.len(), items.len(), items.byte_len()), (2, 0, 0));
        assert_eq!(items.split_front(1).len(), 0, "nothing left to take");
    }

    #[test]
    fn items_with_ends_past_the_buffer_are_refused() {
        let wire = |buf: Vec<u8>, ends: &[(u64, bool)]| {
            postcard::to_allocvec(&(ByteBuf::from(buf), ByteBuf::from(pack_ends(ends)))).unwrap()
        };
        assert!(postcard::from_bytes::<Items>(&wire(vec![1, 2], &[(1, true), (5, true)])).is_err());
        assert!(postcard::from_bytes::<Items>(&wire(vec![0xff], &[(1, false)])).is_err());
        let back = postcard::from_bytes::<Items>(&wire(vec![1, 2], &[(1, true), (2, true)])).unwrap();
        assert_eq!((back.get(0).unwrap(), back.get(1).unwrap()), (Ok(&[1u8][..]), Ok(&[2u8][..])));
        // Varints cut short or past 64 bits.
        let raw =
            |packed: Vec<u8>| postcard::to_allocvec(&(ByteBuf::from(vec![0u8; 4]), ByteBuf::from(packed))).unwrap();
        assert!(postcard::from_bytes::<Items>(&raw(vec![0x80])).is_err());
        assert!(postcard::from_bytes::<Items>(&raw(vec![0xff; 10].into_iter().chain([0x01]).collect())).is_err());
        assert!(
            postcard::from_bytes::<Items>(&raw(vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))
                .is_err()
        );
    }

    #[test]
    fn packed_ends_read_back_for_long_items_too() {
        let ends = [(0u64, true), (300, false), (70_000, true), (70_001, true)];
        let buf = vec![b'x'; 70_001];
        assert_eq!(unpack_ends(&pack_ends(&ends), &buf).unwrap(), ends);
    }
}
