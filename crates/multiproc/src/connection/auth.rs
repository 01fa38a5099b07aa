//! The handshake that opens every [`Listener`](super::Listener) connection:
//! an HMAC-SHA256 challenge in both directions when an auth key is set, and
//! an agreement that neither side uses one when it is not.
//!
//! Messages are `Kind::Control` frames holding a postcard-encoded [`Msg`]:
//!
//! ```text
//! server → client   Challenge { nonce_s }            (None without a key)
//! client → server   Answer { mac_c(nonce_s), nonce_c } | Plain | Refuse(reason)
//! server → client   Answer { mac_s(nonce_c) }        | Accepted | Refuse(reason)
//! ```
//!
//! `mac_c(n) = HMAC-SHA256(key, "multiproc-auth-1 client" ‖ n)`, and `mac_s`
//! the same with "server": the labels keep one side's answers useless as the
//! other side's. The server speaks last, so it never reads past the
//! handshake into the client's first messages. Any disagreement (wrong key,
//! key on one side only) is refused with a message, so both sides fail with
//! `AuthenticationFailed` at once instead of waiting.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::ConnectionError;
use crate::sys::Deadline;
use crate::wire::{self, Channel, Kind, RecvError, WireError};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of each random challenge.
const NONCE_LEN: usize = 32;
type Nonce = [u8; NONCE_LEN];
type Digest = [u8; 32];

/// Why one side refused the other.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
enum Reason {
    /// The answer to the challenge was wrong: the keys differ.
    KeysDiffer,
    /// The server asked for a key; the client has none.
    ClientWithoutKey,
    /// The client has a key; the server uses none.
    ServerWithoutKey,
}

impl Reason {
    /// The failure as the side that *receives* this refusal should report it.
    fn as_received(self, by_server: bool) -> String {
        match (self, by_server) {
            (Reason::KeysDiffer, false) => "the server rejected our auth key (the keys differ)",
            (Reason::KeysDiffer, true) => "the client rejected our answer (the keys differ)",
            (Reason::ClientWithoutKey, _) => "the listener requires an auth key, but the client has none",
            (Reason::ServerWithoutKey, _) => "the client has an auth key, but the listener uses none",
        }
        .to_string()
    }

    /// The failure as the side that *sends* this refusal should report it.
    fn as_sent(self) -> String {
        match self {
            Reason::KeysDiffer => "the peer does not know the auth key (wrong key)",
            Reason::ClientWithoutKey => "the listener requires an auth key, but none was given",
            Reason::ServerWithoutKey => "an auth key was given, but the listener uses none",
        }
        .to_string()
    }
}

/// One handshake message.
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Challenge(Option<Nonce>),
    Answer { digest: Digest, challenge: Option<Nonce> },
    Plain,
    Accepted,
    Refuse(Reason),
}

/// Largest handshake message accepted (the biggest, an answer, is about 70
/// bytes): until the peer has proved it knows the key, a frame announcing
/// more is refused from its header, before its payload is buffered.
pub(crate) const MAX_HANDSHAKE_MESSAGE: u64 = 256;

/// The server's side of the handshake, bounded by `deadline`; only small
/// messages are read until it succeeds.
pub(super) fn serve(channel: &Channel, key: Option<&[u8]>, deadline: Deadline) -> Result<(), ConnectionError> {
    bounded(channel, || serve_unbounded(channel, key, deadline))
}

/// The client's side of the handshake, bounded by `deadline`; only small
/// messages are read until it succeeds.
pub(super) fn connect(channel: &Channel, key: Option<&[u8]>, deadline: Deadline) -> Result<(), ConnectionError> {
    bounded(channel, || connect_unbounded(channel, key, deadline))
}

/// Runs a handshake with the channel's receive limit lowered to
/// [`MAX_HANDSHAKE_MESSAGE`] and frames with descriptors refused (no
/// handshake message has any: a peer that sent an arena reference would have
/// this process map its memory, and keep the mapping after the handshake
/// failed), both lifted again after success.
fn bounded(channel: &Channel, handshake: impl FnOnce() -> Result<(), ConnectionError>) -> Result<(), ConnectionError> {
    channel.set_recv_limit(Some(MAX_HANDSHAKE_MESSAGE));
    channel.set_refuse_fds(true);
    handshake()?;
    channel.set_recv_limit(None);
    channel.set_refuse_fds(false);
    Ok(())
}

fn serve_unbounded(channel: &Channel, key: Option<&[u8]>, deadline: Deadline) -> Result<(), ConnectionError> {
    let nonce = key.map(|_| random_nonce()).transpose()?;
    send(channel, &Msg::Challenge(nonce))?;
    let reply = recv(channel, deadline, "client")?;
    match (key, nonce, reply) {
        (_, _, Msg::Refuse(reason)) => Err(ConnectionError::AuthenticationFailed(reason.as_received(true))),
        (None, _, Msg::Plain) => send(channel, &Msg::Accepted),
        (Some(key), Some(nonce), Msg::Answer { digest, challenge: Some(theirs) }) => {
            if !verify(key, Role::Client, &nonce, &digest) {
                return refuse(channel, Reason::KeysDiffer);
            }
            send(channel, &Msg::Answer { digest: sign(key, Role::Server, &theirs), challenge: None })
        }
        (_, _, other) => Err(unexpected(&other, "client")),
    }
}

fn connect_unbounded(channel: &Channel, key: Option<&[u8]>, deadline: Deadline) -> Result<(), ConnectionError> {
    let challenge = match recv(channel, deadline, "server")? {
        Msg::Challenge(c) => c,
        other => return Err(unexpected(&other, "server")),
    };
    let ours = match (key, challenge) {
        (None, None) => {
            send(channel, &Msg::Plain)?;
            None
        }
        (None, Some(_)) => return refuse(channel, Reason::ClientWithoutKey),
        (Some(_), None) => return refuse(channel, Reason::ServerWithoutKey),
        (Some(key), Some(theirs)) => {
            let ours = random_nonce()?;
            send(channel, &Msg::Answer { digest: sign(key, Role::Client, &theirs), challenge: Some(ours) })?;
            Some((key, ours))
        }
    };
    match (ours, recv(channel, deadline, "server")?) {
        (_, Msg::Refuse(reason)) => Err(ConnectionError::AuthenticationFailed(reason.as_received(false))),
        (None, Msg::Accepted) => Ok(()),
        (Some((key, nonce)), Msg::Answer { digest, challenge: None }) => {
            if verify(key, Role::Server, &nonce, &digest) {
                Ok(())
            } else {
                Err(ConnectionError::AuthenticationFailed(
                    "the server's answer to our challenge is wrong (it does not know the auth key)".into(),
                ))
            }
        }
        (_, other) => Err(unexpected(&other, "server")),
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"multiproc-auth-1 client",
            Role::Server => b"multiproc-auth-1 server",
        }
    }
}

fn mac(key: &[u8], role: Role, nonce: &Nonce) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(role.label());
    mac.update(nonce);
    mac
}

fn sign(key: &[u8], role: Role, nonce: &Nonce) -> Digest {
    mac(key, role, nonce).finalize().into_bytes().into()
}

/// Checks a digest in constant time.
fn verify(key: &[u8], role: Role, nonce: &Nonce, digest: &Digest) -> bool {
    mac(key, role, nonce).verify_slice(digest).is_ok()
}

fn random_nonce() -> Result<Nonce, ConnectionError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| ConnectionError::HandshakeFailed(format!("no random bytes for the challenge: {e}")))?;
    Ok(nonce)
}

/// Tells the peer why it is refused, then fails with the same reason.
fn refuse(channel: &Channel, reason: Reason) -> Result<(), ConnectionError> {
    // The peer may already be gone; our own error is what matters.
    let _ = send(channel, &Msg::Refuse(reason));
    Err(ConnectionError::AuthenticationFailed(reason.as_sent()))
}

fn send(channel: &Channel, msg: &Msg) -> Result<(), ConnectionError> {
    let encoded = wire::encode(msg)?;
    channel.send(Kind::Control, &encoded.bytes, &[]).map_err(|e| handshake_error(e.into(), "peer"))
}

fn recv(channel: &Channel, deadline: Deadline, peer: &str) -> Result<Msg, ConnectionError> {
    let frame = match channel.recv(deadline, None) {
        Ok(frame) => frame,
        Err(RecvError::Timeout | RecvError::WatchReady) => return Err(ConnectionError::Timeout),
        Err(RecvError::Wire(e)) => return Err(handshake_error(e.into(), peer)),
    };
    if frame.kind != Kind::Control {
        return Err(ConnectionError::HandshakeFailed(format!(
            "the {peer} sent a {:?} frame instead of a handshake message; is it a multiproc Listener/Client?",
            frame.kind
        )));
    }
    wire::decode(&frame.payload, frame.fds)
        .map_err(|e| ConnectionError::HandshakeFailed(format!("the {peer} sent an unreadable handshake message: {e}")))
}

fn handshake_error(e: ConnectionError, peer: &str) -> ConnectionError {
    match e {
        ConnectionError::Closed => {
            ConnectionError::HandshakeFailed(format!("the {peer} closed the connection during the handshake"))
        }
        // Bytes that are no frame of this build's protocol: most likely not
        // a multiproc peer at all (an HTTP client, a port scanner…).
        ConnectionError::Wire(WireError::Version { got, expected }) => ConnectionError::HandshakeFailed(format!(
            "the {peer} does not speak the multiproc protocol of this build (its first byte is {got}, our \
             protocol version is {expected}); check that it is a multiproc {} of the same build",
            counterpart(peer)
        )),
        ConnectionError::Wire(WireError::Corrupt(what)) => ConnectionError::HandshakeFailed(format!(
            "the {peer} does not speak the multiproc protocol ({what}); check that it is a multiproc {} of the \
             same build",
            counterpart(peer)
        )),
        ConnectionError::Wire(w) => ConnectionError::HandshakeFailed(format!("handshake with the {peer} failed: {w}")),
        other => other,
    }
}

/// What the peer named `peer` should be.
fn counterpart(peer: &str) -> &'static str {
    match peer {
        "server" => "Listener",
        "client" => "Client",
        _ => "Listener or Client",
    }
}

fn unexpected(msg: &Msg, peer: &str) -> ConnectionError {
    let name = match msg {
        Msg::Challenge(_) => "a challenge",
        Msg::Answer { .. } => "an answer",
        Msg::Plain => "a no-key greeting",
        Msg::Accepted => "an acceptance",
        Msg::Refuse(_) => "a refusal",
    };
    ConnectionError::HandshakeFailed(format!("the {peer} sent {name} out of turn"))
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    fn run(server_key: Option<&[u8]>, client_key: Option<&[u8]>) -> (Result<(), String>, Result<(), String>) {
        let (a, b) = Channel::pair().unwrap();
        let server_key = server_key.map(<[u8]>::to_vec);
        let server = std::thread::spawn(move || {
            serve(&a, server_key.as_deref(), Deadline::after(Duration::from_secs(5))).map_err(|e| e.to_string())
        });
        let client = connect(&b, client_key, Deadline::after(Duration::from_secs(5))).map_err(|e| e.to_string());
        (server.join().unwrap(), client)
    }

    #[test]
    fn matching_keys_and_no_keys_pass() {
        assert_eq!(run(Some(b"k"), Some(b"k")), (Ok(()), Ok(())));
        assert_eq!(run(Some(b""), Some(b"")), (Ok(()), Ok(())));
        assert_eq!(run(None, None), (Ok(()), Ok(())));
    }

    #[test]
    fn every_mismatch_fails_on_both_sides() {
        for (s, c) in
            [(Some(&b"a"[..]), Some(&b"b"[..])), (Some(b""), None), (None, Some(b"")), (Some(b"a"), Some(b""))]
        {
            let (server, client) = run(s, c);
            let (server, client) = (server.unwrap_err(), client.unwrap_err());
            assert!(server.starts_with("authentication failed"), "{s:?} {c:?}: {server}");
            assert!(client.starts_with("authentication failed"), "{s:?} {c:?}: {client}");
        }
    }

    #[test]
    fn an_unauthenticated_peer_cannot_announce_a_large_message() {
        use std::os::fd::AsFd;
        let (a, b) = Channel::pair().unwrap();
        let server = std::thread::spawn(move || {
            let r = serve(&a, Some(b"k"), Deadline::after(Duration::from_secs(5)));
            (r, a)
        });
        // The header of a 1 GiB "handshake message" (this version, kind
        // Control, 6-byte length), and a little of it.
        let len = (1u64 << 30).to_le_bytes();
        let v = crate::wire::PROTOCOL_VERSION;
        let header = [v, 4, 0, 0, len[0], len[1], len[2], len[3], len[4], len[5], 0, 0];
        crate::sys::imp::send_all(b.as_fd(), &[&header, &[0u8; 4096]], &[]).unwrap();
        let (r, _a) = server.join().unwrap();
        let err = r.unwrap_err().to_string();
        assert!(err.contains("more than the 256 allowed"), "{err}");
    }

    /// True if this process has a descriptor open on the file `id`.
    fn holds_file(id: (u64, u64)) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .any(|entry| std::fs::metadata(entry.path()).is_ok_and(|m| (m.dev(), m.ino()) == id))
    }

    #[test]
    fn an_unauthenticated_peer_cannot_make_the_listener_keep_its_shared_memory() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        // A real arena frame (a large message through a channel pair),
        // caught raw and relabelled as a small handshake message.
        let (c, d) = Channel::pair().unwrap();
        d.send(Kind::Data, &vec![7u8; 100_000], &[]).unwrap();
        let (mut buf, mut fds) = ([0u8; 64], Vec::new());
        let n = crate::sys::imp::recv_with_fds(c.as_fd(), &mut buf, &mut fds, false).unwrap();
        assert_eq!((n, fds.len()), (20, 1), "an arena frame: header, offset and the arena");
        drop((c, d));
        let arena = fds.pop().unwrap();
        let meta = std::fs::File::from(arena.try_clone().unwrap()).metadata().unwrap();
        let id = (meta.dev(), meta.ino());
        buf[1] = Kind::Control as u8;
        buf[4..10].copy_from_slice(&100u64.to_le_bytes()[..6]);

        let (a, b) = Channel::pair().unwrap();
        let server = std::thread::spawn(move || {
            let r = serve(&a, Some(b"k"), Deadline::after(Duration::from_secs(5)));
            (r, a)
        });
        crate::sys::imp::send_all(b.as_fd(), &[&buf[..n]], &[arena.as_fd()]).unwrap();
        drop(arena);
        let (r, a) = server.join().unwrap();
        assert!(r.is_err(), "an arena frame is no handshake message");
        drop((a, b));
        assert!(!holds_file(id), "the failed handshake left the peer's memory mapped (and its descriptor open)");
    }

    #[test]
    fn labels_separate_the_roles() {
        let nonce = [7u8; NONCE_LEN];
        assert_ne!(sign(b"k", Role::Client, &nonce), sign(b"k", Role::Server, &nonce));
        assert!(verify(b"k", Role::Client, &nonce, &sign(b"k", Role::Client, &nonce)));
        assert!(!verify(b"j", Role::Client, &nonce, &sign(b"k", Role::Client, &nonce)));
    }
}
