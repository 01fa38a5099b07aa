//! Progress bars: map and imap drive an indicatif bar (count, rate, ETA).

mod pool_support;

use multiproc::Pool;
use multiproc::pool::ProgressBar;
use pool_support::square;

#[test]
fn map_and_imap_advance_the_bar_to_the_item_count() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let bar = ProgressBar::hidden();
    let out = pool.with_progress_bar(bar.clone()).chunksize(7).map(square, 0..500u64).unwrap();
    assert_eq!(out.len(), 500);
    assert_eq!(bar.position(), 500);
    assert_eq!(bar.length(), Some(500));
    assert!(bar.is_finished());
    let bar = ProgressBar::hidden();
    let mut seen = 0;
    for r in pool.with_progress_bar(bar.clone()).imap(square, 0..300u64) {
        r.unwrap();
        seen += 1;
        assert_eq!(bar.position(), seen);
    }
    assert_eq!(bar.length(), Some(300));
    assert!(bar.per_sec() > 0.0);
    // The default bar (stderr; hidden when stderr is not a terminal) works too.
    assert_eq!(pool.with_progress().map(square, 0..10u64).unwrap().len(), 10);
}

#[test]
fn an_empty_map_finishes_its_bar_at_zero_as_imap_does() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(1).unwrap();
    let bar = ProgressBar::hidden();
    assert!(pool.with_progress_bar(bar.clone()).imap(square, Vec::<u64>::new()).next().is_none());
    assert_eq!((bar.length(), bar.position(), bar.is_finished()), (Some(0), 0, true), "imap");
    let bar = ProgressBar::hidden();
    assert!(pool.with_progress_bar(bar.clone()).map(square, Vec::<u64>::new()).unwrap().is_empty());
    assert_eq!((bar.length(), bar.position(), bar.is_finished()), (Some(0), 0, true), "map");
}

fn fail_first(x: u64) -> u64 {
    assert!(x != 0, "item 0 fails");
    std::thread::sleep(std::time::Duration::from_millis(30));
    x
}

#[test]
fn a_failed_map_leaves_its_bar_finished_where_the_call_ended() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let bar = ProgressBar::hidden();
    assert!(pool.with_progress_bar(bar.clone()).chunksize(1).map(fail_first, 0..20u64).is_err());
    assert!(bar.is_finished(), "the bar of a failed map is left running");
    let at = bar.position();
    assert!(at < 20, "{at}");
    // The tasks still running finish, and do not move the bar.
    pool.close();
    pool.join_timeout(pool_support::WAIT).unwrap();
    assert_eq!(bar.position(), at);
}

#[test]
fn an_imap_dropped_early_leaves_its_bar_finished() {
    let _watchdog = pool_support::watchdog();
    let pool = Pool::new(2).unwrap();
    let bar = ProgressBar::hidden();
    let mut results = pool.with_progress_bar(bar.clone()).imap(square, 0..100u64);
    assert_eq!(results.next().unwrap().unwrap(), 0);
    drop(results);
    assert!(bar.is_finished(), "the bar of an imap dropped early is left running");
    assert_eq!(bar.position(), 1);
}
