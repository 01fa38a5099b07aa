//! [`Dict`] and [`Namespace`] proxies.

use std::borrow::Borrow;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ManagerError;
use super::code::{self, Tagged};
use super::protocol::{Kind, Op};
use super::proxy::{ObjectRef, encode, proxy};

/// A dict in a manager (Python's `manager.dict()`): keys `K`, values `V`,
/// any serde types.
///
/// Keys are compared by their encoded bytes, so keys that are equal must
/// encode equally (true of numbers, strings, tuples and derived structs; not
/// of floats' NaN or of hash sets). A value read through the proxy is a
/// **copy**: changing it changes nothing in the manager until it is stored
/// back; use [`Dict::update`] to change an entry in place, atomically. A
/// proxy stored as a value (a `List` inside a `Dict`) still refers to the
/// same object: nested proxies share.
///
/// # Examples
///
/// ```
/// use multiproc::manager::{Dict, Manager};
/// use multiproc::Process;
///
/// fn count(d: Dict<String, u64>) {
///     for _ in 0..100 {
///         d.update("hits", |n: &mut Option<u64>| *n.get_or_insert(0) += 1).unwrap();
///     }
/// }
///
/// let manager = Manager::start().unwrap();
/// let d = manager.dict::<String, u64>().unwrap();
/// let children: Vec<_> = (0..3).map(|_| Process::spawn(count, (d.clone(),)).unwrap()).collect();
/// for mut c in children {
///     c.join().unwrap();
/// }
/// assert_eq!(d.get("hits").unwrap(), Some(300));
/// ```
pub struct Dict<K, V> {
    object: ObjectRef,
    _type: PhantomData<fn(K) -> V>,
}

proxy!(Dict<K, V>, Kind::Dict);

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The value of `key`, if there is one (a copy).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the stored bytes are not a `V`.
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: Borrow<Q>,
    {
        self.object.maybe(Op::Get(encode(key)?))
    }

    /// Sets `key` to `value`; returns the value it replaces.
    ///
    /// # Errors
    ///
    /// As [`Dict::get`], or the key or value cannot be encoded.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, ManagerError> {
        self.object.maybe(Op::Insert(encode(&key)?, encode(&value)?))
    }

    /// Sets `key` to `value` without sending the value it replaces back
    /// (Python's `d[key] = value`), and without taking them: where
    /// [`insert`](Dict::insert) replaces a large value, half the bytes (a
    /// 1 MiB value replaced and read back: 0.59 ms with `set`, 0.99 ms with
    /// `insert`).
    ///
    /// # Errors
    ///
    /// As [`Dict::insert`].
    pub fn set<Q, W>(&self, key: &Q, value: &W) -> Result<(), ManagerError>
    where
        Q: Serialize + ?Sized,
        W: Serialize + ?Sized,
        K: Borrow<Q>,
        V: Borrow<W>,
    {
        self.object.unit(Op::Assign(encode(key)?, encode(value)?))
    }

    /// Removes `key`; returns its value.
    ///
    /// # Errors
    ///
    /// As [`Dict::get`].
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: Borrow<Q>,
    {
        self.object.maybe(Op::Remove(encode(key)?))
    }

    /// True if `key` has a value.
    ///
    /// # Errors
    ///
    /// As [`Dict::get`].
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool, ManagerError>
    where
        K: Borrow<Q>,
    {
        self.object.bool(Op::ContainsKey(encode(key)?))
    }

    /// The number of entries.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn len(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::Len)? as usize)
    }

    /// True when there are no entries.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// The keys, in no particular order.
    ///
    /// # Errors
    ///
    /// As [`Dict::get`], or the copy is larger than a client reads in one
    /// answer (256 MiB:
    /// [`RemoteError::AnswerTooLarge`](super::RemoteError::AnswerTooLarge);
    /// read it by key instead).
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        self.object.many(Op::Keys)
    }

    /// The values, in no particular order.
    ///
    /// # Errors
    ///
    /// As [`Dict::get`], or the copy is larger than a client reads in one
    /// answer (256 MiB:
    /// [`RemoteError::AnswerTooLarge`](super::RemoteError::AnswerTooLarge);
    /// read it by key instead).
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        self.object.many(Op::Values)
    }

    /// The entries, in no particular order (a copy, taken atomically).
    ///
    /// # Errors
    ///
    /// As [`Dict::get`], or the copy is larger than a client reads in one
    /// answer (256 MiB:
    /// [`RemoteError::AnswerTooLarge`](super::RemoteError::AnswerTooLarge);
    /// read it by key instead).
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        self.object.pairs(Op::Items)
    }

    /// Inserts every entry of `entries`, in one call (Python's `dict.update`).
    ///
    /// # Errors
    ///
    /// As [`Dict::insert`]; nothing is inserted when one entry cannot be encoded.
    pub fn extend(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<(), ManagerError> {
        let pairs =
            entries.into_iter().map(|(k, v)| Ok((encode(&k)?, encode(&v)?))).collect::<Result<_, ManagerError>>()?;
        self.object.unit(Op::Extend(pairs))
    }

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Clear)
    }

    /// Runs `f` on the entry of `key` **inside the manager**, atomically (no
    /// other call on this dict runs meanwhile), and returns its result. `f`
    /// gets `None` when there is no entry; leaving `None` removes it. `f` is
    /// a plain `fn` or a closure that captures nothing (see
    /// [`Dict::update_with`] to pass it an argument).
    ///
    /// Python's `d[k] += 1` through a proxy is a get and a set: two calls
    /// that lose updates when processes race. This is one call.
    ///
    /// `f` runs in the manager while it holds this dict: for a local client,
    /// on the thread that serves every local client's quick calls, so keep
    /// it short (a slow `f` holds those calls back while it runs).
    ///
    /// # Examples
    ///
    /// ```
    /// let manager = multiproc::manager::Manager::start().unwrap();
    /// let d = manager.dict::<String, Vec<u32>>().unwrap();
    /// let len = d.update("xs", |v: &mut Option<Vec<u32>>| {
    ///     let v = v.get_or_insert_with(Vec::new);
    ///     v.push(7);
    ///     v.len()
    /// }).unwrap();
    /// assert_eq!(len, 1);
    /// assert_eq!(d.get("xs").unwrap(), Some(vec![7]));
    /// ```
    ///
    /// # Errors
    ///
    /// [`RemoteError::Panicked`](super::RemoteError::Panicked) when `f`
    /// panics (the entry is unchanged); [`RemoteError::BuildMismatch`](super::RemoteError::BuildMismatch)
    /// when the manager is another build of the program; as [`Dict::get`].
    pub fn update<Q, F, R>(&self, key: &Q, f: F) -> Result<R, ManagerError>
    where
        Q: Serialize + ?Sized,
        K: Borrow<Q>,
        V: 'static,
        F: Fn(&mut Option<V>) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.update_with(key, (), code::without_arg::<F, V, R>)
    }

    /// As [`Dict::update`], passing `arg` to `f` as its second argument.
    ///
    /// # Examples
    ///
    /// ```
    /// let manager = multiproc::manager::Manager::start().unwrap();
    /// let d = manager.dict::<u8, i64>().unwrap();
    /// let add = |v: &mut Option<i64>, n: i64| *v.get_or_insert(0) += n;
    /// d.update_with(&1, 5, add).unwrap();
    /// d.update_with(&1, -2, add).unwrap();
    /// assert_eq!(d.get(&1).unwrap(), Some(3));
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Dict::update`].
    pub fn update_with<Q, A, F, R>(&self, key: &Q, arg: A, f: F) -> Result<R, ManagerError>
    where
        Q: Serialize + ?Sized,
        K: Borrow<Q>,
        A: Serialize + DeserializeOwned,
        F: Fn(&mut Option<V>, A) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned,
    {
        self.object.update(Some(encode(key)?), None, &arg, f)
    }
}

/// Named fields of any serde type in a manager (Python's
/// `manager.Namespace()`). Each field has its own type, given at each call;
/// reading a field as another type than it was written is a decode error.
/// Values read are copies (see [`Dict`]).
///
/// # Examples
///
/// ```
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let ns = manager.namespace().unwrap();
/// ns.set("name", "model-a").unwrap();
/// ns.set("version", &3u32).unwrap();
/// assert_eq!(ns.get::<String>("name").unwrap().as_deref(), Some("model-a"));
/// assert_eq!(ns.update("version", |v: &mut Option<u32>| { *v.as_mut().unwrap() += 1; *v }).unwrap(), Some(4));
/// let mut names = ns.names().unwrap();
/// names.sort();
/// assert_eq!(names, ["name", "version"]);
/// ```
pub struct Namespace {
    object: ObjectRef,
    _type: PhantomData<()>,
}

proxy!(Namespace, Kind::Namespace);

impl Namespace {
    /// The field `name` as a `T`, if it is set.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the field is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ManagerError> {
        self.object.maybe::<Tagged>(Op::Get(encode(name)?))?.map(|t| t.open(name)).transpose()
    }

    /// Sets the field `name`.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the value cannot be encoded.
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), ManagerError> {
        self.object.unit(Op::Assign(encode(name)?, encode(&Tagged::new(value)?)?))
    }

    /// Removes the field `name`; true if it was set.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn remove(&self, name: &str) -> Result<bool, ManagerError> {
        Ok(self.object.maybe::<Tagged>(Op::Remove(encode(name)?))?.is_some())
    }

    /// True if the field `name` is set.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn contains(&self, name: &str) -> Result<bool, ManagerError> {
        self.object.bool(Op::ContainsKey(encode(name)?))
    }

    /// The names of the fields that are set, in no particular order.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn names(&self) -> Result<Vec<String>, ManagerError> {
        self.object.many(Op::Keys)
    }

    /// Runs `f` on the field `name` inside the manager, atomically (see
    /// [`Dict::update`]).
    ///
    /// # Errors
    ///
    /// [`ManagerError::FieldType`] when the field holds another type than
    /// `V` (it is left alone, and `f` does not run); as [`Dict::update`].
    pub fn update<V, F, R>(&self, name: &str, f: F) -> Result<R, ManagerError>
    where
        V: Serialize + DeserializeOwned + 'static,
        F: Fn(&mut Option<V>) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.update_with(name, (), code::without_arg::<F, V, R>)
    }

    /// As [`Namespace::update`], passing `arg` to `f`.
    ///
    /// # Errors
    ///
    /// As [`Dict::update`].
    pub fn update_with<V, A, F, R>(&self, name: &str, arg: A, f: F) -> Result<R, ManagerError>
    where
        V: Serialize + DeserializeOwned + 'static,
        A: Serialize + DeserializeOwned + 'static,
        F: Fn(&mut Option<V>, A) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        match self.object.update(Some(encode(name)?), None, &arg, code::tagged::<F, V, A, R>)? {
            Ok(result) => Ok(result),
            Err((stored, asked)) => Err(ManagerError::FieldType { field: name.to_string(), stored, asked }),
        }
    }
}
