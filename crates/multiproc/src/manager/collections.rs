//! The manager's side of dicts, namespaces, lists and values: encoded bytes
//! behind a mutex, and `update` running a shipped function on them while
//! the mutex is held (so it is atomic with respect to every other call).

use std::collections::HashMap;
use std::sync::Mutex;

use super::code;
use super::protocol::{Bytes, CodeRef, Kind, Op, RemoteError, Reply, Response};
use super::server::Caller;

/// A dict's or a namespace's entries: encoded key → encoded value (large
/// values are kept shared, see [`Bytes::kept`], and read without a copy).
pub(crate) type Map = Mutex<HashMap<Vec<u8>, Bytes>>;
/// A list's items, encoded.
pub(crate) type List = Mutex<Vec<Bytes>>;
/// A value, encoded.
pub(crate) type Value = Mutex<Bytes>;

fn bytes(v: &[u8]) -> Bytes {
    Bytes::from(v.to_vec())
}

/// Runs a shipped update function on `slot`.
fn run_update(caller: &Caller<'_>, code: CodeRef, slot: &mut Option<Vec<u8>>, args: &[u8]) -> Response {
    caller.check_build()?;
    // SAFETY: the caller is the same build as this manager (checked above),
    // and `CodeRef`s in `Op::Update` are made by `code::update_ref`.
    let f = unsafe { code::resolve_update(code) };
    Ok(Reply::Bytes(Bytes::from(f(slot, args, code.type_hash)?)))
}

/// A dict or namespace operation.
pub(crate) fn map_call(map: &Map, kind: Kind, op: Op, caller: &Caller<'_>) -> Response {
    let mut m = caller.lock(map)?;
    Ok(match op {
        Op::Get(k) => Reply::MaybeBytes(m.get(k.as_slice()).cloned()),
        Op::Insert(k, v) => Reply::MaybeBytes(m.insert(k.into_vec(), v.kept())),
        Op::Assign(k, v) => {
            m.insert(k.into_vec(), v.kept());
            Reply::Unit
        }
        Op::Remove(k) => Reply::MaybeBytes(m.remove(k.as_slice())),
        Op::ContainsKey(k) => Reply::Bool(m.contains_key(k.as_slice())),
        Op::Len => Reply::Count(m.len() as u64),
        Op::Keys => Reply::Many(m.keys().map(|k| bytes(k)).collect()),
        Op::Values => Reply::Many(m.values().cloned().collect()),
        Op::Items => Reply::Pairs(m.iter().map(|(k, v)| (bytes(k), v.clone())).collect()),
        Op::Extend(pairs) => {
            m.extend(pairs.into_iter().map(|(k, v)| (k.into_vec(), v.kept())));
            Reply::Unit
        }
        Op::Clear => {
            m.clear();
            Reply::Unit
        }
        Op::Update { key: Some(k), index: None, code, args } => {
            let mut slot = m.get(k.as_slice()).map(|v| v.as_slice().to_vec());
            let reply = run_update(caller, code, &mut slot, &args)?;
            match slot {
                Some(v) => m.insert(k.into_vec(), Bytes::from(v).kept()),
                None => m.remove(k.as_slice()),
            };
            reply
        }
        other => return Err(wrong(&other, kind)),
    })
}

/// A list operation.
pub(crate) fn list_call(list: &List, op: Op, caller: &Caller<'_>) -> Response {
    let mut l = caller.lock(list)?;
    let len = l.len() as u64;
    let check = |i: u64, limit: u64| {
        if i < limit { Ok(i as usize) } else { Err(RemoteError::IndexOutOfRange { index: i, len }) }
    };
    Ok(match op {
        Op::Push(v) => {
            l.push(v.kept());
            Reply::Unit
        }
        Op::ExtendList(items) => {
            l.extend(items.into_iter().map(Bytes::kept));
            Reply::Unit
        }
        Op::GetIndex(i) => Reply::Bytes(l[check(i, len)?].clone()),
        Op::SetIndex(i, v) => {
            let i = check(i, len)?;
            l[i] = v.kept();
            Reply::Unit
        }
        Op::InsertAt(i, v) => {
            l.insert(check(i, len + 1)?, v.kept());
            Reply::Unit
        }
        Op::RemoveAt(i) => Reply::Bytes(l.remove(check(i, len)?)),
        Op::Pop => Reply::MaybeBytes(l.pop()),
        Op::Len => Reply::Count(len),
        Op::ToVec => Reply::Many(l.to_vec()),
        Op::Clear => {
            l.clear();
            Reply::Unit
        }
        Op::Update { key: None, index: Some(i), code, args } => {
            let i = check(i, len)?;
            let mut slot = Some(std::mem::take(&mut l[i]).into_vec());
            let result = run_update(caller, code, &mut slot, &args);
            // The trampoline leaves the slot as it was on failure, a panic
            // included (of the function or of the type's `Serialize` or
            // `Deserialize`: see `code::update_trampoline`); a function that
            // emptied the slot of a list item is refused by the proxy's
            // types (it only sees `&mut T`).
            l[i] = Bytes::from(slot.unwrap_or_default()).kept();
            result?
        }
        other => return Err(wrong(&other, Kind::List)),
    })
}

/// A value operation.
pub(crate) fn value_call(value: &Value, op: Op, caller: &Caller<'_>) -> Response {
    let mut v = caller.lock(value)?;
    Ok(match op {
        Op::Load => Reply::Bytes(v.clone()),
        Op::Store(new) => {
            *v = new.kept();
            Reply::Unit
        }
        Op::Update { key: None, index: None, code, args } => {
            let mut slot = Some(std::mem::take(&mut *v).into_vec());
            let result = run_update(caller, code, &mut slot, &args);
            *v = Bytes::from(slot.unwrap_or_default()).kept();
            result?
        }
        other => return Err(wrong(&other, Kind::Value)),
    })
}

/// The error for an operation that does not apply to `kind`, naming the
/// operation by its variant (the start of its `Debug` form; the formatting
/// stops there, as an operation may carry megabytes of items).
pub(crate) fn wrong(op: &Op, kind: Kind) -> RemoteError {
    let mut name = VariantName(String::new());
    let _ = std::fmt::Write::write_fmt(&mut name, format_args!("{op:?}"));
    RemoteError::WrongOperation { op: name.0, kind }
}

/// Keeps what is written up to the first `(`, ` ` or `{`, then refuses the
/// rest (which ends the formatting).
struct VariantName(String);

impl std::fmt::Write for VariantName {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        match s.find(['(', ' ', '{']) {
            Some(end) => {
                self.0.push_str(&s[..end]);
                Err(std::fmt::Error)
            }
            None => {
                self.0.push_str(s);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_operation_is_named_by_its_variant_alone() {
        let named = |op| match wrong(&op, Kind::Dict) {
            RemoteError::WrongOperation { op, kind: Kind::Dict } => op,
            other => panic!("{other:?}"),
        };
        let items = vec![Bytes::from(vec![7; 1 << 20]); 64];
        assert_eq!(named(Op::PutMany { items, timeout: None }), "PutMany");
        assert_eq!(named(Op::Pop), "Pop");
        assert_eq!(named(Op::Push(Bytes::from(vec![1]))), "Push");
    }
}
