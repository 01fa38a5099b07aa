//! [`List`] and [`Value`] proxies.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ManagerError;
use super::code;
use super::protocol::{Kind, Op};
use super::proxy::{ObjectRef, encode, proxy};

/// A list in a manager (Python's `manager.list()`), of any serde type `T`.
/// Items read are copies (see [`Dict`](super::Dict)); [`List::update`]
/// changes one in place, atomically.
///
/// # Examples
///
/// ```
/// use multiproc::manager::{List, Manager};
/// use multiproc::Process;
///
/// fn append(l: List<u32>, x: u32) {
///     l.push(x).unwrap();
/// }
///
/// let manager = Manager::start().unwrap();
/// let l = manager.list_from([0u32, 1, 2]).unwrap();
/// Process::spawn(append, (l.clone(), 7)).unwrap().join().unwrap();
/// assert_eq!(l.to_vec().unwrap(), [0, 1, 2, 7]);
/// assert_eq!(l.update(1, |x: &mut u32| { *x += 10; *x }).unwrap(), 11);
/// assert_eq!(l.pop().unwrap(), Some(7));
/// assert!(l.get(9).unwrap_err().to_string().contains("out of range"));
/// ```
pub struct List<T> {
    object: ObjectRef,
    _type: PhantomData<fn(T) -> T>,
}

proxy!(List<T>, Kind::List);

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Appends `value`.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the value cannot be encoded.
    pub fn push(&self, value: T) -> Result<(), ManagerError> {
        self.object.unit(Op::Push(encode(&value)?))
    }

    /// Appends every item of `values`, in one call.
    ///
    /// # Errors
    ///
    /// As [`List::push`]; nothing is appended when one item cannot be encoded.
    pub fn extend(&self, values: impl IntoIterator<Item = T>) -> Result<(), ManagerError> {
        let items = values.into_iter().map(|v| encode(&v)).collect::<Result<_, _>>()?;
        self.object.unit(Op::ExtendList(items))
    }

    /// The item at `index` (a copy).
    ///
    /// # Errors
    ///
    /// [`RemoteError::IndexOutOfRange`](super::RemoteError::IndexOutOfRange),
    /// or the manager cannot be reached.
    pub fn get(&self, index: usize) -> Result<T, ManagerError> {
        self.object.value(Op::GetIndex(index as u64))
    }

    /// Replaces the item at `index`.
    ///
    /// # Errors
    ///
    /// As [`List::get`].
    pub fn set(&self, index: usize, value: T) -> Result<(), ManagerError> {
        self.object.unit(Op::SetIndex(index as u64, encode(&value)?))
    }

    /// Inserts `value` before `index` (`index == len` appends).
    ///
    /// # Errors
    ///
    /// As [`List::get`].
    pub fn insert(&self, index: usize, value: T) -> Result<(), ManagerError> {
        self.object.unit(Op::InsertAt(index as u64, encode(&value)?))
    }

    /// Removes and returns the item at `index`.
    ///
    /// # Errors
    ///
    /// As [`List::get`].
    pub fn remove(&self, index: usize) -> Result<T, ManagerError> {
        self.object.value(Op::RemoveAt(index as u64))
    }

    /// Removes and returns the last item.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        self.object.maybe(Op::Pop)
    }

    /// The number of items.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn len(&self) -> Result<usize, ManagerError> {
        Ok(self.object.count(Op::Len)? as usize)
    }

    /// True when the list is empty.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        Ok(self.len()? == 0)
    }

    /// Every item, in order (a copy, taken atomically).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the copy is larger than a client
    /// reads in one answer (256 MiB:
    /// [`RemoteError::AnswerTooLarge`](super::RemoteError::AnswerTooLarge);
    /// read it by index instead).
    pub fn to_vec(&self) -> Result<Vec<T>, ManagerError> {
        self.object.many(Op::ToVec)
    }

    /// Removes every item.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.object.unit(Op::Clear)
    }

    /// Runs `f` on the item at `index` inside the manager, atomically, and
    /// returns its result (see [`Dict::update`](super::Dict::update)).
    ///
    /// # Errors
    ///
    /// As [`Dict::update`](super::Dict::update) and [`List::get`].
    pub fn update<F, R>(&self, index: usize, f: F) -> Result<R, ManagerError>
    where
        T: 'static,
        F: Fn(&mut T) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.object.update(None, Some(index as u64), &(), code::filled_without_arg::<F, T, R>)
    }

    /// As [`List::update`] for an `f` of two arguments, the item and `arg`.
    ///
    /// # Errors
    ///
    /// As [`List::update`].
    pub fn update_with<A, F, R>(&self, index: usize, arg: A, f: F) -> Result<R, ManagerError>
    where
        T: 'static,
        A: Serialize + DeserializeOwned + 'static,
        F: Fn(&mut T, A) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.object.update(None, Some(index as u64), &arg, code::filled::<F, T, A, R>)
    }
}

/// One value of any serde type in a manager (Python's `manager.Value`).
///
/// # Examples
///
/// ```
/// let manager = multiproc::manager::Manager::start().unwrap();
/// let v = manager.value(String::from("a")).unwrap();
/// v.update(|s: &mut String| s.push('b')).unwrap();
/// assert_eq!(v.get().unwrap(), "ab");
/// v.set("z".to_string()).unwrap();
/// assert_eq!(v.get().unwrap(), "z");
/// ```
pub struct Value<T> {
    object: ObjectRef,
    _type: PhantomData<fn(T) -> T>,
}

proxy!(Value<T>, Kind::Value);

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// The value (a copy).
    ///
    /// # Errors
    ///
    /// The manager cannot be reached.
    pub fn get(&self) -> Result<T, ManagerError> {
        self.object.value(Op::Load)
    }

    /// Replaces the value.
    ///
    /// # Errors
    ///
    /// The manager cannot be reached, or the value cannot be encoded.
    pub fn set(&self, value: T) -> Result<(), ManagerError> {
        self.object.unit(Op::Store(encode(&value)?))
    }

    /// Runs `f` on the value inside the manager, atomically, and returns
    /// its result (see [`Dict::update`](super::Dict::update)).
    ///
    /// # Errors
    ///
    /// As [`Dict::update`](super::Dict::update).
    pub fn update<F, R>(&self, f: F) -> Result<R, ManagerError>
    where
        T: 'static,
        F: Fn(&mut T) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.object.update(None, None, &(), code::filled_without_arg::<F, T, R>)
    }

    /// As [`Value::update`] for an `f` of two arguments, the value and `arg`.
    ///
    /// # Errors
    ///
    /// As [`Value::update`].
    pub fn update_with<A, F, R>(&self, arg: A, f: F) -> Result<R, ManagerError>
    where
        T: 'static,
        A: Serialize + DeserializeOwned + 'static,
        F: Fn(&mut T, A) -> R + Copy + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let _ = f;
        self.object.update(None, None, &arg, code::filled::<F, T, A, R>)
    }
}
