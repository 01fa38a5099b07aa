//! RedisAsync has the local AsyncResult's calls: get, get_timeout, wait,
//! ready, successful, callbacks (exactly one per call), and the Future
//! implementation under tokio. Ported from multiproc's tests/pool_async.rs
//! (cancel has no counterpart over Redis).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use multiproc_redis::{RedisAsync, RedisPoolError, TaskFailure};
use support::{local_worker, pool, server};

/// Generous bound for waits that should finish quickly (loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(30);
/// Slack on top of a promised time.
const SLACK: Duration = Duration::from_secs(5);

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail(x: u64) -> u64 {
    panic!("no {x}")
}

fn get<T>(mut r: RedisAsync<T>) -> Result<T, RedisPoolError> {
    r.get_timeout(WAIT)
}

#[test]
fn get_timeout_expires_after_about_t_and_the_task_goes_on() {
    let server = server();
    let _w = local_worker(&server, "gto", 1);
    let pool = pool(&server, "gto").connect().unwrap();
    // Long enough that the result cannot be in before the checks below
    // that it is not, however slowly a loaded machine runs them.
    let mut r = pool.apply_async(sleep_ms, (5_000,));
    let t = Instant::now();
    let err = r.get_timeout(Duration::from_millis(200)).unwrap_err();
    let took = t.elapsed();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(200) + SLACK, "{took:?}");
    assert!(!r.ready());
    assert_eq!(r.get_timeout(WAIT).unwrap(), 5_000, "the task went on");
    assert!(matches!(r.get_timeout(WAIT), Err(RedisPoolError::Taken)));
    assert!(matches!(r.successful(), Err(RedisPoolError::Taken)));
}

#[test]
fn wait_ready_and_successful() {
    let server = server();
    let _w = local_worker(&server, "wrs", 2);
    let pool = pool(&server, "wrs").connect().unwrap();
    // Not ready for a while, however slowly a loaded machine runs the checks.
    let slow = pool.apply_async(sleep_ms, (3_000,));
    assert!(!slow.ready());
    assert!(matches!(slow.successful(), Err(RedisPoolError::NotReady)));
    assert!(!slow.wait_timeout(Duration::from_millis(50)));
    assert!(slow.wait_timeout(WAIT));
    assert!(slow.ready());
    assert!(slow.successful().unwrap());
    let bad = pool.apply_async(fail, (1,));
    assert!(bad.wait_timeout(WAIT));
    assert!(!bad.successful().unwrap());
    let err = get(bad).unwrap_err();
    assert!(matches!(err, RedisPoolError::Task { error: TaskFailure::Panicked { .. }, .. }), "{err:?}");
    let many: Vec<_> = (0..10u64).map(|x| pool.apply_async(square, (x,))).collect();
    for (x, r) in (0..10u64).zip(many) {
        r.wait();
        assert!(r.successful().unwrap());
        assert_eq!(r.get().unwrap(), x * x);
    }
}

#[test]
fn exactly_one_callback_runs_per_call() {
    let server = server();
    let _w = local_worker(&server, "cbs", 2);
    let pool = pool(&server, "cbs").connect().unwrap();
    let oks = Arc::new(AtomicUsize::new(0));
    let errs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for x in 0..20u64 {
        let (o, e, t1, t2) = (oks.clone(), errs.clone(), tx.clone(), tx.clone());
        let r = if x % 4 == 0 { pool.apply_async(fail, (x,)) } else { pool.apply_async(square, (x,)) };
        handles.push(
            r.callback(move |v| {
                o.fetch_add(1, Ordering::SeqCst);
                t1.send(Ok(*v)).unwrap();
            })
            .error_callback(move |err| {
                e.fetch_add(1, Ordering::SeqCst);
                t2.send(Err(err.to_string())).unwrap();
            }),
        );
    }
    for h in &handles {
        assert!(h.wait_timeout(WAIT));
    }
    let got: Vec<_> = (0..20).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "no extra callback");
    assert_eq!(oks.load(Ordering::SeqCst), 15);
    assert_eq!(errs.load(Ordering::SeqCst), 5);
    assert!(got.iter().filter_map(|r| r.as_ref().err()).all(|m| m.contains("panicked")), "{got:?}");
    let mut values: Vec<u64> = got.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    values.sort_unstable();
    let want: Vec<u64> = (0..20u64).filter(|x| x % 4 != 0).map(square).collect();
    assert_eq!(values, want, "each callback had its own call's value");
    // A callback attached after completion runs at once, on this thread.
    let done = pool.apply_async(add, (1, 1));
    assert!(done.wait_timeout(WAIT));
    let (t, r) = mpsc::channel();
    let done = done.callback(move |v| t.send(*v).unwrap());
    assert_eq!(r.try_recv().unwrap(), 2);
    assert_eq!(get(done).unwrap(), 2, "the value stays for get");
    // map_async: one callback for the whole call.
    let (t, r) = mpsc::channel();
    let m = pool.map_async(square, 0..100u64).callback(move |v: &Vec<u64>| t.send(v.len()).unwrap());
    assert_eq!(r.recv_timeout(WAIT).unwrap(), 100);
    assert_eq!(get(m).unwrap().len(), 100);
    assert!(r.recv_timeout(Duration::from_millis(100)).is_err(), "no second callback");
}

/// Counts the polls of the future inside.
struct Counted<F> {
    inner: F,
    polls: Arc<AtomicUsize>,
}

impl<F: Future + Unpin> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[test]
fn async_results_are_futures() {
    let server = server();
    let _w = local_worker(&server, "fut", 2);
    let pool = pool(&server, "fut").connect().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let a = pool.apply_async(square, (7,));
        let b = pool.map_async(square, 0..10u64);
        let c = pool.apply_async(sleep_ms, (150,));
        // A timeout whose timer fires polls the future once more, so only the
        // time taken shows whether the future was woken.
        let t = Instant::now();
        let (a, b, c) = tokio::time::timeout(WAIT, async { (a.await, b.await, c.await) }).await.unwrap();
        assert!(t.elapsed() < SLACK, "woken when the results arrived, not at the timeout: {:?}", t.elapsed());
        assert_eq!(a.unwrap(), 49);
        assert_eq!(b.unwrap(), (0..10u64).map(square).collect::<Vec<_>>());
        assert_eq!(c.unwrap(), 150);
        let bad = tokio::time::timeout(WAIT, pool.apply_async(fail, (3,))).await.unwrap();
        assert!(bad.is_err());
        // Woken when the result arrives, not polled in a loop.
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Counted { inner: pool.apply_async(sleep_ms, (500,)), polls: polls.clone() };
        let t = Instant::now();
        assert_eq!(tokio::time::timeout(WAIT, counted).await.unwrap().unwrap(), 500);
        assert!(t.elapsed() < SLACK, "{:?}", t.elapsed());
        assert!(polls.load(Ordering::SeqCst) <= 3, "polled {} times", polls.load(Ordering::SeqCst));
        // A slow task and a timer race fairly.
        let slow = pool.apply_async(sleep_ms, (2_000,));
        assert!(tokio::time::timeout(Duration::from_millis(100), slow).await.is_err());
    });
}
