//! `Barrier` across processes: distinct indices, an action once per pass,
//! abort, reset, timeouts breaking it for every party, a completer killed
//! in its action breaking it, and 5 processes × 1000 passes in lockstep.
//! SPEC.md, "Locks and friends".

mod sync_support;

use std::time::{Duration, Instant, SystemTime};

use multiproc::{Barrier, BarrierError, Event, RawArray, RawValue, SharedMemory, current_process, parent_process};
use sync_support::{Kid, LONG, assert_about, linger, wait_asleep, wait_until};

/// The name of the segment where the barrier actions of a test count passes:
/// per test process (children find it through their parent's pid) and test.
fn counter_name(test: &str) -> String {
    let root = parent_process().map_or(current_process().pid, |p| p.pid);
    format!("multiproc-barrier-{root}-{test}")
}

fn bump(test: &str) {
    let shm = SharedMemory::open(&counter_name(test)).expect("the test's counter segment");
    let mut b = [0u8; 8];
    shm.read_at(0, &mut b).unwrap();
    shm.write_at(0, &(u64::from_le_bytes(b) + 1).to_le_bytes()).unwrap();
}

fn count(shm: &SharedMemory) -> u64 {
    let mut b = [0u8; 8];
    shm.read_at(0, &mut b).unwrap();
    u64::from_le_bytes(b)
}

fn action_indices() {
    bump("indices");
}

fn action_lockstep() {
    bump("lockstep");
}

fn action_panics() {
    panic!("the action fails");
}

fn party(b: Barrier) -> Result<usize, BarrierError> {
    b.wait_timeout(LONG)
}

#[test]
fn each_party_gets_a_distinct_index_and_the_action_runs_once_per_pass() {
    let counter = SharedMemory::create(&counter_name("indices"), 8).unwrap();
    let b = Barrier::with_action(4, action_indices).unwrap();
    assert_eq!(b.parties(), 4);
    for pass in 1..=3u64 {
        let kids: Vec<Kid<Result<usize, BarrierError>>> = (0..3).map(|_| Kid::spawn(party, (b.clone(),))).collect();
        let mut indices = vec![b.wait_timeout(LONG).unwrap()];
        indices.extend(kids.into_iter().map(|k| k.join().unwrap()));
        indices.sort();
        assert_eq!(indices, [0, 1, 2, 3]);
        assert_eq!(count(&counter), pass, "one action per pass");
    }
    assert_eq!(b.n_waiting(), 0);
}

fn lockstep(b: Barrier, slots: RawArray<u32>, me: usize, passes: u32) -> u32 {
    let mut errors = 0;
    for pass in 1..=passes {
        slots.set(me, pass);
        b.wait_timeout(LONG).expect("barrier");
        // Everyone has written `pass`; the fastest may already be at `pass + 1`.
        for j in 0..slots.len() {
            let v = slots.get(j).unwrap();
            if v != pass && v != pass + 1 {
                errors += 1;
            }
        }
    }
    errors
}

#[test]
fn five_processes_stay_in_lockstep_for_1000_passes() {
    let counter = SharedMemory::create(&counter_name("lockstep"), 8).unwrap();
    let b = Barrier::with_action(5, action_lockstep).unwrap();
    let slots = RawArray::<u32>::zeroed(5).unwrap();
    let start = Instant::now();
    let kids: Vec<Kid<u32>> = (0..5).map(|i| Kid::spawn(lockstep, (b.clone(), slots.clone(), i, 1000u32))).collect();
    for k in kids {
        assert_eq!(k.join(), 0, "a process saw another more than one pass away");
    }
    assert_eq!(slots.to_vec(), [1000; 5]);
    assert_eq!(count(&counter), 1000);
    eprintln!("5 × 1000 passes in {:?}", start.elapsed());
}

#[test]
fn abort_breaks_waiting_and_later_parties_until_reset() {
    let b = Barrier::new(3).unwrap();
    let kid = Kid::spawn(party, (b.clone(),));
    wait_until("the child to wait", || b.n_waiting() == 1);
    b.abort();
    assert_eq!(kid.join(), Err(BarrierError::Broken));
    assert!(b.broken());
    assert_eq!(b.wait_timeout(LONG), Err(BarrierError::Broken));
    b.reset();
    assert!(!b.broken());
    let kids: Vec<Kid<Result<usize, BarrierError>>> = (0..2).map(|_| Kid::spawn(party, (b.clone(),))).collect();
    assert!(b.wait_timeout(LONG).is_ok());
    for k in kids {
        assert!(k.join().is_ok());
    }
}

#[test]
fn reset_while_a_party_waits_breaks_that_wait_only() {
    let b = Barrier::new(2).unwrap();
    let kid = Kid::spawn(party, (b.clone(),));
    wait_until("the child to wait", || b.n_waiting() == 1);
    b.reset();
    assert_eq!(kid.join(), Err(BarrierError::Broken));
    assert!(!b.broken());
    let kid = Kid::spawn(party, (b.clone(),));
    assert!(b.wait_timeout(LONG).is_ok());
    assert!(kid.join().is_ok());
}

/// Sends `signal` (`STOP` or `CONT`) to process `pid`.
fn signal(pid: i32, signal: &str) {
    let sent = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// Two parties of `b` (a thread and this one) pass it once.
fn pass_with_a_thread(b: &Barrier) {
    let b2 = b.clone();
    let t = std::thread::spawn(move || b2.wait_timeout(LONG));
    assert!(b.wait_timeout(LONG).is_ok());
    assert!(t.join().unwrap().is_ok());
}

/// A party that sleeps through a reset and the next pass (it is stopped)
/// must still learn that its own round was reset, not passed.
#[test]
fn a_party_asleep_through_a_reset_and_a_new_pass_gets_broken() {
    let b = Barrier::new(2).unwrap();
    let kid = Kid::spawn(party, (b.clone(),));
    wait_until("the child to wait", || b.n_waiting() == 1);
    wait_asleep(kid.pid());
    signal(kid.pid(), "STOP");
    b.reset();
    pass_with_a_thread(&b);
    signal(kid.pid(), "CONT");
    assert_eq!(kid.join(), Err(BarrierError::Broken), "its round was reset");
}

/// A party that sleeps through its own pass, a reset and another pass must
/// still learn that its round passed.
#[test]
fn a_party_asleep_through_its_pass_a_reset_and_a_new_pass_gets_its_index() {
    let b = Barrier::new(2).unwrap();
    let kid = Kid::spawn(party, (b.clone(),));
    wait_until("the child to wait", || b.n_waiting() == 1);
    wait_asleep(kid.pid());
    signal(kid.pid(), "STOP");
    assert_eq!(b.wait_timeout(LONG), Ok(1), "the last to arrive");
    b.reset();
    pass_with_a_thread(&b);
    signal(kid.pid(), "CONT");
    assert_eq!(kid.join(), Ok(0), "its round passed");
}

#[test]
fn a_timeout_breaks_the_barrier_for_every_party() {
    let b = Barrier::new(3).unwrap();
    let kid = Kid::spawn(party, (b.clone(),));
    wait_until("the child to wait", || b.n_waiting() == 1);
    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert_eq!(b.wait_timeout(t), Err(BarrierError::Timeout));
    assert_about(start, t);
    assert_eq!(kid.join(), Err(BarrierError::Broken), "the other party is released with Broken");
    assert!(b.broken());
}

fn party_catching_panic(b: Barrier) -> String {
    std::panic::set_hook(Box::new(|_| {})); // the panic is expected: keep the test output clean
    match std::panic::catch_unwind(|| b.wait_timeout(LONG)) {
        Ok(r) => format!("{r:?}"),
        Err(_) => "panicked".into(),
    }
}

#[test]
fn a_panicking_action_breaks_the_barrier() {
    let b = Barrier::with_action(2, action_panics).unwrap();
    let kids: Vec<Kid<String>> = (0..2).map(|_| Kid::spawn(party_catching_panic, (b.clone(),))).collect();
    let mut outcomes: Vec<String> = kids.into_iter().map(Kid::join).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["Err(Broken)", "panicked"]);
    assert!(b.broken());
    assert!(Barrier::new(0).is_err());
}

/// A party asleep (stopped) while the barrier's 8-bit generation goes
/// round once (256 rounds end: a reset and passes, or only passes) must
/// not take the generation it wakes to for its own round.
#[test]
fn a_party_asleep_through_256_rounds_learns_its_rounds_outcome() {
    for reset_first in [true, false] {
        let b = Barrier::new(2).unwrap();
        let kid = Kid::spawn(party, (b.clone(),));
        wait_until("the child to wait", || b.n_waiting() == 1);
        wait_asleep(kid.pid());
        signal(kid.pid(), "STOP");
        if reset_first {
            b.reset();
        } else {
            assert_eq!(b.wait_timeout(LONG), Ok(1), "the last to arrive");
        }
        for _ in 0..255 {
            pass_with_a_thread(&b);
        }
        signal(kid.pid(), "CONT");
        let start = Instant::now();
        let expected = if reset_first { Err(BarrierError::Broken) } else { Ok(0) };
        assert_eq!(kid.join(), expected, "reset first: {reset_first}");
        assert!(start.elapsed() < LONG / 2, "the child waited for its timeout");
    }
}

/// Waits on `b` until `stop` is set; returns how many waits passed with
/// each index (and counts the passes seen with index 2 in `passes` as they
/// happen). Any error but `Broken` (a timeout: a wait that never ended) is
/// a failure.
fn pass_until_stopped(b: Barrier, stop: Event, passes: RawValue<u64>) -> Result<[u64; 3], String> {
    let mut by_index = [0; 3];
    while !stop.is_set() {
        match b.wait_timeout(LONG) {
            Ok(i) => {
                by_index[i] += 1;
                if i == 2 {
                    passes.as_atomic().fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Err(BarrierError::Broken) => std::thread::yield_now(),
            Err(e) => return Err(format!("a wait failed with {e:?}")),
        }
    }
    Ok(by_index)
}

/// Four processes pass a 3-party barrier, while this one resets it over
/// and over if `resets`, for 1.5 s (and without resets, until at least one
/// pass, however slowly the processes start); returns the passes counted
/// by index.
fn four_processes_pass_three_party_rounds(resets: bool) -> [u64; 3] {
    let b = Barrier::new(3).unwrap();
    let stop = Event::new().unwrap();
    let passes = RawValue::new(0u64).unwrap();
    let kids: Vec<Kid<Result<[u64; 3], String>>> =
        (0..4).map(|_| Kid::spawn(pass_until_stopped, (b.clone(), stop.clone(), passes.clone()))).collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) || (!resets && passes.get() == 0) {
        assert!(start.elapsed() < LONG, "no pass of the barrier");
        if resets {
            b.reset();
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    stop.set();
    // Waits begun before are broken, later ones fail at once: all end.
    b.abort();
    let mut by_index = [0; 3];
    for k in kids {
        let theirs = k.join().expect("no wait hangs");
        for (all, n) in by_index.iter_mut().zip(theirs) {
            *all += n;
        }
    }
    by_index
}

/// More processes than parties: a party can sleep through many later
/// rounds after its own passed; it still gets its index, so every pass
/// releases one party with each index (the last, index 2, sees the pass
/// complete).
#[test]
fn a_party_that_sleeps_through_later_rounds_still_passes() {
    let by_index = four_processes_pass_three_party_rounds(false);
    assert!(by_index[2] > 0, "no pass");
    assert_eq!(by_index, [by_index[2]; 3], "each pass released one party with each index");
}

/// Resets racing with the waits: a party whose round was reset never passes
/// (it may also get `Broken` after a pass it slept through, see `wait`),
/// and no wait hangs.
#[test]
fn resets_racing_with_waits_never_let_a_reset_party_pass() {
    let by_index = four_processes_pass_three_party_rounds(true);
    assert!(by_index[0] <= by_index[2] && by_index[1] <= by_index[2], "more parties passed than passes: {by_index:?}");
}

/// An action that shows (in `test`'s counter) that it runs, and the first
/// time lingers until the test kills its process.
fn linger_the_first_time(test: &str) {
    bump(test);
    let counter = SharedMemory::open(&counter_name(test)).expect("the test's counter segment");
    if count(&counter) == 1 {
        linger();
    }
}

/// The action of `a_completer_killed_in_its_action_breaks_the_barrier`.
fn action_lingers_the_first_time() {
    linger_the_first_time("killed");
}

/// The action of `abort_reaches_a_party_waiting_for_a_lingering_action_to_end`.
fn action_lingers_when_aborted() {
    linger_the_first_time("aborted");
}

/// The wall clock in ns (comparable between processes, unlike `Instant`).
fn now_ns() -> u64 {
    let since_epoch = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("a clock after 1970");
    u64::try_from(since_epoch.as_nanos()).expect("before 2554")
}

/// A party in an untimed `wait`; returns its outcome and when it got it.
fn untimed_party(b: Barrier) -> (Result<usize, BarrierError>, u64) {
    let r = b.wait();
    (r, now_ns())
}

/// A party in a timed wait (for far longer than the test); as `untimed_party`.
fn timed_party(b: Barrier) -> (Result<usize, BarrierError>, u64) {
    let r = b.wait_timeout(LONG);
    (r, now_ns())
}

/// The party completing a pass is killed in the barrier's action: the
/// others (waiting for that pass, untimed or timed, or arriving during it
/// for the next) learn within 2 s that the barrier is broken, and a reset
/// mends it. (Without the fix, the waits end only when the timed one times
/// out, after `LONG`.)
#[test]
fn a_completer_killed_in_its_action_breaks_the_barrier() {
    const NOTICED: Duration = Duration::from_secs(2);
    let counter = SharedMemory::create(&counter_name("killed"), 8).unwrap();
    let b = Barrier::with_action(3, action_lingers_the_first_time).unwrap();
    let waiters = [Kid::spawn(untimed_party, (b.clone(),)), Kid::spawn(timed_party, (b.clone(),))];
    wait_until("two parties to wait", || b.n_waiting() == 2);
    let completer = Kid::spawn(party, (b.clone(),));
    wait_until("the completer to run the action", || count(&counter) == 1);
    let late = Kid::spawn(untimed_party, (b.clone(),));
    wait_asleep(late.pid());
    completer.kill();
    let killed_at = now_ns();
    assert_eq!(completer.reap(), Some(-9));
    for (i, kid) in waiters.into_iter().chain([late]).enumerate() {
        let (r, at) = kid.join();
        assert_eq!(r, Err(BarrierError::Broken), "party {i}");
        let took = Duration::from_nanos(at.saturating_sub(killed_at));
        assert!(took < NOTICED, "party {i} learned of the death after {took:?}");
        eprintln!("party {i} learned of the death after {took:?}");
    }
    assert!(b.broken());
    b.reset();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.wait_timeout(LONG))
        })
        .collect();
    assert!(b.wait_timeout(LONG).is_ok(), "a reset barrier passes");
    for t in threads {
        assert!(t.join().unwrap().is_ok());
    }
    assert_eq!(count(&counter), 2, "the pass ran the action");
}

/// A round is reset while its completer's action still runs; a party that
/// would complete the next round waits for that action to end (actions
/// never overlap). An `abort` reaches it at once, as it reaches the others,
/// instead of when the action returns (here: never).
#[test]
fn abort_reaches_a_party_waiting_for_a_lingering_action_to_end() {
    const NOTICED: Duration = Duration::from_secs(2);
    let counter = SharedMemory::create(&counter_name("aborted"), 8).unwrap();
    let b = Barrier::with_action(2, action_lingers_when_aborted).unwrap();
    let first = Kid::spawn(timed_party, (b.clone(),));
    wait_until("a party to wait", || b.n_waiting() == 1);
    let completer = Kid::spawn(party, (b.clone(),));
    wait_until("the completer to run the action", || count(&counter) == 1);
    b.reset();
    assert_eq!(first.join().0, Err(BarrierError::Broken), "the reset round's party");
    let next = [Kid::spawn(untimed_party, (b.clone(),)), Kid::spawn(untimed_party, (b.clone(),))];
    for kid in &next {
        wait_asleep(kid.pid());
    }
    let aborted_at = now_ns();
    b.abort();
    for (i, kid) in next.into_iter().enumerate() {
        let (r, at) = kid.join();
        assert_eq!(r, Err(BarrierError::Broken), "party {i}");
        let took = Duration::from_nanos(at.saturating_sub(aborted_at));
        assert!(took < NOTICED, "party {i} learned of the abort after {took:?}");
    }
    completer.kill();
    assert_eq!(completer.reap(), Some(-9));
}
