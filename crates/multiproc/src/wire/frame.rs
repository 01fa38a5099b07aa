//! Frame headers and the incremental frame decoder.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::{MAX_FDS_PER_FRAME, MAX_INLINE_LEN, MAX_OFFLOAD_LEN, WireError};
use crate::sys::imp;

/// Protocol version written in every frame header (2: the sender's CPU
/// takes the top two bytes of the length field; 3: a one-off payload's frame
/// may carry a ticket ring, see [`FLAG_ARENA`], so that a peer of an older
/// build fails at the handshake, saying so, not at its first large message).
pub(crate) const PROTOCOL_VERSION: u8 = 3;
/// Size of the fixed frame header.
pub(crate) const HEADER_LEN: usize = 12;
/// Flag: the payload is in the first attached memfd, not inline.
pub(crate) const FLAG_OFFLOADED: u8 = 1;
/// Flag: the payload is a record in the sender's arena (the first attached
/// descriptor); the inline part is the record's 8-byte offset. With
/// [`FLAG_OFFLOADED`] too: the payload is in the first memfd, and the second
/// descriptor is the sender's ticket ring, with the ticket's 8-byte offset
/// inline (the receiver marks it consumed once it has read the payload, see
/// `budget.rs`).
pub(crate) const FLAG_ARENA: u8 = 2;
/// Flag bits holding bits 8–9 of the descriptor count.
const NFDS_HIGH: u8 = 0b1100;
/// Where [`NFDS_HIGH`] starts in the flags byte.
const NFDS_HIGH_SHIFT: u32 = 2;
/// Inline bytes of an arena frame: the offset.
pub(crate) const ARENA_REF_LEN: usize = 8;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A user message on a connection.
    Data = 1,
    /// Parent → child: what to run.
    Start = 2,
    /// Child → parent: the outcome.
    Reply = 3,
    /// Control messages of internal protocols (fork server, auth, pool).
    Control = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Data,
            2 => Kind::Start,
            3 => Kind::Reply,
            4 => Kind::Control,
            _ => return None,
        })
    }
}

/// A received frame: kind, payload and the descriptors that came with it.
#[derive(Debug)]
pub(crate) struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    pub offloaded: bool,
    pub arena: bool,
    pub nfds: usize,
    pub len: u64,
    /// 1 + the CPU the sender ran on (0: unknown): tells a receiver whether
    /// polling for the next frame can pay (see `Channel::recv`).
    pub cpu: u16,
}

impl Header {
    /// A header for an inline payload of `len` bytes with `nfds` descriptors,
    /// sent from the calling thread's CPU.
    pub(crate) fn new(kind: Kind, nfds: usize, len: usize) -> Header {
        let cpu = u16::try_from(imp::thread::current_cpu()).unwrap_or(0);
        Header { kind, offloaded: false, arena: false, nfds, len: len as u64, cpu }
    }

    /// Refuses, before anything is sent, a payload longer than a frame may
    /// announce (the receiver would refuse the frame and with it the rest of
    /// the stream). `out_of_band`: the payload travels in shared memory.
    pub(crate) fn check_len(len: usize, out_of_band: bool) -> Result<(), WireError> {
        let max = if out_of_band { MAX_OFFLOAD_LEN } else { MAX_INLINE_LEN };
        if len as u64 > max {
            let how = if out_of_band { "through shared memory" } else { "inline (over TCP, or queued)" };
            return Err(WireError::Encode(format!(
                "a message of {len} bytes is too large: at most {max} bytes travel {how} in one message"
            )));
        }
        Ok(())
    }

    /// Writes the header bytes.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = PROTOCOL_VERSION;
        out[1] = self.kind as u8;
        let nfds_high = ((self.nfds >> 8) as u8) << NFDS_HIGH_SHIFT & NFDS_HIGH;
        out[2] = if self.offloaded { FLAG_OFFLOADED } else { 0 } | if self.arena { FLAG_ARENA } else { 0 } | nfds_high;
        out[3] = self.nfds as u8;
        out[4..10].copy_from_slice(&self.len.to_le_bytes()[..6]);
        out[10..12].copy_from_slice(&self.cpu.to_le_bytes());
        out
    }

    /// Parses and validates header bytes.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        if bytes[0] != PROTOCOL_VERSION {
            return Err(WireError::Version { got: bytes[0], expected: PROTOCOL_VERSION });
        }
        let kind =
            Kind::from_u8(bytes[1]).ok_or_else(|| WireError::corrupt(format!("unknown frame kind {}", bytes[1])))?;
        let flags = bytes[2] & !NFDS_HIGH;
        if flags & !(FLAG_OFFLOADED | FLAG_ARENA) != 0 {
            return Err(WireError::corrupt(format!("unknown frame flags {flags:#x}")));
        }
        let (offloaded, arena) = (flags & FLAG_OFFLOADED != 0, flags & FLAG_ARENA != 0);
        let nfds = usize::from(bytes[3]) | usize::from((bytes[2] & NFDS_HIGH) >> NFDS_HIGH_SHIFT) << 8;
        if nfds > MAX_FDS_PER_FRAME {
            return Err(WireError::corrupt(format!(
                "frame announces {nfds} descriptors, at most {MAX_FDS_PER_FRAME} allowed"
            )));
        }
        if (offloaded || arena) && nfds < 1 + usize::from(offloaded && arena) {
            return Err(WireError::corrupt("out-of-band frame without its memory file (or ticket ring)"));
        }
        let mut len = [0u8; 8];
        len[..6].copy_from_slice(&bytes[4..10]);
        let len = u64::from_le_bytes(len);
        let max = if offloaded || arena { MAX_OFFLOAD_LEN } else { MAX_INLINE_LEN };
        if len > max {
            return Err(WireError::corrupt(format!("frame announces {len} bytes, more than the {max} allowed")));
        }
        let cpu = u16::from_le_bytes([bytes[10], bytes[11]]);
        Ok(Header { kind, offloaded, arena, nfds, len, cpu })
    }

    /// Bytes of this frame that follow the header on the socket.
    pub(crate) fn inline_len(&self) -> u64 {
        if self.arena {
            ARENA_REF_LEN as u64
        } else if self.offloaded {
            0
        } else {
            self.len
        }
    }
}

/// A decoded frame before its out-of-band payload is fetched: header, inline
/// bytes, descriptors.
pub(crate) type RawFrame = (Header, Vec<u8>, Vec<OwnedFd>);

/// Incremental decoder: bytes and descriptors go in, complete frames come out.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    fds: VecDeque<OwnedFd>,
    /// Header of the frame whose payload is being collected.
    pending: Option<Header>,
    /// Largest payload accepted (inline or out of band), when stricter than
    /// the protocol's: set while a peer is not yet authenticated.
    limit: Option<u64>,
    /// Refuses frames that carry descriptors or an out-of-band payload: set
    /// while a peer is not yet authenticated, so it cannot make this process
    /// hold its files or map its memory.
    refuse_fds: bool,
    /// The error that ended the stream: every later call returns it again
    /// (the bytes after a refused frame cannot be framed).
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// Appends received bytes and descriptors.
    pub(crate) fn push(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buffered() {
            // Drop the consumed bytes when no more are left than were
            // consumed (each byte is moved at most once on average): a
            // receiver whose reads all end inside a frame, as when it lags
            // behind a full socket, kept every byte it ever read.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.fds.extend(fds);
    }

    /// Refuses frames announcing more than `limit` payload bytes (`None`: the
    /// protocol's own limits). The check runs on the header, before the
    /// payload is buffered.
    pub(crate) fn set_limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
    }

    /// Refuses (or accepts again) frames that carry descriptors or an
    /// out-of-band payload, from their header.
    pub(crate) fn set_refuse_fds(&mut self, refuse: bool) {
        self.refuse_fds = refuse;
    }

    /// Bytes buffered but not yet consumed.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True when part of a frame has arrived (perhaps only its header,
    /// already taken): a stream that ends now ends inside a frame.
    pub(crate) fn mid_frame(&self) -> bool {
        self.pending.is_some() || self.buffered() > 0
    }

    /// True when a whole frame is buffered (so `next_frame` would return it or
    /// an error).
    pub(crate) fn peek_complete(&self) -> bool {
        if self.failed.is_some() {
            return true;
        }
        if let Some(h) = &self.pending {
            return self.buffered() as u64 >= h.inline_len();
        }
        if self.buffered() < HEADER_LEN {
            return false;
        }
        // A header that `next_frame` refuses (by the limit too) is an error
        // ready to be returned: waiting for its payload would buffer it.
        match self.next_header() {
            Ok(h) => (self.buffered() - HEADER_LEN) as u64 >= h.inline_len(),
            Err(_) => true,
        }
    }

    /// Parses the buffered header (at least `HEADER_LEN` bytes are
    /// buffered) and checks it against the protocol and [`Self::set_limit`].
    fn next_header(&self) -> Result<Header, WireError> {
        let bytes: [u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN].try_into().expect("header");
        let header = Header::decode(&bytes)?;
        if let Some(limit) = self.limit
            && header.len > limit
        {
            return Err(WireError::corrupt(format!(
                "frame announces {} bytes, more than the {limit} allowed here",
                header.len
            )));
        }
        if self.refuse_fds && (header.nfds > 0 || header.offloaded || header.arena) {
            return Err(WireError::corrupt("a frame carries descriptors or shared memory where none is allowed"));
        }
        Ok(header)
    }

    /// Returns the next complete frame, `None` if more bytes are needed.
    /// After an error the stream is unusable: every later call returns the
    /// same error.
    pub(crate) fn next_frame(&mut self) -> Result<Option<RawFrame>, WireError> {
        if let Some(e) = &self.failed {
            return Err(again(e));
        }
        self.take_frame().map_err(|e| self.fail(e))
    }

    /// Ends the stream with `e` (bytes were lost, or cannot be framed);
    /// returns `e` for the caller to report.
    pub(crate) fn fail(&mut self, e: WireError) -> WireError {
        let first = again(&e);
        self.failed = Some(e);
        first
    }

    fn take_frame(&mut self) -> Result<Option<RawFrame>, WireError> {
        if self.pending.is_none() {
            if self.buffered() < HEADER_LEN {
                return Ok(None);
            }
            let header = self.next_header()?;
            self.start += HEADER_LEN;
            self.pending = Some(header);
        }
        let inline_len = self.pending.as_ref().map_or(0, |h| h.inline_len() as usize);
        if self.buffered() < inline_len {
            return Ok(None);
        }
        // The descriptors ride on the frame's first bytes (64 to a byte), so
        // all of them have arrived once its bytes have.
        let header = self.pending.take().expect("pending frame");
        if self.fds.len() < header.nfds {
            return Err(WireError::corrupt(format!(
                "frame announces {} descriptors but {} arrived",
                header.nfds,
                self.fds.len()
            )));
        }
        let fds = self.fds.drain(..header.nfds).collect();
        let payload = self.buf[self.start..self.start + inline_len].to_vec();
        self.start += inline_len;
        // With nothing after this frame buffered, descriptors still queued
        // came with the bytes of frames already taken, which did not announce
        // them: kept, they would be handed to the next frame instead of its own.
        if !self.fds.is_empty() && self.buffered() == 0 {
            return Err(WireError::corrupt(format!(
                "the peer sent {} descriptors that no frame announced",
                self.fds.len()
            )));
        }
        Ok(Some((header, payload, fds)))
    }
}

/// The same error once more, for a stream that stays failed.
fn again(e: &WireError) -> WireError {
    match e {
        WireError::Version { got, expected } => WireError::Version { got: *got, expected: *expected },
        WireError::Corrupt(what) => WireError::Corrupt(what.clone()),
        WireError::Io(io) => WireError::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => WireError::Corrupt(other.to_string()),
    }
}

/// Feeds `data` to a decoder in a few chunk sizes and decodes each payload as
/// the internal message types. Never panics.
pub(crate) fn fuzz(data: &[u8]) {
    for chunk in [1usize, 7, 4096] {
        let mut dec = FrameDecoder::default();
        for piece in data.chunks(chunk) {
            dec.push(piece, Vec::new());
            loop {
                match dec.next_frame() {
                    Ok(Some((_, payload, _))) => {
                        crate::process::protocol::fuzz_payload(&payload);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header { kind: Kind::Data, offloaded: false, arena: false, nfds: 2, len: 77, cpu: 3 };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn descriptor_counts_above_a_byte_round_trip_and_too_many_are_refused() {
        for nfds in [1, 64, 255, 256, 700, MAX_FDS_PER_FRAME] {
            let h = Header { kind: Kind::Data, offloaded: true, arena: false, nfds, len: 9, cpu: 0 };
            assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        }
        let mut b = Header::new(Kind::Data, 0, 1).encode();
        b[2] = NFDS_HIGH;
        b[3] = 0xff;
        assert!(matches!(Header::decode(&b), Err(WireError::Corrupt(_))), "1023 descriptors");
    }

    #[test]
    fn descriptors_may_arrive_after_the_header_but_not_after_the_frame() {
        let fd = || std::fs::File::open("/dev/null").unwrap().into();
        let mut dec = FrameDecoder::default();
        dec.push(&Header::new(Kind::Data, 2, 3).encode(), vec![fd()]);
        assert!(dec.next_frame().unwrap().is_none());
        dec.push(b"abc", vec![fd()]);
        let (_, payload, fds) = dec.next_frame().unwrap().unwrap();
        assert_eq!((payload.as_slice(), fds.len()), (&b"abc"[..], 2));
        dec.push(&Header::new(Kind::Data, 1, 0).encode(), Vec::new());
        assert!(matches!(dec.next_frame(), Err(WireError::Corrupt(_))));
        // The stream stays failed: what follows is not read as a frame.
        dec.push(&Header::new(Kind::Data, 0, 0).encode(), Vec::new());
        assert!(matches!(dec.next_frame(), Err(WireError::Corrupt(_))));
        assert!(dec.peek_complete(), "the error is ready");
    }

    #[test]
    fn an_offloaded_frame_with_a_ticket_carries_its_offset_and_needs_two_descriptors() {
        let h = Header { kind: Kind::Data, offloaded: true, arena: true, nfds: 2, len: 17 << 20, cpu: 0 };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert_eq!(h.inline_len(), ARENA_REF_LEN as u64);
        let without_ring = Header { nfds: 1, ..h };
        assert!(matches!(Header::decode(&without_ring.encode()), Err(WireError::Corrupt(_))));
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut b = Header::new(Kind::Data, 0, 1).encode();
        b[0] = 9;
        assert!(matches!(Header::decode(&b), Err(WireError::Version { got: 9, .. })));
        // A peer of a build before ticket frames is refused by version.
        b[0] = 2;
        assert!(matches!(Header::decode(&b), Err(WireError::Version { got: 2, expected: 3 })));
        b[0] = PROTOCOL_VERSION;
        b[1] = 200;
        assert!(matches!(Header::decode(&b), Err(WireError::Corrupt(_))));
        b[1] = 1;
        b[4..10].copy_from_slice(&[0xff; 6]);
        assert!(matches!(Header::decode(&b), Err(WireError::Corrupt(_))));
    }

    #[test]
    fn payloads_longer_than_a_frame_announces_are_refused_before_sending() {
        assert!(Header::check_len(MAX_INLINE_LEN as usize, false).is_ok());
        assert!(matches!(Header::check_len(MAX_INLINE_LEN as usize + 1, false), Err(WireError::Encode(_))));
        assert!(Header::check_len(MAX_OFFLOAD_LEN as usize, true).is_ok());
        assert!(matches!(Header::check_len(MAX_OFFLOAD_LEN as usize + 1, true), Err(WireError::Encode(_))));
    }

    #[test]
    fn consumed_bytes_do_not_pile_up_while_every_read_ends_inside_a_frame() {
        // 64 KiB messages read 64 KiB at a time, as a receiver that lags
        // behind reads a full socket: no read ends on a frame boundary.
        let payload = vec![7u8; 64 * 1024];
        let mut frame = Header::new(Kind::Data, 0, payload.len()).encode().to_vec();
        frame.extend_from_slice(&payload);
        let stream = frame.repeat(200);
        let mut dec = FrameDecoder::default();
        let mut got = 0;
        for chunk in stream.chunks(64 * 1024) {
            dec.push(chunk, Vec::new());
            while dec.next_frame().unwrap().is_some() {
                got += 1;
            }
            assert!(dec.buf.len() <= 4 * frame.len(), "{} bytes kept after {got} frames", dec.buf.len());
        }
        assert_eq!(got, 200);
    }

    #[test]
    fn frames_split_at_any_byte_are_reassembled() {
        let mut stream = Vec::new();
        for (i, payload) in [&b""[..], b"abc", &[7u8; 300]].iter().enumerate() {
            let h = Header::new(Kind::Data, 0, payload.len());
            stream.extend_from_slice(&h.encode());
            stream.extend_from_slice(payload);
            let _ = i;
        }
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &stream {
            dec.push(std::slice::from_ref(b), Vec::new());
            while let Some((_, p, _)) = dec.next_frame().unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], b"");
        assert_eq!(got[1], b"abc");
        assert_eq!(got[2], vec![7u8; 300]);
    }

    #[test]
    fn a_limit_refuses_a_large_frame_from_its_header() {
        let mut dec = FrameDecoder::default();
        dec.set_limit(Some(100));
        dec.push(&Header::new(Kind::Control, 0, 1 << 30).encode(), Vec::new());
        assert!(matches!(dec.next_frame(), Err(WireError::Corrupt(_))));
        let mut dec = FrameDecoder::default();
        dec.set_limit(Some(100));
        dec.push(&Header::new(Kind::Control, 0, 3).encode(), Vec::new());
        dec.push(b"abc", Vec::new());
        assert_eq!(dec.next_frame().unwrap().unwrap().1, b"abc");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            let len = (state % 64) as usize;
            let mut data = vec![0u8; len];
            crate::test_bytes::fill(&mut state, &mut data);
            // Bias some inputs toward valid headers so the payload decoders run.
            if len > 12 && state.is_multiple_of(2) {
                data[0] = PROTOCOL_VERSION;
                data[1] = (state % 4 + 1) as u8;
                data[2] = 0;
                data[3] = 0;
                data[4..12].copy_from_slice(&((len - 12) as u64).to_le_bytes()); // CPU 0: unknown
            }
            fuzz(&data);
        }
    }
}
