//! The queue's visibility timeout: hosts of one queue may be configured with
//! different timeouts, and a host that reclaimed entries after its own
//! short timeout would take live long tasks from a host that heartbeats
//! them every quarter of its longer one. So each host declares its timeout
//! in `P:Q:visibility`, which holds the largest timeout a live host
//! declared, and reclaims only entries idle longer than that value (or its
//! own timeout, if that is longer).

use std::time::{Duration, Instant};

use redis::RedisResult;

use super::MAX_VISIBILITY;
use crate::conn::Conn;

/// Declares a host's timeout and returns the largest one declared.
/// `KEYS[1]`: the key; `ARGV[1]`: the host's timeout (ms); `ARGV[2]`: how
/// long the key lives (ms); `ARGV[3]`: the largest valid timeout (ms).
///
/// The key is set (and its expiry renewed) only by a host whose timeout is
/// at least the value held: once the host with the largest timeout stops
/// renewing it, the key expires and the others declare theirs again. A
/// value that is not a valid timeout (another client wrote the key) is
/// replaced.
const DECLARE_SCRIPT: &str = r"
local mine = tonumber(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[1]) or '')
if held == nil or held ~= math.floor(held) or held < 0 or held > tonumber(ARGV[3]) then held = 0 end
if mine >= held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return mine
end
return held
";

/// Milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long a declaration lives unless renewed: twice the declaring host's
/// timeout. The host renews it every quarter of its timeout (while its
/// outlet runs: also while it drains its last tasks), so it lapses only
/// when the host is gone or cut off from Redis — and then the host's
/// entries have gone without heartbeats for longer than its own timeout.
fn lifetime(own: Duration) -> Duration {
    own.saturating_mul(2)
}

/// Declares `own` (this host's timeout) in `key`, and returns the queue's
/// visibility timeout: the largest of `own` and the timeouts other live
/// hosts declared. Waits for Redis no later than `deadline`.
///
/// # Errors
///
/// A Redis error (no answer, the key holds another type, `EVAL` refused).
pub(crate) fn declare(conn: &mut Conn, key: &str, own: Duration, deadline: Option<Instant>) -> RedisResult<Duration> {
    let held: i64 = conn.run_until(deadline, |c| {
        redis::cmd("EVAL")
            .arg(DECLARE_SCRIPT)
            .arg(1)
            .arg(key)
            .arg(millis(own))
            .arg(millis(lifetime(own)))
            .arg(millis(MAX_VISIBILITY))
            .query(c)
    })?;
    let held = Duration::from_millis(u64::try_from(held).unwrap_or(0)).min(MAX_VISIBILITY);
    Ok(own.max(held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::RedisServer;

    #[test]
    fn the_largest_live_declaration_wins_and_lapses_with_its_host() {
        let server = RedisServer::start_in_memory().unwrap_or_else(|e| panic!("this test needs redis-server: {e}"));
        let mut conn = Conn::open(&server.url()).unwrap();
        let deadline = || Some(Instant::now() + Duration::from_secs(10));
        let key = "v:q:visibility";
        let (short, long) = (Duration::from_millis(100), Duration::from_millis(400));
        assert_eq!(declare(&mut conn, key, short, deadline()).unwrap(), short);
        assert_eq!(declare(&mut conn, key, long, deadline()).unwrap(), long);
        // The short host's declaration neither lowers the value nor renews it.
        assert_eq!(declare(&mut conn, key, short, deadline()).unwrap(), long);
        let pttl: i64 = conn.run(|c| redis::cmd("PTTL").arg(key).query(c)).unwrap();
        assert!(pttl > 0 && pttl <= 800, "PTTL {pttl}");
        // The long host stops renewing: its declaration lapses.
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(declare(&mut conn, key, short, deadline()).unwrap(), short);
        // Garbage in the key is replaced, not believed.
        for garbage in ["1e300", "-5", "abc", "1.5"] {
            conn.run(|c| redis::cmd("SET").arg(key).arg(garbage).exec(c)).unwrap();
            assert_eq!(declare(&mut conn, key, short, deadline()).unwrap(), short, "{garbage}");
            let held: String = conn.run(|c| redis::cmd("GET").arg(key).query(c)).unwrap();
            assert_eq!(held, "100");
        }
    }
}
