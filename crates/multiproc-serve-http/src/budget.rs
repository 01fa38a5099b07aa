//! The byte budget of request bodies: how many bytes of request bodies the
//! server holds at once, whatever the number of requests. The queue of each
//! model bounds the requests waiting, and `--max-body-bytes` each body, but
//! their product (a queue of 1024 bodies of 64 MiB: 64 GiB) is no bound an
//! operator can give a machine; this is.
//!
//! A request takes a [`BodyLease`] before its body is read and holds it
//! as long as anything of its body is held: the lease is part of the
//! handler's future, so it is given back when the request fails, when the
//! client goes away (hyper drops the future), and when a handler panics
//! (the future is dropped while unwinding); the share of a queued request
//! (its inputs, which the core holds encoded) moves with the request into
//! the core ([`multiproc_serve::Request::hold`]) and is given back when the
//! core drops the request (answered, failed, dropped from its queue after
//! its client went away or its deadline passed, drained), not when the
//! handler gives up. What it counts: a body as it arrives (the buffer it
//! is gathered in; its `Content-Length` is only checked against what is
//! free, not reserved, so that a client announcing a body and sending none
//! holds nothing), a compressed body and the buffer it inflates into while
//! it inflates, the body and the inputs decoded from it while they are
//! decoded (each input's buffer reserved before it is allocated), then the
//! decoded inputs' bytes (inputs read from client shared memory included)
//! while the request waits and runs, and what the handler keeps of the
//! body until it answers (the request `id`, the outputs asked for).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use axum::http::StatusCode;

use crate::error::ApiError;

/// The bytes of request bodies held now and the most that may be.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    limit: usize,
    // ORDERING: `held` and `refused` are counts read on their own (by the
    // leases' checks and by /metrics); no other memory is published through
    // them, so every access is `Relaxed`. The check and the addition of a
    // lease are one atomic read-modify-write, so the limit holds exactly.
    held: AtomicUsize,
    refused: AtomicU64,
}

impl BodyBudget {
    /// A budget of `limit` bytes, none held.
    pub(crate) fn new(limit: usize) -> BodyBudget {
        BodyBudget { limit, held: AtomicUsize::new(0), refused: AtomicU64::new(0) }
    }

    /// The most bytes that may be held.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Relaxed)
    }

    /// How many requests were refused (503) because the budget was spent.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// A lease of no bytes yet, to grow as the body is read.
    pub(crate) fn lease(self: &Arc<Self>) -> BodyLease {
        BodyLease { budget: Arc::clone(self), bytes: 0 }
    }

    /// Checks that a body of `n` bytes could be held now, without holding
    /// anything: a body announced by its `Content-Length` is refused
    /// before any of it is read if it could not, and held as it arrives if
    /// it could.
    ///
    /// # Errors
    ///
    /// `n` is over what is free (counted as a refusal) or over the whole
    /// budget.
    pub(crate) fn check(&self, n: usize) -> Result<(), Refusal> {
        let held = self.held();
        let refusal = Refusal { needed: n, more: n, held, limit: self.limit };
        if n > self.limit {
            return Err(refusal);
        }
        if held.saturating_add(n) > self.limit {
            self.refused.fetch_add(1, Relaxed);
            return Err(refusal);
        }
        Ok(())
    }
}

/// The bytes one request holds of a [`BodyBudget`], given back when dropped
/// (it owns its hold on the budget, so it may outlive the handler: see
/// [`BodyLease::split_off`]).
#[derive(Debug)]
pub(crate) struct BodyLease {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyLease {
    /// The bytes it holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Moves `bytes` of this lease (at most all it holds) into a new one,
    /// which gives them back when it is dropped: for bytes held by someone
    /// else from now on (a queued request's, by the core).
    pub(crate) fn split_off(&mut self, bytes: usize) -> BodyLease {
        let moved = bytes.min(self.bytes);
        self.bytes -= moved;
        BodyLease { budget: Arc::clone(&self.budget), bytes: moved }
    }

    /// Grows the lease to `total` bytes (nothing if it holds that many
    /// already).
    ///
    /// # Errors
    ///
    /// The budget cannot cover them: the lease is left as it was.
    pub(crate) fn reserve_total(&mut self, total: usize) -> Result<(), Refusal> {
        let Some(more) = total.checked_sub(self.bytes).filter(|&more| more > 0) else { return Ok(()) };
        let budget = &*self.budget;
        if total > budget.limit {
            return Err(Refusal { needed: total, more, held: budget.held(), limit: budget.limit });
        }
        let grown =
            budget.held.fetch_update(Relaxed, Relaxed, |held| held.checked_add(more).filter(|&n| n <= budget.limit));
        match grown {
            Ok(_) => {
                self.bytes = total;
                Ok(())
            }
            Err(held) => {
                budget.refused.fetch_add(1, Relaxed);
                Err(Refusal { needed: total, more, held, limit: budget.limit })
            }
        }
    }

    /// Grows `buf` to hold at least `wanted` bytes, holding its new
    /// capacity in the lease first: the capacity doubles, is at least
    /// `floor`, then no more than `ceiling` nor than what the whole budget
    /// leaves beside `beside` (unless `wanted` is more: then the reservation
    /// is refused as such); the lease is grown to that capacity plus
    /// `beside` (bytes held alongside the buffer), and only then is the
    /// buffer grown to it.
    ///
    /// # Errors
    ///
    /// As [`BodyLease::reserve_total`]: the lease and `buf` are left as
    /// they were.
    pub(crate) fn grow(
        &mut self,
        buf: &mut Vec<u8>,
        wanted: usize,
        floor: usize,
        ceiling: usize,
        beside: usize,
    ) -> Result<(), Refusal> {
        debug_assert!(wanted >= buf.len(), "a buffer grows to hold at least what it holds");
        let most = ceiling.min(self.budget.limit.saturating_sub(beside));
        let capacity = buf.capacity().saturating_mul(2).max(floor).min(most).max(wanted);
        self.reserve_total(beside.saturating_add(capacity))?;
        buf.reserve_exact(capacity - buf.len());
        Ok(())
    }

    /// Shrinks the lease to `total` bytes (nothing if it holds no more).
    pub(crate) fn release_to(&mut self, total: usize) {
        if let Some(less) = self.bytes.checked_sub(total).filter(|&less| less > 0) {
            self.budget.held.fetch_sub(less, Relaxed);
            self.bytes = total;
        }
    }

    /// Sets the lease to `total` bytes, growing or shrinking it.
    ///
    /// # Errors
    ///
    /// As [`BodyLease::reserve_total`].
    pub(crate) fn resize(&mut self, total: usize) -> Result<(), Refusal> {
        self.release_to(total);
        self.reserve_total(total)
    }
}

impl Drop for BodyLease {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

/// Why a lease could not grow: a request body would take the server over
/// its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The bytes the request would hold in all.
    needed: usize,
    /// The bytes it asked for on top of those it held.
    more: usize,
    /// The bytes every request held then.
    held: usize,
    /// The budget.
    limit: usize,
}

impl Refusal {
    /// True if the request alone is over the whole budget: it can never be
    /// held, and waiting would not help.
    pub(crate) fn is_too_large(&self) -> bool {
        self.needed > self.limit
    }
}

/// How long a client refused for the budget is told to wait: about what a
/// request takes to be answered and give its bytes back.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let flag = "multiproc serve --body-budget-bytes";
        if r.is_too_large() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request needs {} bytes, more than the server's whole request body budget of {} bytes \
                     ({flag}): send a smaller request, or raise the budget",
                    r.needed, r.limit
                ),
            );
        }
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "body_budget",
            format!(
                "the server is overloaded: request bodies already hold {} bytes of its request body budget of {} \
                 bytes ({flag}), and this request needs {} more; retry later, or send smaller requests",
                r.held, r.limit, r.more
            ),
        );
        e.retry_after = Some(RETRY_AFTER);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_hold_at_most_the_budget_and_give_it_back_when_dropped() {
        let budget = Arc::new(BodyBudget::new(100));
        let mut a = budget.lease();
        a.reserve_total(60).unwrap();
        let mut b = budget.lease();
        let refused = b.reserve_total(50).unwrap_err();
        assert!(!refused.is_too_large());
        assert_eq!((refused.held, refused.more, budget.refused()), (60, 50, 1));
        b.reserve_total(40).unwrap();
        assert_eq!(budget.held(), 100);
        // Growing to what is held already takes nothing more.
        b.reserve_total(30).unwrap();
        assert_eq!(budget.held(), 100);
        a.resize(10).unwrap();
        assert_eq!(budget.held(), 50);
        let too_large = budget.lease().reserve_total(101).unwrap_err();
        assert!(too_large.is_too_large());
        assert_eq!(budget.refused(), 1, "a body over the whole budget is not an overload");
        drop(a);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_refusal_is_503_naming_the_budget_or_413_when_it_can_never_fit() {
        let budget = Arc::new(BodyBudget::new(1000));
        let _held = {
            let mut l = budget.lease();
            l.reserve_total(900).unwrap();
            l
        };
        let overload = ApiError::from(budget.lease().reserve_total(200).unwrap_err());
        assert_eq!(overload.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(overload.retry_after, Some(RETRY_AFTER));
        assert!(overload.message.contains("budget of 1000 bytes") && overload.message.contains("--body-budget-bytes"));
        let never = ApiError::from(budget.lease().reserve_total(1001).unwrap_err());
        assert_eq!(never.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(never.retry_after, None);
    }

    #[test]
    fn a_buffer_grows_by_doubling_within_its_ceiling_held_first_with_what_is_beside_it() {
        let budget = Arc::new(BodyBudget::new(1000));
        let mut lease = budget.lease();
        let mut buf = Vec::new();
        lease.grow(&mut buf, 10, 64, 500, 100).unwrap();
        assert_eq!((buf.capacity(), budget.held()), (64, 164), "the floor, and what is beside it");
        buf.resize(64, 0);
        lease.grow(&mut buf, 65, 64, 500, 100).unwrap();
        assert_eq!((buf.capacity(), budget.held()), (128, 228), "doubled");
        buf.resize(128, 0);
        lease.grow(&mut buf, 129, 0, 200, 100).unwrap();
        assert_eq!((buf.capacity(), budget.held()), (200, 300), "no more than the ceiling");
        buf.resize(200, 0);
        lease.grow(&mut buf, 250, 0, 200, 100).unwrap();
        assert_eq!((buf.capacity(), budget.held()), (250, 350), "but at least what is wanted");
        // Over what another lease leaves free: refused, the buffer and the
        // lease as they were.
        let mut other = budget.lease();
        other.reserve_total(600).unwrap();
        let refused = lease.grow(&mut buf, 251, 0, 2000, 100).unwrap_err();
        assert!(!refused.is_too_large());
        assert_eq!((buf.capacity(), lease.bytes(), budget.held()), (250, 350, 950));
        drop((lease, other));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_panic_while_a_lease_is_held_gives_it_back() {
        let budget = Arc::new(BodyBudget::new(100));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut lease = budget.lease();
            lease.reserve_total(70).unwrap();
            panic!("a handler panics");
        }));
        assert!(unwound.is_err());
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_size_is_checked_without_being_held_and_a_split_lease_gives_its_part_back_alone() {
        let budget = Arc::new(BodyBudget::new(100));
        budget.check(100).unwrap();
        assert_eq!(budget.held(), 0, "a check holds nothing");
        let mut a = budget.lease();
        a.reserve_total(70).unwrap();
        let refused = budget.check(31).unwrap_err();
        assert!(!refused.is_too_large());
        assert_eq!(budget.refused(), 1);
        assert!(budget.check(101).unwrap_err().is_too_large());
        assert_eq!(budget.refused(), 1, "a body over the whole budget is not an overload");
        let b = a.split_off(50);
        assert_eq!(budget.held(), 70);
        drop(a);
        assert_eq!(budget.held(), 50, "the part split off is held until it is dropped");
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}
