//! An `update` whose value's `Serialize` or argument's `Deserialize` panics
//! in the manager fails with [`RemoteError::Panicked`] and leaves its list
//! item or value as it was (before, the stored bytes were left empty, and
//! the next read failed to decode); the manager goes on serving. The
//! manager is a process of its own; every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use multiproc::manager::{List, Manager, ManagerError, RemoteError, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sync_support::Kid;

/// The value whose encoding panics.
const CURSED: u32 = 13;

/// A number that cannot be encoded when it is [`CURSED`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
struct Touchy(u32);

impl Serialize for Touchy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        assert!(self.0 != CURSED, "encoding a cursed Touchy");
        s.serialize_u32(self.0)
    }
}

/// An argument that encodes, but whose decoding panics.
#[derive(Debug, Clone, Copy, Serialize)]
struct Bomb;

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bomb, D::Error> {
        <()>::deserialize(d)?;
        panic!("decoding a Bomb")
    }
}

/// True when `result` is the manager's report of a panic saying `what`.
fn panicked_with<T: std::fmt::Debug>(result: Result<T, ManagerError>, what: &str) -> bool {
    match result {
        Err(ManagerError::Remote(RemoteError::Panicked(m))) => m.contains(what),
        other => {
            eprintln!("expected a panic saying {what:?}, got {other:?}");
            false
        }
    }
}

/// In a client process: both failing updates on item 1 of `l` and on `v`;
/// true if each failed with its panic and left its object as it was.
fn fail_updates(l: List<Touchy>, v: Value<Touchy>) -> bool {
    let item_failed = panicked_with(l.update(1, |t: &mut Touchy| t.0 = CURSED), "encoding a cursed Touchy")
        && panicked_with(l.update_with(1, Bomb, |t: &mut Touchy, _: Bomb| t.0 += 1), "decoding a Bomb");
    let value_failed = panicked_with(v.update(|t: &mut Touchy| t.0 = CURSED), "encoding a cursed Touchy")
        && panicked_with(v.update_with(Bomb, |t: &mut Touchy, _: Bomb| t.0 += 1), "decoding a Bomb");
    item_failed && value_failed && l.get(1).unwrap() == Touchy(2) && v.get().unwrap() == Touchy(7)
}

#[test]
fn an_update_whose_encoding_panics_leaves_its_item_and_value_as_they_were() {
    let m = Manager::start().unwrap();
    let l = m.list_from([Touchy(1), Touchy(2), Touchy(3)]).unwrap();
    let v = m.value(Touchy(7)).unwrap();
    // From this process (which has a lane), then from a child.
    assert!(fail_updates(l.clone(), v.clone()), "an update failed otherwise than with its panic");
    assert!(Kid::spawn(fail_updates, (l.clone(), v.clone())).join(), "the child saw otherwise");
    assert_eq!(l.to_vec().unwrap(), [Touchy(1), Touchy(2), Touchy(3)]);
    assert_eq!(v.get().unwrap(), Touchy(7));
    // The objects and the manager go on.
    assert_eq!(l.update(1, |t: &mut Touchy| std::mem::replace(t, Touchy(20))).unwrap(), Touchy(2));
    v.update(|t: &mut Touchy| t.0 += 1).unwrap();
    assert_eq!((l.get(1).unwrap(), v.get().unwrap()), (Touchy(20), Touchy(8)));
    let d = m.dict::<u8, u8>().unwrap();
    assert_eq!(d.insert(1, 1).unwrap(), None);
    m.shutdown().unwrap();
}
