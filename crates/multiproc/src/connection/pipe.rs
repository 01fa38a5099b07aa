//! [`Pipe`]: pairs of connected [`Connection`]s.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Connection, ConnectionError};
use crate::wire::{Channel, WireError};

/// Makes pairs of connected [`Connection`]s (Python's `Pipe`). `T` is the
/// message type of [`Connection::send`] and [`Connection::recv`]; raw byte
/// messages work with any `T`.
///
/// # Examples
///
/// ```
/// use multiproc::Pipe;
///
/// let (a, b) = Pipe::<(u32, String)>::duplex().unwrap();
/// a.send(&(7, "seven".to_string())).unwrap();
/// assert_eq!(b.recv().unwrap(), (7, "seven".to_string()));
/// ```
#[derive(Debug)]
pub struct Pipe<T = Vec<u8>>(PhantomData<fn() -> T>);

impl<T: Serialize + DeserializeOwned> Pipe<T> {
    /// Two ends that can both send and receive (Python's `Pipe()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::Pipe::<u32>::duplex().unwrap();
    /// a.send(&1).unwrap();
    /// b.send(&2).unwrap();
    /// assert_eq!(b.recv().unwrap(), 1);
    /// assert_eq!(a.recv().unwrap(), 2);
    /// ```
    ///
    /// # Errors
    ///
    /// The OS could not create the socket pair.
    pub fn duplex() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
        let (a, b) = Channel::pair().map_err(WireError::Io)?;
        Ok((Connection::from_channel(a, true, true), Connection::from_channel(b, true, true)))
    }

    /// A receive-only end and a send-only end, in that order (Python's
    /// `Pipe(duplex=False)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (rx, tx) = multiproc::Pipe::<String>::one_way().unwrap();
    /// tx.send(&"hi".to_string()).unwrap();
    /// assert_eq!(rx.recv().unwrap(), "hi");
    /// assert!(rx.send(&"no".to_string()).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The OS could not create the socket pair.
    pub fn one_way() -> Result<(Connection<T>, Connection<T>), ConnectionError> {
        let (a, b) = Channel::pair().map_err(WireError::Io)?;
        Ok((Connection::from_channel(a, true, false), Connection::from_channel(b, false, true)))
    }
}
