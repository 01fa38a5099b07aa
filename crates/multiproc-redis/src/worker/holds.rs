//! The entries a worker host holds: taken (to run, dispose of or reclaim)
//! and not yet written back. Each part of the host takes an entry only if
//! no other part holds it, so no entry runs twice on one host; any other
//! entry pending to the host was delivered without its knowing (the reply
//! of its read was lost).

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Mutex};

/// The held entries, each with whether it is confirmed as the host's own:
/// an entry a recovery holds while it asks Redis whether it is still the
/// host's is not, and the heartbeats leave it out (see [`Holds::ids`]).
#[derive(Debug, Default)]
pub(crate) struct Holds(Mutex<HashMap<Arc<str>, bool>>);

impl Holds {
    /// Holds entry `id` as the host's own, unless it is held already;
    /// whether it was not (the caller now holds it).
    pub fn try_hold(&self, id: &Arc<str>) -> bool {
        self.hold_as(id, true)
    }

    /// As [`Holds::try_hold`], for an entry that may not be the host's any
    /// more (a recovery asks Redis, then confirms or releases it): held, so
    /// that no other part of the host takes it, but left out of the
    /// heartbeats, which would take it back from a host that reclaimed it
    /// meanwhile.
    pub fn try_hold_unconfirmed(&self, id: &Arc<str>) -> bool {
        self.hold_as(id, false)
    }

    fn hold_as(&self, id: &Arc<str>, confirmed: bool) -> bool {
        match self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(id.clone()) {
            Entry::Vacant(v) => {
                v.insert(confirmed);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// Confirms held entries as the host's own (see
    /// [`Holds::try_hold_unconfirmed`]); ids not held are ignored.
    pub fn confirm<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if let Some(confirmed) = held.get_mut(id) {
                *confirmed = true;
            }
        }
    }

    /// The entries held as the host's own now (running, waiting to start,
    /// or to have their results written), for the heartbeats.
    pub fn ids(&self) -> Vec<Arc<str>> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.iter().filter(|&(_, &confirmed)| confirmed).map(|(id, _)| id.clone()).collect()
    }

    /// Lets go of the entries `ids` (written, or given up on).
    pub fn release(&self, ids: &[String]) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            held.remove(id.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn an_entry_is_taken_by_one_part_of_the_host_until_it_is_released() {
        let holds = Holds::default();
        assert!(holds.try_hold(&id("1-0")));
        assert!(!holds.try_hold(&id("1-0")), "held twice");
        assert!(!holds.try_hold_unconfirmed(&id("1-0")), "held twice");
        holds.release(&["1-0".to_string()]);
        assert!(holds.try_hold_unconfirmed(&id("1-0")), "not let go");
        assert!(!holds.try_hold(&id("1-0")), "an unconfirmed hold is a hold");
    }

    #[test]
    fn heartbeats_cover_only_entries_confirmed_as_the_hosts_own() {
        let holds = Holds::default();
        holds.try_hold(&id("1-0"));
        holds.try_hold_unconfirmed(&id("2-0"));
        holds.try_hold_unconfirmed(&id("3-0"));
        assert_eq!(holds.ids(), [id("1-0")]);
        holds.confirm(["2-0", "9-0"]);
        let mut ids = holds.ids();
        ids.sort();
        assert_eq!(ids, [id("1-0"), id("2-0")]);
        holds.release(&["1-0".to_string(), "2-0".to_string(), "3-0".to_string()]);
        assert!(holds.ids().is_empty());
        holds.confirm(["3-0"]);
        assert!(holds.try_hold(&id("3-0")), "confirming an entry not held holds it");
    }
}
