//! The serde codec (postcard) with an out-of-band side channel for file
//! descriptors, so that handles (pipe ends, queues, shared memory) can be
//! fields of ordinary messages.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::thread::LocalKey;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::WireError;

thread_local! {
    /// The message being serialized (see [`collecting_fds`]).
    static FDS_OUT: RefCell<Option<Scope<OwnedFd>>> = const { RefCell::new(None) };
    /// The message being deserialized (see [`handing_out_fds`]).
    static FDS_IN: RefCell<Option<Scope<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The buffer of [`encode_with`], kept between messages.
    static SEND_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What one message being serialized or deserialized keeps beside its
/// bytes, for as long as that message is being worked on.
struct Scope<F> {
    /// Sent: the descriptors of the handles met so far. Received: those
    /// that arrived, each taken by the handle that claims it.
    fds: Vec<F>,
    /// The text of a custom error raised in this message by [`ser_error`]
    /// or [`de_error`] (postcard keeps only that there was one).
    custom_error: Option<String>,
}

impl<F> Scope<F> {
    fn new(fds: Vec<F>) -> Scope<F> {
        Scope { fds, custom_error: None }
    }
}

/// A serialization error saying `msg`. Postcard's own `Error::custom`
/// drops the text (its errors are plain codes: "Serde Serialization Error"
/// was all a caller saw), so the message being encoded keeps it, to be
/// reported in place of postcard's code. Outside a message of multiproc's
/// it is only the serializer's error.
pub(crate) fn ser_error<E: serde::ser::Error>(msg: impl std::fmt::Display) -> E {
    E::custom(keep_custom(&FDS_OUT, msg))
}

/// A deserialization error saying `msg`; see [`ser_error`].
pub(crate) fn de_error<E: serde::de::Error>(msg: impl std::fmt::Display) -> E {
    E::custom(keep_custom(&FDS_IN, msg))
}

/// Keeps `msg` in the message `scope` is working on, if any: kept beyond
/// it, the text would be reported for a later message's unrelated error.
fn keep_custom<F>(scope: &'static LocalKey<RefCell<Option<Scope<F>>>>, msg: impl std::fmt::Display) -> String {
    let msg = msg.to_string();
    let _ = scope.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut()
            && let Some(s) = s.as_mut()
        {
            s.custom_error = Some(msg.clone());
        }
    });
    msg
}

/// What went wrong in postcard, with the text of the custom error the
/// message kept (see [`ser_error`]), if any.
fn explain(e: postcard::Error, custom_error: Option<String>) -> String {
    match (e, custom_error) {
        (postcard::Error::SerdeSerCustom | postcard::Error::SerdeDeCustom, Some(text)) => text,
        (e, _) => e.to_string(),
    }
}

/// Why a handle cannot travel from a thread-local's destructor.
const THREAD_ENDING: &str = "a multiproc handle cannot be sent or received from a thread-local's destructor (the \
     thread's own state for descriptors is gone); send it before the thread ends";

/// Runs `serialize` with a fresh list for the descriptors of the handles it
/// meets (the outer message's scope is put back after), and returns them;
/// an error says what went wrong. Once the thread's locals are gone there
/// is no list: plain data still encodes, and a handle is an error.
fn collecting_fds<X>(serialize: impl FnOnce() -> postcard::Result<X>) -> (Result<X, String>, Vec<OwnedFd>) {
    let saved = FDS_OUT.try_with(|f| f.borrow_mut().replace(Scope::new(Vec::new()))).ok().flatten();
    let result = serialize();
    let scope = FDS_OUT.try_with(|f| std::mem::replace(&mut *f.borrow_mut(), saved)).ok().flatten();
    let scope = scope.unwrap_or(Scope::new(Vec::new()));
    (result.map_err(|e| explain(e, scope.custom_error)), scope.fds)
}

/// Runs `deserialize` with `fds` available to the handles it builds (the
/// outer message's scope is put back after); unclaimed descriptors are
/// closed. An error says what went wrong.
fn handing_out_fds<X>(fds: Vec<OwnedFd>, deserialize: impl FnOnce() -> postcard::Result<X>) -> Result<X, String> {
    let slots = Scope::new(fds.into_iter().map(Some).collect());
    let saved = FDS_IN.try_with(|f| f.borrow_mut().replace(slots)).ok().flatten();
    let result = deserialize();
    let scope = FDS_IN.try_with(|f| std::mem::replace(&mut *f.borrow_mut(), saved)).ok().flatten();
    result.map_err(|e| explain(e, scope.and_then(|s| s.custom_error)))
}

/// An encoded message: bytes plus the descriptors it refers to.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Serializes `value`, collecting the descriptors of any handles inside it.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded, WireError> {
    let (result, fds) = collecting_fds(|| postcard::to_allocvec(value));
    match result {
        Ok(bytes) => Ok(Encoded { bytes, fds }),
        Err(e) => Err(WireError::Encode(e)),
    }
}

/// Serializes `value` into a buffer this thread keeps from one message to
/// the next, and passes the bytes and descriptors to `send`: sending a
/// message then costs no allocation, and the buffer no regrowth by doubling
/// for each message (a batch of a few KiB grew from empty every time). A
/// buffer grown past [`KEPT_BUFFER`] is not kept.
pub(crate) fn encode_with<T: Serialize + ?Sized, R>(
    value: &T,
    send: impl FnOnce(&[u8], Vec<OwnedFd>) -> Result<R, WireError>,
) -> Result<R, WireError> {
    // A message serialized while another one is (a `Serialize` impl that
    // sends), or once the thread's locals are gone (a send from another
    // thread-local's destructor), gets a fresh buffer.
    crate::thread_buffer::with_kept(&SEND_BUF, KEPT_BUFFER, |buf| {
        encode_into(value, buf).and_then(|fds| send(buf, fds))
    })
}

/// The largest send buffer a thread keeps for its next message.
const KEPT_BUFFER: usize = 1 << 20;

/// Serializes `value` onto the end of `out` and returns the descriptors of
/// the handles inside it. On error `out` is left as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<Vec<OwnedFd>, WireError> {
    let start = out.len();
    let (result, fds) = collecting_fds(|| postcard::serialize_with_flavor(value, Append(&mut *out)));
    match result {
        Ok(()) => Ok(fds),
        Err(e) => {
            out.truncate(start);
            Err(WireError::Encode(e))
        }
    }
}

/// Serializes `value` into the front of `buf`; returns the length written
/// and the descriptors of the handles inside it.
pub(crate) fn encode_to_slice<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), WireError> {
    let (result, fds) = collecting_fds(|| postcard::serialize_with_flavor(value, IntoSlice { buf, pos: 0 }));
    result.map(|n| (n, fds)).map_err(WireError::Encode)
}

/// A postcard output that fills a borrowed slice (and says how much it used).
struct IntoSlice<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl postcard::ser_flavors::Flavor for IntoSlice<'_> {
    type Output = usize;

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos + data.len();
        let dst = self.buf.get_mut(self.pos..end).ok_or(postcard::Error::SerializeBufferFull)?;
        // Varints and short strings: a byte loop beats a call to memcpy.
        if data.len() <= 16 {
            for (d, s) in dst.iter_mut().zip(data) {
                *d = *s;
            }
        } else {
            dst.copy_from_slice(data);
        }
        self.pos = end;
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        *self.buf.get_mut(self.pos).ok_or(postcard::Error::SerializeBufferFull)? = data;
        self.pos += 1;
        Ok(())
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.pos)
    }
}

/// A postcard output that appends to a borrowed buffer.
pub(crate) struct Append<'a>(pub(crate) &'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Varints and short strings: a byte loop beats a call to memcpy.
        if data.len() <= 16 {
            self.0.extend(data.iter().copied());
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Deserializes a `T` from `bytes`, handing `fds` to the handles inside it.
/// Descriptors that no handle claims are closed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T, WireError> {
    let result = handing_out_fds(fds, || postcard::from_bytes(bytes));
    result.map_err(|e| WireError::Decode { type_name: std::any::type_name::<T>(), reason: e })
}

/// As [`decode`], through a seed (to deserialize into existing storage).
pub(crate) fn decode_seed<'de, S: serde::de::DeserializeSeed<'de>>(
    seed: S,
    bytes: &'de [u8],
    fds: Vec<OwnedFd>,
) -> Result<S::Value, WireError> {
    let result = handing_out_fds(fds, || seed.deserialize(&mut postcard::Deserializer::from_bytes(bytes)));
    result.map_err(|e| WireError::Decode { type_name: std::any::type_name::<S>(), reason: e })
}

/// Serde helpers for types that hold a descriptor: `#[serde(with = "fd_serde")]`.
pub(crate) mod fd_serde {
    use super::*;

    /// Duplicates the descriptor into the message's side channel and writes its index.
    pub(crate) fn serialize<S: Serializer>(fd: &impl AsFd, s: S) -> Result<S::Ok, S::Error> {
        push_fd(fd.as_fd()).map_err(ser_error)?.serialize(s)
    }

    /// Reads an index and takes the descriptor that arrived in that slot.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OwnedFd, D::Error> {
        let index = u32::deserialize(d)?;
        take_fd(index).map_err(de_error)
    }

    pub(crate) fn push_fd(fd: BorrowedFd<'_>) -> Result<u32, String> {
        let dup = fd.try_clone_to_owned().map_err(|e| format!("cannot duplicate a descriptor: {e}"))?;
        FDS_OUT
            .try_with(|f| match f.borrow_mut().as_mut() {
                Some(scope) => {
                    scope.fds.push(dup);
                    Ok(scope.fds.len() as u32 - 1)
                }
                None => {
                    Err("multiproc handles can only be serialized by multiproc itself (they carry file descriptors)"
                        .to_string())
                }
            })
            .unwrap_or_else(|_| Err(THREAD_ENDING.to_string()))
    }

    pub(crate) fn take_fd(index: u32) -> Result<OwnedFd, String> {
        FDS_IN
            .try_with(|f| {
                let mut guard = f.borrow_mut();
                let scope = guard.as_mut().ok_or("multiproc handles can only be deserialized by multiproc itself")?;
                scope
                    .fds
                    .get_mut(index as usize)
                    .and_then(Option::take)
                    .ok_or_else(|| format!("message refers to descriptor #{index}, which did not arrive"))
            })
            .unwrap_or_else(|_| Err(THREAD_ENDING.to_string()))
    }
}

/// A file descriptor that can be sent to another process inside any message.
///
/// One message (a task's arguments, a result, a value on a connection)
/// carries at most 767 descriptors (766 in a message of 16 MiB or more): every `SendFd` and every shared object
/// (`Lock`, `Value`, `SharedMemory`, `Connection`, …) in it counts as one.
/// Sending more is an error that changes nothing; split them over several
/// messages.
///
/// # Examples
///
/// ```
/// use multiproc::{Pipe, SendFd};
/// use std::io::{Read, Seek, Write};
///
/// let (a, b) = Pipe::<SendFd>::duplex().unwrap();
/// let mut file = std::fs::File::from(std::os::fd::OwnedFd::from(tempfile_like()));
/// file.write_all(b"hello").unwrap();
/// a.send(&SendFd::from(file)).unwrap();
/// let mut got = std::fs::File::from(b.recv().unwrap().into_inner());
/// got.rewind().unwrap();
/// let mut text = String::new();
/// got.read_to_string(&mut text).unwrap();
/// assert_eq!(text, "hello");
/// # fn tempfile_like() -> std::os::fd::OwnedFd {
/// #     let path = std::env::temp_dir().join(format!("multiproc-doc-{}", std::process::id()));
/// #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
/// #     std::fs::remove_file(&path).unwrap();
/// #     f.into()
/// # }
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub struct SendFd(#[serde(with = "fd_serde")] OwnedFd);

impl SendFd {
    /// The descriptor.
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl<T: Into<OwnedFd>> From<T> for SendFd {
    fn from(fd: T) -> SendFd {
        SendFd(fd.into())
    }
}

impl AsFd for SendFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn values_round_trip() {
        let e = encode(&(1u32, "two".to_string(), vec![3u8; 5])).unwrap();
        assert!(e.fds.is_empty());
        let back: (u32, String, Vec<u8>) = decode(&e.bytes, e.fds).unwrap();
        assert_eq!(back, (1, "two".to_string(), vec![3; 5]));
    }

    #[test]
    fn fds_travel_out_of_band() {
        let (a, _b) = crate::sys::imp::socketpair().unwrap();
        let e = encode(&SendFd::from(a)).unwrap();
        assert_eq!(e.fds.len(), 1);
        let back: SendFd = decode(&e.bytes, e.fds).unwrap();
        drop(back);
    }

    #[test]
    fn missing_fd_is_an_error_that_says_so() {
        let (a, _b) = crate::sys::imp::socketpair().unwrap();
        let e = encode(&SendFd::from(a)).unwrap();
        let err = decode::<SendFd>(&e.bytes, Vec::new()).unwrap_err().to_string();
        assert!(err.contains("descriptor #0, which did not arrive"), "{err}");
    }

    #[test]
    fn a_handle_serialized_outside_multiproc_is_an_error_that_says_so() {
        let (a, _b) = crate::sys::imp::socketpair().unwrap();
        let err = fd_serde::push_fd(a.as_fd()).unwrap_err();
        assert!(err.contains("can only be serialized by multiproc itself"), "{err}");
    }

    /// Decodes `value`'s message as a `T`; the error's text.
    fn refused_as<T: DeserializeOwned>(value: &impl Serialize) -> String {
        let e = encode(value).unwrap();
        decode::<T>(&e.bytes, e.fds).err().expect("decoded").to_string()
    }

    #[test]
    fn handles_refused_on_arrival_say_why() {
        let memfd = crate::sys::imp::shm::Mapping::anonymous("t", 4096).unwrap();
        let fd = SendFd::from(memfd.as_fd().try_clone_to_owned().unwrap());
        let err = refused_as::<crate::SharedMemory>(&(fd, 100u64, 200u64, None::<String>));
        assert!(err.contains("impossible size"), "{err}");
        let array = crate::Array::<u32>::zeroed(4).unwrap();
        let err = refused_as::<crate::Value<u32>>(&array);
        assert!(err.contains("of another kind"), "{err}");
        let value = crate::Value::new(1u32).unwrap();
        let err = refused_as::<crate::Value<u64>>(&value);
        assert!(err.contains("another element type"), "{err}");
    }

    #[test]
    fn a_kept_error_text_is_not_reported_for_a_later_message() {
        // A queue first serializes an item with plain postcard: a handle in
        // it fails there, outside any message of multiproc's.
        let (a, _b) = crate::sys::imp::socketpair().unwrap();
        assert!(postcard::to_allocvec(&SendFd::from(a)).is_err());
        // A later message fails with a custom error whose text postcard drops.
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no way"))
            }
        }
        let err = encode(&Refuses).unwrap_err().to_string();
        assert!(!err.contains("multiproc handles"), "{err}");
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        let e = encode(&"a longer string".to_string()).unwrap();
        assert!(decode::<String>(&e.bytes[..3], Vec::new()).is_err());
    }
}
