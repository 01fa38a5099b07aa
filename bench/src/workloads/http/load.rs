//! The load generator of the HTTP workloads: keep-alive HTTP/1.1
//! connections on a current-thread runtime, each with one request at a
//! time, until a burst's bounded number of requests is done; every answer
//! is checked. A burst gives its requests/s, the p50/p90/p99 of its request
//! latencies, and where its CPU time went (`super::cpu`).

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cpu::{CpuBurst, CpuSnapshot, cpu_json};
use crate::measure::{Stats, Subject};
use crate::{BenchError, ensure};

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// One keep-alive HTTP/1.1 connection of the load generator.
pub(super) struct Conn {
    stream: TcpStream,
    pub(super) buf: Vec<u8>,
}

impl Conn {
    pub(super) async fn open(addr: SocketAddr) -> Result<Conn, BenchError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: Vec::with_capacity(4096) })
    }

    /// Sends one request and reads its response: status and body (a view
    /// of the connection's buffer, valid until the next request). Bytes are
    /// read straight into that buffer and the head's end is looked for only
    /// in what just arrived: the generator shares the CPUs with the server it
    /// drives, so its own cost per request is kept small.
    pub(super) async fn request(&mut self, raw: &[u8]) -> Result<(u16, &[u8]), BenchError> {
        self.stream.write_all(raw).await?;
        self.buf.clear();
        let mut searched = 0;
        let head_end = loop {
            self.buf.reserve(4096);
            let n = self.stream.read_buf(&mut self.buf).await?;
            ensure(n > 0, || "connection closed mid-response".into())?;
            if let Some(i) = self.buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
                break searched + i + 4;
            }
            searched = self.buf.len().saturating_sub(3);
            ensure(self.buf.len() < 64 << 10, || "response head over 64 KiB".into())?;
        };
        let head =
            std::str::from_utf8(&self.buf[..head_end]).map_err(|_| BenchError::new("response head is not UTF-8"))?;
        let status: u16 =
            head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| BenchError::new("bad status line"))?;
        let length =
            content_length(head).ok_or_else(|| BenchError::new(format!("response without Content-Length: {head}")))?;
        ensure(length <= 16 << 20, || format!("response body of {length} bytes"))?;
        let end = head_end + length;
        while self.buf.len() < end {
            self.buf.reserve(end - self.buf.len());
            let n = self.stream.read_buf(&mut self.buf).await?;
            ensure(n > 0, || "connection closed mid-body".into())?;
        }
        ensure(self.buf.len() == end, || "more bytes than Content-Length".into())?;
        Ok((status, &self.buf[head_end..]))
    }
}

/// The `Content-Length` of an HTTP/1.1 message head.
pub(super) fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// True if `body` is UTF-8 text containing `expect`.
fn answer_holds(body: &[u8], expect: &str) -> bool {
    std::str::from_utf8(body).is_ok_and(|text| text.contains(expect))
}

/// A burst's figures.
#[derive(Debug, Clone, Copy)]
pub(super) struct Burst {
    per_sec: f64,
    p50: f64,
    p90: f64,
    pub(super) p99: f64,
}

/// Drives one server: `concurrency` connections, `requests` per burst.
pub(super) struct Driver {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    raw: std::sync::Arc<Vec<u8>>,
    expect: &'static str,
    concurrency: usize,
    requests: usize,
    bursts: Vec<Burst>,
    cpu: Vec<CpuBurst>,
}

impl Driver {
    pub(super) fn new(
        addr: SocketAddr,
        path: &str,
        body: &str,
        expect: &'static str,
        concurrency: usize,
        requests: usize,
    ) -> Result<Driver, BenchError> {
        let raw = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Ok(Driver {
            rt: runtime()?,
            addr,
            raw: std::sync::Arc::new(raw.into_bytes()),
            expect,
            concurrency,
            requests,
            bursts: Vec::new(),
            cpu: Vec::new(),
        })
    }

    /// One request on a fresh connection; the whole response as it came
    /// (head and body), checked like every answer.
    pub(super) fn record(&self) -> Result<Vec<u8>, BenchError> {
        self.rt.block_on(async {
            let mut c = Conn::open(self.addr).await?;
            let (status, body) = c.request(&self.raw).await?;
            ensure(status == 200 && answer_holds(body, self.expect), || format!("answer {status}"))?;
            Ok(c.buf)
        })
    }

    fn burst(&mut self) -> Result<Burst, BenchError> {
        let (addr, concurrency, requests, expect) = (self.addr, self.concurrency, self.requests, self.expect);
        let raw = std::sync::Arc::clone(&self.raw);
        let (elapsed, cpu, mut lat) = self.rt.block_on(async move {
            let mut conns = Vec::with_capacity(concurrency);
            for _ in 0..concurrency {
                conns.push(Conn::open(addr).await?);
            }
            let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(requests));
            // The tasks run on this thread (a current-thread runtime): the
            // snapshots' own time is outside the timed part.
            let before = CpuSnapshot::now();
            let start = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    let (left, raw) = (std::sync::Arc::clone(&left), std::sync::Arc::clone(&raw));
                    tokio::spawn(async move {
                        let mut lat = Vec::new();
                        while left
                            .fetch_update(
                                std::sync::atomic::Ordering::Relaxed,
                                std::sync::atomic::Ordering::Relaxed,
                                |n| n.checked_sub(1),
                            )
                            .is_ok()
                        {
                            let t = Instant::now();
                            let (status, body) = c.request(&raw).await?;
                            lat.push(t.elapsed().as_secs_f64() * 1e6);
                            ensure(status == 200 && answer_holds(body, expect), || {
                                format!("answer {status}: {}", String::from_utf8_lossy(body))
                            })?;
                        }
                        Ok::<_, BenchError>(lat)
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(requests);
            for t in tasks {
                all.extend(t.await.map_err(|e| BenchError::new(e.to_string()))??);
            }
            let elapsed = start.elapsed();
            Ok::<_, BenchError>((elapsed, CpuBurst::between(before, CpuSnapshot::now(), requests, elapsed), all))
        })?;
        ensure(lat.len() == requests, || format!("{} of {requests} requests answered", lat.len()))?;
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        let b =
            Burst { per_sec: requests as f64 / elapsed.as_secs_f64(), p50: pct(0.50), p90: pct(0.90), p99: pct(0.99) };
        self.bursts.push(b);
        self.cpu.push(cpu);
        Ok(b)
    }

    pub(super) fn stats(&self, f: fn(&Burst) -> f64) -> Stats {
        Stats::of(self.bursts.iter().map(f).collect())
    }

    /// CPU time per request by side (client, server, model workers) and
    /// the CPUs kept busy, medians over the bursts.
    pub(super) fn cpu_json(&self) -> serde_json::Value {
        cpu_json(&self.cpu)
    }

    pub(super) fn latency_json(&self) -> serde_json::Value {
        json!({
            "p50_us": self.stats(|b| b.p50).value(),
            "p90_us": self.stats(|b| b.p90).value(),
            "p99_us": self.stats(|b| b.p99).value(),
        })
    }
}

impl Subject for Driver {
    fn sample(&mut self) -> Result<f64, BenchError> {
        Ok(self.burst()?.per_sec)
    }
}
