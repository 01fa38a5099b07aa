//! The entries a worker host holds: taken (to run, dispose of or reclaim)
//! and not yet written back. Each part of the host takes an entry only if
//! no other part holds it, so no entry runs twice on one host; any other
//! entry pending to the host was delivered without its knowing (the reply
//! of its read was lost).

use std::collections::hash_map::{Entry, HashMap};
use std::sync::{Arc, Mutex};

use crate::schema::StreamEntry;

/// The held entries, each with whether it is confirmed as the host's own:
/// an entry a recovery holds while it asks Redis whether it is still the
/// host's is not, and the heartbeats leave it out (see [`Holds::ids`]).
#[derive(Debug, Default)]
pub(crate) struct Holds(Mutex<HashMap<Arc<str>, bool>>);

impl Holds {
    /// Those of `entries` that nobody holds, now held; the others are left
    /// out. Held as the host's own if `confirmed`; if not (an entry that
    /// may not be the host's any more: a recovery asks Redis, then
    /// confirms or releases it), held so that no other part of the host
    /// takes it, but left out of the heartbeats, which would take it back
    /// from a host that reclaimed it meanwhile. One lock for all of them.
    pub fn take_unheld(&self, entries: Vec<StreamEntry>, confirmed: bool) -> Vec<StreamEntry> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .into_iter()
            .filter(|e| match held.entry(Arc::from(e.id.as_str())) {
                Entry::Vacant(v) => {
                    v.insert(confirmed);
                    true
                }
                Entry::Occupied(_) => false,
            })
            .collect()
    }

    /// Confirms held entries as the host's own (see
    /// [`Holds::take_unheld`]); ids not held are ignored.
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
    pub fn release(&self, ids: impl IntoIterator<Item = impl AsRef<str>>) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            held.remove(id.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(ids: &[&str]) -> Vec<StreamEntry> {
        ids.iter().map(|id| StreamEntry { id: id.to_string(), fields: Vec::new() }).collect()
    }

    fn taken(holds: &Holds, ids: &[&str], confirmed: bool) -> Vec<String> {
        holds.take_unheld(entries(ids), confirmed).into_iter().map(|e| e.id).collect()
    }

    #[test]
    fn an_entry_is_taken_by_one_part_of_the_host_until_it_is_released() {
        let holds = Holds::default();
        assert_eq!(taken(&holds, &["1-0", "2-0"], true), ["1-0", "2-0"]);
        assert_eq!(taken(&holds, &["1-0", "3-0"], true), ["3-0"], "held twice");
        assert!(taken(&holds, &["1-0"], false).is_empty(), "held twice");
        holds.release(["1-0"]);
        assert_eq!(taken(&holds, &["1-0", "2-0"], false), ["1-0"], "not let go");
        assert!(taken(&holds, &["1-0"], true).is_empty(), "an unconfirmed hold is a hold");
    }

    #[test]
    fn heartbeats_cover_only_entries_confirmed_as_the_hosts_own() {
        let holds = Holds::default();
        taken(&holds, &["1-0"], true);
        taken(&holds, &["2-0", "3-0"], false);
        assert_eq!(holds.ids(), [Arc::<str>::from("1-0")]);
        holds.confirm(["2-0", "9-0"]);
        let mut ids = holds.ids();
        ids.sort();
        assert_eq!(ids, [Arc::<str>::from("1-0"), Arc::from("2-0")]);
        holds.release(["1-0", "2-0", "3-0"]);
        assert!(holds.ids().is_empty());
        holds.confirm(["3-0"]);
        assert_eq!(taken(&holds, &["3-0"], true), ["3-0"], "confirming an entry not held holds it");
    }
}
