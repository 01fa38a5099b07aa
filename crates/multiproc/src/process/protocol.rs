//! Messages between a parent and its child, and between a parent and the fork
//! server.

use serde::{Deserialize, Serialize};

use super::RemotePanic;
use super::task::EntryRef;

/// Parent → child: what to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Start {
    pub build_id: String,
    pub name: String,
    pub daemon: bool,
    pub parent_pid: i32,
    pub parent_name: String,
    pub entry: EntryRef,
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// The parent's logging state (see `log::state_for_child`).
    pub log: u8,
    /// Which standard streams the child must redirect (`output::STDOUT_SENT`,
    /// `STDERR_SENT`); their pipes are the frame's last descriptors.
    pub stdio: u8,
}

/// Child → parent: how the function ended.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// The encoded return value (descriptors travel with the frame).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The function panicked.
    Panicked(RemotePanic),
    /// The function could not run or its result could not be sent.
    Failed(String),
    /// The child is another build and refused to run the parent's code.
    Refused { child_build_id: String },
}

/// Parent → spare child of the fork server, before its task when needed: the
/// environment and working directory to take.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForkRequest {
    /// The child's full environment, as raw bytes; `None` when it is the one
    /// the server started with (the common case: the spare has it already).
    pub env: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// The child's working directory, as raw bytes.
    pub cwd: Option<Vec<u8>>,
}

/// Parent → fork server: fork a spare child for my next start.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SpareRequest;

/// Fork server → parent: a spare child's pid, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SpareReply {
    Ready {
        pid: i32,
    },
    Failed(String),
    /// This system cannot fork children for the program (the program then
    /// starts them with `spawn`).
    Unsupported(String),
}

/// Spare child → parent, first thing on its channel: here I am (a pidfd the
/// spare opened for itself travels as a descriptor). Read when the spare is
/// taken; it also lets a program whose fork server died find the spares the
/// server forked but could not report.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SpareHello;

/// Decodes a payload as every internal message type; for the fuzz target.
pub(crate) fn fuzz_payload(payload: &[u8]) {
    let _ = crate::wire::decode::<Start>(payload, Vec::new());
    let _ = crate::wire::decode::<Reply>(payload, Vec::new());
    let _ = crate::wire::decode::<ForkRequest>(payload, Vec::new());
    let _ = crate::wire::decode::<SpareRequest>(payload, Vec::new());
    let _ = crate::wire::decode::<SpareReply>(payload, Vec::new());
    let _ = crate::wire::decode::<SpareHello>(payload, Vec::new());
}
