//! Addresses a [`Listener`](super::Listener) listens on and a
//! [`Client`](super::Client) connects to.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where a [`Listener`](super::Listener) listens: a Unix socket file, a Linux
/// abstract Unix name, or a TCP address.
///
/// Written as a string (see [`FromStr`](#impl-FromStr-for-Address)):
///
/// | string | address |
/// |---|---|
/// | `unix:/run/app.sock`, `unix:app.sock`, `/run/app.sock`, `./app.sock` | [`Address::Unix`] (a socket file) |
/// | `abstract:app`, `@app` | [`Address::Abstract`] (no file; Linux only) |
/// | `tcp:127.0.0.1:5000`, `tcp:localhost:5000`, `127.0.0.1:5000`, `[::1]:0` | [`Address::Tcp`] |
///
/// A host name is resolved when the string is parsed (first address found).
/// TCP port 0 asks the kernel for a free port; read it back with
/// [`Listener::address`](super::Listener::address). `Display` writes the
/// `unix:`, `abstract:` or `tcp:` form, which parses back to the same address.
///
/// # Examples
///
/// ```
/// use multiproc::Address;
///
/// let a: Address = "unix:/tmp/app.sock".parse().unwrap();
/// assert_eq!(a, Address::Unix("/tmp/app.sock".into()));
/// let b: Address = "@app".parse().unwrap();
/// assert_eq!(b.to_string(), "abstract:app");
/// let c: Address = "127.0.0.1:5000".parse().unwrap();
/// assert_eq!(c.to_string(), "tcp:127.0.0.1:5000");
/// assert_eq!(c.to_string().parse::<Address>().unwrap(), c);
/// assert!("nonsense".parse::<Address>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix socket file. The listener creates it and removes it when dropped.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (no file; freed when the listener
    /// closes). The bytes are the name without the leading NUL.
    Abstract(Vec<u8>),
    /// A TCP address. Handles (file descriptors) cannot travel over TCP.
    Tcp(SocketAddr),
}

/// A string that does not name an [`Address`].
///
/// # Examples
///
/// ```
/// let err = "ftp://host".parse::<multiproc::Address>().unwrap_err();
/// assert!(err.to_string().contains("ftp://host"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason}")]
pub struct AddressError {
    input: String,
    reason: String,
}

impl AddressError {
    fn new(input: &str, reason: impl Into<String>) -> AddressError {
        AddressError { input: input.to_string(), reason: reason.into() }
    }
}

const FORMS: &str = "use unix:/path, abstract:name or tcp:host:port";

impl Address {
    /// A Unix socket file at `path`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Address::unix("/tmp/x.sock");
    /// assert_eq!(a.to_string(), "unix:/tmp/x.sock");
    /// ```
    pub fn unix(path: impl AsRef<Path>) -> Address {
        Address::Unix(path.as_ref().to_path_buf())
    }

    /// A Linux abstract Unix socket name.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Address::abstract_name("my-service");
    /// assert_eq!(a.to_string(), "abstract:my-service");
    /// ```
    pub fn abstract_name(name: impl AsRef<[u8]>) -> Address {
        Address::Abstract(name.as_ref().to_vec())
    }

    /// True for TCP addresses, over which handles cannot be sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Address;
    /// assert!("tcp:127.0.0.1:0".parse::<Address>().unwrap().is_tcp());
    /// assert!(!Address::abstract_name("x").is_tcp());
    /// ```
    pub fn is_tcp(&self) -> bool {
        matches!(self, Address::Tcp(_))
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::new(s, "the socket path is empty"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if let Some(name) = s.strip_prefix("abstract:").or_else(|| s.strip_prefix('@')) {
            if name.is_empty() {
                return Err(AddressError::new(s, "the abstract name is empty"));
            }
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        let hostport = s.strip_prefix("tcp:").unwrap_or(s);
        if let Ok(addr) = hostport.parse::<SocketAddr>() {
            return Ok(Address::Tcp(addr));
        }
        if hostport.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
            return Err(AddressError::new(s, FORMS));
        }
        let mut found = hostport.to_socket_addrs().map_err(|e| AddressError::new(s, format!("{e}; {FORMS}")))?;
        found.next().map(Address::Tcp).ok_or_else(|| AddressError::new(s, "the host name has no address"))
    }
}

impl TryFrom<&str> for Address {
    type Error = AddressError;

    fn try_from(s: &str) -> Result<Address, AddressError> {
        s.parse()
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Tcp(addr)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Abstract(name) => write!(f, "abstract:{}", String::from_utf8_lossy(name)),
            Address::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// Anything that names an [`Address`]: an `Address` (or a reference to one),
/// a string in one of the forms [`Address`] lists, or a [`SocketAddr`].
///
/// # Examples
///
/// ```
/// use multiproc::{Address, IntoAddress};
///
/// let a = "tcp:127.0.0.1:9".into_address().unwrap();
/// assert_eq!(a, Address::Tcp("127.0.0.1:9".parse().unwrap()));
/// assert_eq!((&a).into_address().unwrap(), a);
/// ```
pub trait IntoAddress {
    /// The address.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::IntoAddress;
    /// assert!("/run/x.sock".into_address().unwrap().to_string() == "unix:/run/x.sock");
    /// assert!("x".into_address().is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The string does not name an address.
    fn into_address(self) -> Result<Address, AddressError>;
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address, AddressError> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address, AddressError> {
        Ok(self.clone())
    }
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address, AddressError> {
        self.parse()
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address, AddressError> {
        self.parse()
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address, AddressError> {
        self.parse()
    }
}

impl IntoAddress for SocketAddr {
    fn into_address(self) -> Result<Address, AddressError> {
        Ok(Address::Tcp(self))
    }
}
