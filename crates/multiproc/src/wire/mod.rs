//! The wire: framing, the serde codec, descriptor passing and large-payload
//! offload. This is the only module that puts bytes on a socket.
//!
//! A frame is a 12-byte header — protocol version, kind, flags, descriptor
//! count, payload length (6 bytes), the sender's CPU (2 bytes) — followed by
//! the payload. Descriptors travel with `SCM_RIGHTS` attached to the
//! header's first bytes, 64 to a byte (as many as one `sendmsg` carries), so
//! a frame carries up to `MAX_FDS_PER_FRAME` (768); the count's two high
//! bits are flag bits 2–3. A payload larger than `OFFLOAD_THRESHOLD` (64 KiB) does not go through the socket: the sender
//! copies it into its reusable shared-memory arena for the channel (a memfd
//! mapped once by both sides, see `arena.rs`) and sends a small frame with the
//! arena's descriptor and the record's offset; the receiver copies it out and
//! frees the record. When no room frees up within a short wait (the receiver
//! is behind, or stopped reading), the payload goes inline through the
//! socket instead, so a receiver that never reads pins one arena (at most 64
//! MiB; 8 MiB for 1 MiB messages) and a socket buffer of the sender's memory,
//! and the sender then blocks as on any full socket. A payload too large for
//! any arena (about 16 MiB and up) goes in a one-off sealed memfd, with a
//! ticket the receiver marks once it has read it: a sender waits while 8 such
//! payloads or 256 MiB of them are unread (see `budget.rs`). Through
//! the arena, a 1 MiB message is one copy in and one copy out, with no socket
//! wake-ups per 64 KiB. Every decoder here returns an error on bad input;
//! none panics.

mod arena;
mod budget;
mod channel;
mod codec;
mod error;
mod frame;

pub(crate) use channel::{Channel, Outbox, RecvError, SendError};
pub use codec::SendFd;
pub(crate) use codec::{
    Append, Encoded, de_error, decode, decode_seed, encode, encode_into, encode_to_slice, encode_with, fd_serde,
    ser_error,
};
pub use error::WireError;
#[cfg(test)]
pub(crate) use frame::PROTOCOL_VERSION;
pub(crate) use frame::{Frame, Kind};

/// Payloads above this many bytes travel through shared memory (the
/// channel's arena, or a one-off sealed memfd) rather than the socket, when
/// the channel can carry descriptors.
pub(crate) const OFFLOAD_THRESHOLD: usize = 64 * 1024;

/// Most descriptors one frame carries: 64 on each of the header's bytes.
pub(crate) const MAX_FDS_PER_FRAME: usize = frame::HEADER_LEN * crate::sys::imp::MAX_FDS_PER_MSG;

/// Largest payload a frame may announce (1 GiB inline, 16 GiB offloaded).
pub(crate) const MAX_INLINE_LEN: u64 = 1 << 30;
pub(crate) const MAX_OFFLOAD_LEN: u64 = 1 << 34;

/// Feeds arbitrary bytes to the frame decoder and the payload codec; used by
/// the fuzz target and the robustness tests. Never panics.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    frame::fuzz(data);
}
