//! Pipe workloads: `pipe_rtt` (small round trips) and `pipe_1mib` (1 MiB
//! messages one way).
//!
//! The floor and multiproc are measured between the **same two processes**:
//! one child serves every transport (a raw socketpair, a multiproc byte pipe,
//! a typed pipe), a batch at a time, as the parent commands over the raw
//! socket. Round-trip times on a VM depend mostly on where the scheduler puts
//! the two processes (same CPU: two context switches; different CPUs: an
//! inter-processor wake-up); sharing the pair gives both the same placement.
//!
//! CPython side: `bench/python/pipe.py`.

use std::cell::RefCell;
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use multiproc::{Connection, Pipe, Process, SendFd, Task};
use serde_json::json;

use super::{Ctx, Workload};
use crate::measure::{Plan, Stats, Subject, gb_per_s, micros};
use crate::report::{Row, Unit};
use crate::{BenchError, ensure};

/// Small-message round trips parent → child → parent over a duplex pipe.
pub const PIPE_RTT: Workload = Workload {
    name: "pipe_rtt",
    about: "µs per 8-byte round trip parent → child → parent over a duplex Pipe",
    run: pipe_rtt,
};

/// 1 MiB messages parent → child, acknowledged once per batch.
pub const PIPE_1MIB: Workload =
    Workload { name: "pipe_1mib", about: "GB/s moving 1 MiB messages parent → child", run: pipe_1mib };

/// Round trips per sample.
const RTT_BATCH: u64 = 200;
/// Size of one large message.
const MIB: usize = 1 << 20;
/// 1 MiB messages per sample (then one acknowledgement).
const MIB_BATCH: u64 = 64;

const FLOOR_SOCKET_RTT: &str = "raw socketpair read/write echo, same two processes";
const FLOOR_MEMCPY: &str = "memcpy of 1 MiB, one core";
const REFERENCE_SOCKET_STREAM: &str = "raw socketpair write/read, same two processes";

/// The transports a child serves; the parent names one in each command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Plain `read`/`write` on the raw control socket.
    Raw = 0,
    /// A multiproc pipe, `send_bytes`/`recv_bytes`.
    Bytes = 1,
    /// A multiproc pipe, typed `send`/`recv` of a `u64`.
    Typed = 2,
}

impl Transport {
    fn from_u64(v: u64) -> Transport {
        match v {
            0 => Transport::Raw,
            1 => Transport::Bytes,
            2 => Transport::Typed,
            _ => panic!("unknown transport {v} in a command"),
        }
    }
}

/// A command on the control socket: transport and message count.
fn command(transport: Transport, count: u64) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..8].copy_from_slice(&(transport as u64).to_le_bytes());
    c[8..].copy_from_slice(&count.to_le_bytes());
    c
}

/// Reads the next command; `None` at end of stream (the parent is done).
fn next_command(control: &mut File) -> Option<(Transport, u64)> {
    let mut c = [0u8; 16];
    if !read_full(control, &mut c).expect("control socket read failed") {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().expect("8 bytes"));
    Some((Transport::from_u64(word(0)), word(8)))
}

/// Fills `buf`; `Ok(false)` on end of stream before the first byte.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 if got == 0 => return Ok(false),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(true)
}

/// The parent's ends of a child serving all three transports.
struct Served<T> {
    control: File,
    bytes: Connection<Vec<u8>>,
    typed: Connection<T>,
    child: Process<u64>,
    /// Messages sent so far (all transports).
    sent: u64,
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Served<T> {
    /// Starts `child_fn(control, bytes, typed, arg)` in a child process.
    fn start<F, A>(child_fn: F, arg: A) -> Result<Self, BenchError>
    where
        F: Task<(SendFd, Connection<Vec<u8>>, Connection<T>, A), u64>,
        A: serde::Serialize + serde::de::DeserializeOwned,
    {
        let (control, control_child) = UnixStream::pair()?;
        let (bytes, bytes_child) = Pipe::<Vec<u8>>::duplex()?;
        let (typed, typed_child) = Pipe::<T>::duplex()?;
        let child = Process::spawn(child_fn, (SendFd::from(control_child), bytes_child, typed_child, arg))?;
        Ok(Served { control: File::from(OwnedFd::from(control)), bytes, typed, child, sent: 0 })
    }

    /// Announces a batch (not timed).
    fn announce(&mut self, transport: Transport, count: u64) -> Result<(), BenchError> {
        Ok(self.control.write_all(&command(transport, count))?)
    }

    /// Closes every end and checks the child's count of messages handled.
    fn finish(self) -> Result<(), BenchError> {
        let Served { control, bytes, typed, mut child, sent } = self;
        drop((control, bytes, typed));
        let handled = child.join()?;
        ensure(handled == sent, || format!("child handled {handled} messages, parent sent {sent}"))
    }
}

/// One transport of a shared child, as a [`Subject`].
struct Via<'a, S> {
    served: &'a RefCell<S>,
    transport: Transport,
}

fn pipe_rtt(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(2, 8.0, 20, 1_000_000, 30), Plan::new(1, 1.5, 10, 1_000_000, 30));
    let batch = RTT_BATCH.to_string();
    let served = RefCell::new(Served::<u64>::start(echo_child, ())?);
    let mut py_bytes = ctx.python("pipe.py", "pipe_rtt", &["--mode", "bytes", "--batch", &batch], &plan)?;
    let mut py_typed = ctx.python("pipe.py", "pipe_rtt", &["--mode", "typed", "--batch", &batch], &plan)?;
    let via = |transport| Via { served: &served, transport };
    let (mut raw, mut bytes, mut typed) = (via(Transport::Raw), via(Transport::Bytes), via(Transport::Typed));
    let stats = ctx.measure(
        &plan,
        &mut [
            ("floor: raw socketpair echo", &mut raw),
            ("multiproc pipe_rtt send_bytes/recv_bytes", &mut bytes),
            ("multiproc pipe_rtt typed send/recv (u64)", &mut typed),
            ("cpython pipe_rtt --mode bytes", &mut py_bytes),
            ("cpython pipe_rtt --mode typed", &mut py_typed),
        ],
    )?;
    served.into_inner().finish()?;
    py_bytes.finish()?;
    py_typed.finish()?;
    let [floor, bytes, typed, py_bytes, py_typed] = <[Stats; 5]>::try_from(stats).expect("five subjects");
    let extra = json!({ "message_bytes": 8, "round_trips_per_sample": RTT_BATCH });
    Ok(vec![
        Row::new("pipe_rtt", Unit::Micros, bytes, py_bytes)
            .with_floor(FLOOR_SOCKET_RTT, floor.clone())
            .with_extra("api", json!("send_bytes/recv_bytes"))
            .with_extra("params", extra.clone()),
        Row::new("pipe_rtt/typed", Unit::Micros, typed, py_typed)
            .with_floor(FLOOR_SOCKET_RTT, floor)
            .with_extra("api", json!("send/recv of a u64 (CPython: pickled int)"))
            .with_extra("params", extra),
    ])
}

/// The echo child: for each command, echoes that many 8-byte messages on the
/// named transport. Returns the number of messages echoed.
fn echo_child(control: SendFd, bytes: Connection<Vec<u8>>, typed: Connection<u64>, (): ()) -> u64 {
    let mut control = File::from(control.into_inner());
    let mut echoed = 0;
    let mut buf = [0u8; 8];
    while let Some((transport, count)) = next_command(&mut control) {
        for _ in 0..count {
            match transport {
                Transport::Raw => {
                    assert!(read_full(&mut control, &mut buf).expect("raw read failed"), "raw stream ended");
                    control.write_all(&buf).expect("raw write failed");
                }
                Transport::Bytes => bytes.send_bytes(&bytes.recv_bytes().expect("recv_bytes")).expect("send_bytes"),
                Transport::Typed => typed.send(&typed.recv().expect("recv")).expect("send"),
            }
            echoed += 1;
        }
    }
    echoed
}

impl Served<u64> {
    /// One checked round trip of message `seq` on `transport`.
    fn round_trip(&mut self, transport: Transport, seq: u64) -> Result<(), BenchError> {
        let msg = seq.to_le_bytes();
        match transport {
            Transport::Raw => {
                let mut back = [0u8; 8];
                self.control.write_all(&msg)?;
                ensure(read_full(&mut self.control, &mut back)?, || "echo child closed the socket".into())?;
                ensure(back == msg, || format!("raw echo of message {seq} differs: {back:?}"))
            }
            Transport::Bytes => {
                self.bytes.send_bytes(&msg)?;
                let back = self.bytes.recv_bytes()?;
                ensure(back == msg, || format!("echo of message {seq} differs: {back:?}"))
            }
            Transport::Typed => {
                self.typed.send(&seq)?;
                let back = self.typed.recv()?;
                ensure(back == seq, || format!("echo of {seq} came back as {back}"))
            }
        }
    }
}

impl Subject for Via<'_, Served<u64>> {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let mut s = self.served.borrow_mut();
        s.announce(self.transport, RTT_BATCH)?;
        let t = Instant::now();
        for _ in 0..RTT_BATCH {
            s.sent += 1;
            let seq = s.sent;
            s.round_trip(self.transport, seq)?;
        }
        Ok(micros(t.elapsed()) / RTT_BATCH as f64)
    }
}

fn pipe_1mib(ctx: &Ctx) -> Result<Vec<Row>, BenchError> {
    let plan = ctx.plan(Plan::new(2, 6.0, 10, 1_000_000, 40), Plan::new(1, 1.5, 5, 1_000_000, 40));
    let full_checks = ctx.full_check_batches(&plan);
    let mut memcpy = memcpy_rate();
    let served = RefCell::new(Stream { served: Served::<()>::start(sink_child, full_checks)?, buf: pattern() });
    let args = ["--batch".to_string(), MIB_BATCH.to_string(), "--full-check-batches".into(), full_checks.to_string()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut py = ctx.python("pipe.py", "pipe_1mib", &args, &plan)?;
    let (mut socket, mut ours) =
        (Via { served: &served, transport: Transport::Raw }, Via { served: &served, transport: Transport::Bytes });
    let stats = ctx.measure(
        &plan,
        &mut [
            ("floor: memcpy 1 MiB", &mut memcpy),
            ("reference: raw socketpair 1 MiB writes", &mut socket),
            ("multiproc pipe_1mib send_bytes/recv_bytes", &mut ours),
            ("cpython pipe_1mib", &mut py),
        ],
    )?;
    served.into_inner().served.finish()?;
    py.finish()?;
    let [floor, socket, ours, py] = <[Stats; 4]>::try_from(stats).expect("four subjects");
    Ok(vec![
        Row::new("pipe_1mib", Unit::GigabytesPerSec, ours, py)
            .with_floor(FLOOR_MEMCPY, floor)
            .with_extra("api", json!("send_bytes/recv_bytes"))
            .with_extra("params", json!({ "message_bytes": MIB, "messages_per_sample": MIB_BATCH }))
            .with_extra(
                "reference",
                json!({ "name": REFERENCE_SOCKET_STREAM, "value": socket.value(), "stats": socket }),
            ),
    ])
}

/// Byte `i` of every large message (a prime period, so a shifted copy shows).
fn pattern() -> Vec<u8> {
    (0..MIB).map(|i| (i % 251) as u8).collect()
}

/// Writes the message's sequence number into its first and last 8 bytes.
fn stamp(buf: &mut [u8], seq: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

/// Checks a received large message: length and both sequence stamps always;
/// every byte when `full` (the warm-up batches), a few sampled bytes otherwise.
fn check_message(msg: &[u8], seq: u64, full: bool, pattern: &[u8]) -> Result<(), String> {
    if msg.len() != MIB {
        return Err(format!("message {seq} has {} bytes, expected {MIB}", msg.len()));
    }
    let head = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
    let tail = u64::from_le_bytes(msg[MIB - 8..].try_into().expect("8 bytes"));
    if head != seq || tail != seq {
        return Err(format!("message {seq} carries stamps {head}/{tail}"));
    }
    let body = 8..MIB - 8;
    let ok = if full {
        msg[body.clone()] == pattern[body]
    } else {
        [8, 4099, MIB / 2 + 7, MIB - 9].iter().all(|&i| msg[i] == pattern[i])
    };
    if ok { Ok(()) } else { Err(format!("message {seq} content differs from the pattern")) }
}

/// The sink child: for each command, receives that many 1 MiB messages on the
/// named transport, checks them (every byte of each transport's first
/// `full_checks` batches), and acknowledges the batch with its count on the
/// same transport. Returns the number of messages received.
fn sink_child(control: SendFd, bytes: Connection<Vec<u8>>, _typed: Connection<()>, full_checks: u64) -> u64 {
    let pattern = pattern();
    let mut control = File::from(control.into_inner());
    let mut buf = vec![0u8; MIB];
    let mut received = 0u64;
    let mut batches = [0u64; 2];
    while let Some((transport, count)) = next_command(&mut control) {
        let full = batches[transport as usize] < full_checks;
        for _ in 0..count {
            let msg = match transport {
                Transport::Raw => {
                    assert!(read_full(&mut control, &mut buf).expect("raw read failed"), "raw stream ended");
                    None
                }
                Transport::Bytes => Some(bytes.recv_bytes().expect("recv_bytes")),
                Transport::Typed => panic!("the sink has no typed transport"),
            };
            if let Err(e) = check_message(msg.as_deref().unwrap_or(&buf), received, full, &pattern) {
                panic!("{e}");
            }
            received += 1;
        }
        let ack = count.to_le_bytes();
        match transport {
            Transport::Raw => control.write_all(&ack).expect("raw ack failed"),
            _ => bytes.send_bytes(&ack).expect("ack failed"),
        }
        batches[transport as usize] += 1;
    }
    received
}

/// The parent of the sink child, with the message buffer it stamps and sends.
struct Stream {
    served: Served<()>,
    buf: Vec<u8>,
}

impl Subject for Via<'_, Stream> {
    fn sample(&mut self) -> Result<f64, BenchError> {
        let mut stream = self.served.borrow_mut();
        let Stream { served, buf } = &mut *stream;
        served.announce(self.transport, MIB_BATCH)?;
        let t = Instant::now();
        for _ in 0..MIB_BATCH {
            stamp(buf, served.sent);
            match self.transport {
                Transport::Raw => served.control.write_all(buf)?,
                _ => served.bytes.send_bytes(buf)?,
            }
            served.sent += 1;
        }
        let ack = match self.transport {
            Transport::Raw => {
                let mut ack = [0u8; 8];
                ensure(read_full(&mut served.control, &mut ack)?, || "sink child closed the socket".into())?;
                ack.to_vec()
            }
            _ => served.bytes.recv_bytes()?,
        };
        let elapsed = t.elapsed();
        ensure(ack == MIB_BATCH.to_le_bytes(), || format!("sink child acknowledged {ack:?}"))?;
        Ok(gb_per_s(MIB_BATCH as usize * MIB, elapsed))
    }
}

/// The floor: one core copying 1 MiB buffers (a transfer between processes
/// needs at least one such copy). Each sample checks the copy.
fn memcpy_rate() -> impl FnMut() -> Result<f64, BenchError> {
    let src = pattern();
    let mut dst = vec![0u8; MIB];
    move || {
        dst[0] = !src[0];
        let t = Instant::now();
        for _ in 0..MIB_BATCH {
            black_box(&mut dst).copy_from_slice(black_box(&src));
        }
        let elapsed = t.elapsed();
        ensure(dst == src, || "memcpy result differs".into())?;
        Ok(gb_per_s(MIB_BATCH as usize * MIB, elapsed))
    }
}
