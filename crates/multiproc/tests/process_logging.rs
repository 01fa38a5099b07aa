//! Logging and child output (issue 13, item 3; seed 003): `log_to_stderr`
//! prints the library's lifecycle records and the program's own, from every
//! process, with the process name; the level carries over to children; a
//! child's stdout and stderr can be captured or prefixed; the records are
//! `tracing` events carrying the process name.
//!
//! Each test that changes the logging level runs the change inside a child
//! (whose output the test captures), so the tests do not disturb each other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use multiproc::{ChildOutput, Level, Pool, Process, StartMethod, logger};

const LONG: Duration = Duration::from_secs(30);

fn text(bytes: Option<Vec<u8>>) -> String {
    String::from_utf8(bytes.expect("captured")).unwrap()
}

fn say_and_log() -> Option<String> {
    println!("Doing some work");
    logger().info("an info record");
    logger().debug("a debug record");
    logger().level().map(|l| l.to_string())
}

/// Seed 003's program: `log_to_stderr(); logger.setLevel(INFO)`, then a child
/// started with `method` ("spawn", "forkserver" or "fork"). Returns the
/// child's captured stdout and stderr and the level it saw.
fn parent_with_logging(level: String, method: String) -> (String, String, Option<String>) {
    let level: Level = level.parse().unwrap();
    let method = match method.as_str() {
        "spawn" => StartMethod::Spawn,
        "forkserver" => StartMethod::ForkServer,
        // SAFETY: this runs in a child of the test, whose only threads are
        // this one and the library's own: none holds a lock the fork needs.
        "fork" => unsafe { StartMethod::fork() },
        other => panic!("no start method {other}"),
    };
    multiproc::log_to_stderr(level);
    let mut p = Process::builder()
        .name("worker")
        .start_method(method)
        .stdout(ChildOutput::Capture)
        .stderr(ChildOutput::Capture)
        .spawn(say_and_log, ())
        .unwrap();
    let seen = p.join_timeout(LONG).unwrap();
    (text(p.captured_stdout()), text(p.captured_stderr()), seen)
}

#[test]
fn the_level_carries_over_and_records_carry_the_process_name() {
    for method in ["spawn", "forkserver", "fork"] {
        let mut p = Process::spawn(parent_with_logging, ("INFO".to_string(), method.to_string())).unwrap();
        let (out, err, seen) = p.join_timeout(LONG).unwrap();
        assert_eq!(out, "Doing some work\n", "{method}");
        assert_eq!(seen.as_deref(), Some("INFO"), "{method}: the child took the parent's level");
        assert!(err.contains("[INFO/worker] child process started, running its task\n"), "{method}: {err}");
        assert!(err.contains("[INFO/worker] an info record\n"), "{method}: {err}");
        assert!(err.contains("[INFO/worker] process exiting with exitcode 0\n"), "{method}: {err}");
        assert!(!err.contains("a debug record"), "{method}: below the level: {err}");
        assert!(err.lines().all(|l| l.starts_with("[INFO/worker] ")), "{method}: a line not a record: {err}");
    }

    let mut p = Process::spawn(parent_with_logging, ("WARN".to_string(), "forkserver".to_string())).unwrap();
    let (_, err, seen) = p.join_timeout(LONG).unwrap();
    assert_eq!(seen.as_deref(), Some("WARN"));
    assert_eq!(err, "", "nothing at WARN or above happened");
}

/// Records of this length (under the 4 KiB a pipe writes whole) from
/// several children at once must come out whole, one per line.
const RECORD_BYTES: usize = 1000;

fn log_many(records: u32) {
    let body = "x".repeat(RECORD_BYTES);
    for i in 0..records {
        logger().info(format_args!("{i:04} {body}"));
    }
}

/// Starts four children logging at once into this process's stderr (which
/// the test captures).
fn parent_of_chatty_children() {
    multiproc::log_to_stderr(Level::INFO);
    let mut children: Vec<_> =
        (0..4).map(|k| Process::builder().name(format!("chatty-{k}")).spawn(log_many, (200u32,)).unwrap()).collect();
    for c in &mut children {
        c.join_timeout(LONG).unwrap();
    }
}

#[test]
fn records_of_children_logging_at_once_are_not_mixed_mid_line() {
    let mut p = Process::builder().stderr(ChildOutput::Capture).spawn(parent_of_chatty_children, ()).unwrap();
    p.join_timeout(LONG).unwrap();
    let err = text(p.captured_stderr());
    let body = "x".repeat(RECORD_BYTES);
    let mut records = 0;
    for line in err.lines() {
        let (head, message) = line.split_once("] ").unwrap_or_else(|| panic!("not a record: {line:.80}"));
        assert!(head.starts_with("[INFO/") && !head[1..].contains('['), "not a record: {line:.80}");
        if head.starts_with("[INFO/chatty-") && message.len() == 5 + RECORD_BYTES {
            assert_eq!(&message[5..], body, "a record cut by another: {line:.80}");
            records += 1;
        }
    }
    assert_eq!(records, 4 * 200, "records lost or broken");
}

#[test]
fn without_log_to_stderr_nothing_is_printed() {
    let mut p = Process::builder().stderr(ChildOutput::Capture).spawn(say_and_log, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), None);
    assert_eq!(text(p.captured_stderr()), "");
    assert_eq!(p.captured_stdout(), None, "stdout was inherited");
}

fn shout(lines: u32) {
    for i in 0..lines {
        println!("line {i}");
    }
    eprint!("no newline at the end");
}

/// Starts `shout` with both streams prefixed; this process's own streams
/// are captured by the test.
fn prefixing_parent() {
    let mut p = Process::builder()
        .name("shouter")
        .stdout(ChildOutput::Prefix)
        .stderr(ChildOutput::Prefix)
        .spawn(shout, (3u32,))
        .unwrap();
    p.join_timeout(LONG).unwrap();
}

#[test]
fn prefixed_output_has_the_name_on_every_line() {
    let mut p = Process::builder()
        .stdout(ChildOutput::Capture)
        .stderr(ChildOutput::Capture)
        .spawn(prefixing_parent, ())
        .unwrap();
    p.join_timeout(LONG).unwrap();
    assert_eq!(text(p.captured_stdout()), "[shouter] line 0\n[shouter] line 1\n[shouter] line 2\n");
    assert_eq!(text(p.captured_stderr()), "[shouter] no newline at the end\n");
}

#[test]
fn a_child_that_writes_a_lot_does_not_block_on_a_full_pipe() {
    let mut p = Process::builder().stdout(ChildOutput::Capture).spawn(shout, (50_000u32,)).unwrap();
    p.join_timeout(LONG).unwrap();
    let out = text(p.captured_stdout());
    assert_eq!(out.lines().count(), 50_000);
    assert!(out.ends_with("line 49999\n"));
}

/// Bytes `write_without_newline` writes: several MiB, no `'\n'` among them.
const UNBROKEN: usize = 8 << 20;

/// The longest piece of a line the parent buffers before copying it out
/// (documented on `ChildOutput::Prefix`).
const LONGEST_PIECE: usize = 64 << 10;

fn unbroken_byte(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// Writes [`UNBROKEN`] bytes without a newline, then stays alive until
/// `release` is set (so the parent sees the output before the pipe's end);
/// returns whether it was released (rather than timing out).
fn write_without_newline(release: multiproc::Event) -> bool {
    use std::io::Write;
    let bytes: Vec<u8> = (0..UNBROKEN).map(unbroken_byte).collect();
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes).unwrap();
    out.flush().unwrap();
    drop(out);
    release.wait_timeout(Duration::from_secs(120))
}

/// Starts `write_without_newline` with its stdout prefixed (into this
/// process's stdout, which the test captures).
fn unbroken_prefixing_parent(release: multiproc::Event) -> bool {
    let mut p = Process::builder()
        .name("unbroken")
        .stdout(ChildOutput::Prefix)
        .spawn(write_without_newline, (release,))
        .unwrap();
    p.join_timeout(Duration::from_secs(150)).unwrap()
}

#[test]
fn a_line_without_end_is_copied_out_in_bounded_pieces_as_it_comes() {
    let release = multiproc::Event::new().unwrap();
    let mut p =
        Process::builder().stdout(ChildOutput::Capture).spawn(unbroken_prefixing_parent, (release.clone(),)).unwrap();
    // The writer is still alive (its pipe open): what arrives now was
    // copied out before the end of its output, not buffered until then.
    let start = std::time::Instant::now();
    let mut before_end = 0;
    while start.elapsed() < LONG {
        before_end = p.captured_stdout().map_or(0, |out| out.len());
        if before_end >= UNBROKEN / 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    release.set();
    assert!(p.join_timeout(Duration::from_secs(180)).unwrap(), "the writer was not released in time");
    let out = p.captured_stdout().expect("captured");
    assert!(before_end >= UNBROKEN / 2, "only {before_end} bytes came out while the writer ran");

    // Every piece is a line behind the prefix, none longer than the bound,
    // and together they are the bytes written, in order.
    let mut joined = Vec::with_capacity(UNBROKEN);
    for piece in out.split_inclusive(|&b| b == b'\n') {
        let piece = piece.strip_prefix(b"[unbroken] ").expect("each piece starts with the prefix");
        let piece = piece.strip_suffix(b"\n").expect("each piece ends with a newline");
        assert!(piece.len() <= LONGEST_PIECE, "a piece of {} bytes", piece.len());
        joined.extend_from_slice(piece);
    }
    assert_eq!(joined.len(), UNBROKEN);
    assert!(joined.iter().enumerate().all(|(i, &b)| b == unbroken_byte(i)), "bytes lost or out of order");
}

fn die(x: u64) -> u64 {
    if x == 1 {
        std::process::exit(3);
    }
    x
}

/// Runs a pool whose worker dies, with records on stderr at INFO.
fn pool_with_logging() -> usize {
    multiproc::log_to_stderr(Level::INFO);
    let pool = Pool::new(1).unwrap();
    let results: Vec<_> = pool.imap(die, 0..3u64).collect();
    pool.close();
    pool.join_timeout(LONG).unwrap();
    results.iter().filter(|r| r.is_err()).count()
}

#[test]
fn a_replaced_pool_worker_is_logged() {
    let mut p =
        Process::builder().name("pool-owner").stderr(ChildOutput::Capture).spawn(pool_with_logging, ()).unwrap();
    assert_eq!(p.join_timeout(LONG).unwrap(), 1);
    let err = text(p.captured_stderr());
    assert!(err.contains("[WARN/pool-owner] pool worker PoolWorker-1 (pid "), "{err}");
    assert!(err.contains("died (exit code 3)"), "{err}");
    assert!(err.contains("[INFO/pool-owner] pool worker replaced: started PoolWorker-2"), "{err}");
    // The workers' own records reach the same stderr, under their names.
    assert!(err.contains("[INFO/PoolWorker-1] child process started, running its task"), "{err}");
}

/// A `tracing` subscriber that keeps (level, process, message) of each event.
struct Keep(Arc<Mutex<Vec<(Level, String, String)>>>);

#[derive(Default)]
struct Fields {
    process: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "process" => self.process = format!("{value:?}"),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

impl tracing::Subscriber for Keep {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "multiproc"
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push((*event.metadata().level(), fields.process, fields.message));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn nothing() {}

#[test]
fn lifecycle_records_are_tracing_events_with_the_process_name() {
    let kept = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::with_default(Keep(kept.clone()), || {
        let mut p = Process::builder().name("traced").spawn(nothing, ()).unwrap();
        p.join_timeout(LONG).unwrap();
        logger().info("mine");
    });
    let kept = kept.lock().unwrap();
    let has = |level: Level, message: &str| {
        kept.iter().any(|(l, process, m)| *l == level && process == "MainProcess" && m.starts_with(message))
    };
    assert!(has(Level::DEBUG, "started child traced (pid "), "{kept:?}");
    assert!(has(Level::DEBUG, "child traced (pid "), "{kept:?}");
    assert!(has(Level::INFO, "mine"), "{kept:?}");
}
