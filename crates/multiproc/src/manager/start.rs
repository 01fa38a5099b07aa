//! How a manager starts: a [`ManagerBuilder`] starts the server in a child
//! process ([`ManagerBuilder::start`]) or on a thread of this process
//! ([`ManagerBuilder::serve`], [`serve`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_bytes::ByteBuf;

use super::client::{self, Endpoint};
use super::{Manager, ManagerError, Owned, SHUTDOWN_TIMEOUT, server};
use crate::{Address, Connection, IntoAddress, Pipe, Process, StartMethod};

/// Builds a [`Manager`]: its address, the address its proxies name, its
/// auth key, process name and start method.
///
/// # Examples
///
/// ```
/// let manager = multiproc::manager::Manager::builder().name("state-server").start().unwrap();
/// assert!(manager.pid().is_some());
/// manager.shutdown().unwrap();
/// ```
#[derive(Debug, Default, Clone)]
pub struct ManagerBuilder {
    address: Option<String>,
    authkey: Option<Option<Vec<u8>>>,
    name: Option<String>,
    start_method: Option<StartMethod>,
    advertise: Option<IpAddr>,
}

impl ManagerBuilder {
    /// The address to listen on (see [`Address`]): `tcp:HOST:PORT` (port 0
    /// picks a free one), `unix:/path` or `abstract:name`. Default: a fresh
    /// Linux abstract name.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The IP address the proxies made by the returned handle name (with
    /// the port the manager listens on), for a TCP manager reached from
    /// other machines. A proxy carries its manager's address; one stored in
    /// another object (a queue kept in a shared dict) is read as it was
    /// written, so a process on another machine that reads it connects to
    /// the address it names. By default that is the listening address, or
    /// for a manager bound on every interface (`tcp:0.0.0.0:…`,
    /// `tcp:[::]:…`) loopback, which another machine would take for itself:
    /// advertise an address every user of the proxies can reach (this
    /// process's calls go there too).
    ///
    /// [`start`](Self::start) and [`serve`](Self::serve) fail on an
    /// address that is not TCP, and on an unspecified advertise address.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::manager::{Dict, Manager, Proxy, Queue};
    ///
    /// let manager = Manager::builder()
    ///     .address("tcp:0.0.0.0:0")
    ///     .advertise_address([127, 0, 0, 1])
    ///     .authkey(b"key")
    ///     .start()
    ///     .unwrap();
    /// let jobs = manager.queue::<u32>().unwrap();
    /// let board = manager.dict::<String, Queue<u32>>().unwrap();
    /// board.insert("jobs".into(), jobs).unwrap();
    /// let nested = board.get("jobs").unwrap().unwrap();
    /// assert!(format!("{:?}", nested.object_ref()).contains("127.0.0.1"));
    /// manager.shutdown().unwrap();
    /// ```
    pub fn advertise_address(mut self, ip: impl Into<IpAddr>) -> Self {
        self.advertise = Some(ip.into());
        self
    }

    /// The auth key clients must know. Default: 32 random bytes (proxies
    /// carry the key, so children and pool tasks can use them).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(Some(key.to_vec()));
        self
    }

    /// No auth key: any client that can reach the address may connect.
    pub fn no_authkey(mut self) -> Self {
        self.authkey = Some(None);
        self
    }

    /// The manager process's name (default `Manager`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How the manager process starts (default: the program's).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    fn endpoint_parts(&self) -> Result<(String, Option<Vec<u8>>), ManagerError> {
        let address = self.address.clone().unwrap_or_else(fresh_address);
        if let Some(ip) = self.advertise {
            // A string that does not parse is left to the bind to report.
            if address.parse::<Address>().is_ok_and(|a| !a.is_tcp()) {
                return Err(ManagerError::Start(format!(
                    "an advertise address ({ip}) is for a TCP manager, and {address} is not one: \
                     listen on tcp:HOST:PORT, or leave the advertise address out"
                )));
            }
            if ip.is_unspecified() {
                return Err(ManagerError::Start(format!(
                    "advertise address {ip} names no machine: give one the manager's users can connect to"
                )));
            }
        }
        let authkey = match &self.authkey {
            Some(key) => key.clone(),
            None => Some(random_key()?),
        };
        Ok((address, authkey))
    }

    /// The endpoint the handle's proxies carry, for a manager listening on
    /// `bound` (a TCP address when an advertise address was given: see
    /// `endpoint_parts`).
    fn endpoint(&self, bound: &Address, authkey: Option<&[u8]>) -> Endpoint {
        match (self.advertise, bound) {
            (Some(ip), Address::Tcp(at)) => Endpoint::new(&Address::Tcp(SocketAddr::new(ip, at.port())), authkey),
            _ => Endpoint::new(bound, authkey),
        }
    }

    /// Starts the manager process and waits until it listens.
    ///
    /// # Errors
    ///
    /// The process could not start, or could not listen on the address; an
    /// advertise address was given for an address that is not TCP, or is
    /// unspecified (see [`advertise_address`](Self::advertise_address)).
    pub fn start(self) -> Result<Manager, ManagerError> {
        let (address, authkey) = self.endpoint_parts()?;
        let (ours, theirs) = Pipe::<Result<String, String>>::duplex()?;
        let mut builder = Process::builder().name(self.name.as_deref().unwrap_or("Manager")).daemon(true);
        if let Some(method) = self.start_method {
            builder = builder.start_method(method);
        }
        let mut process = builder.spawn(manager_main, (address, authkey.clone().map(ByteBuf::from), theirs))?;
        let address = listening_address(&mut process, &ours)?;
        let endpoint = Arc::new(self.endpoint(&address, authkey.as_deref()));
        Ok(Manager { endpoint, address, owned: Owned::Process(Some(Box::new(process))) })
    }

    /// Runs the manager on a thread of this process (see [`serve`]).
    ///
    /// # Errors
    ///
    /// The address cannot be listened on; the advertise address is refused
    /// (as by [`start`](Self::start)).
    pub fn serve(self) -> Result<Manager, ManagerError> {
        let (address, authkey) = self.endpoint_parts()?;
        let server = server::Server::bind(address, authkey.as_deref())?;
        let address = server.address().clone();
        let stopper = server.stopper();
        let thread = std::thread::Builder::new()
            .name("multiproc-manager".into())
            .spawn(move || server.run())
            .map_err(|e| ManagerError::Start(format!("cannot start the server thread: {e}")))?;
        let endpoint = Arc::new(self.endpoint(&address, authkey.as_deref()));
        Ok(Manager { endpoint, address, owned: Owned::Thread { stopper, thread: Some(thread) } })
    }
}

/// Serves a manager on `address` with `authkey`, on a thread of this
/// process (Python's `BaseManager(address, authkey).get_server()`): other
/// processes, here or on other machines, reach it with
/// [`Manager::connect`] and find the objects [`Manager::publish`]ed by name.
/// The returned handle makes objects like any other; dropping it (or
/// [`Manager::shutdown`]) stops the server and cuts its connections.
///
/// # Examples
///
/// ```
/// use multiproc::manager::{self, Dict, Manager};
///
/// let server = manager::serve("tcp:127.0.0.1:0", Some(b"key")).unwrap();
/// let config = server.dict::<String, u32>().unwrap();
/// config.insert("workers".into(), 4).unwrap();
/// server.publish("config", &config).unwrap();
///
/// let client = Manager::connect(server.address(), Some(b"key")).unwrap();
/// let seen: Dict<String, u32> = client.get("config").unwrap();
/// assert_eq!(seen.get("workers").unwrap(), Some(4));
/// assert!(Manager::connect(server.address(), Some(b"nope")).unwrap_err().is_authentication_failed());
/// server.shutdown().unwrap();
/// ```
///
/// # Errors
///
/// The address is not valid or cannot be listened on.
pub fn serve(address: impl IntoAddress, authkey: Option<&[u8]>) -> Result<Manager, ManagerError> {
    let address = address.into_address().map_err(crate::ConnectionError::from)?;
    let builder = ManagerBuilder { address: Some(address.to_string()), ..ManagerBuilder::default() };
    match authkey {
        Some(key) => builder.authkey(key),
        None => builder.no_authkey(),
    }
    .serve()
}

/// The address a manager process just started listens on, as it reports
/// it through `ready`. On any failure (it could not listen, said nothing in
/// time, or reported something that is not an address) the process is
/// killed and reaped before the error returns: nothing else would stop it
/// before the program exits.
fn listening_address(
    process: &mut Process<()>,
    ready: &Connection<Result<String, String>>,
) -> Result<Address, ManagerError> {
    let reported = match ready.recv_timeout(client::CONNECT_TIMEOUT) {
        Ok(Ok(bound)) => bound
            .parse::<Address>()
            .map_err(|e| format!("the manager process reported an address that does not parse ({e})")),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(format!("no word from the manager process: {e}")),
    };
    reported.map_err(|e| {
        let _ = process.kill();
        let _ = process.join_timeout(SHUTDOWN_TIMEOUT);
        ManagerError::Start(e)
    })
}

/// The manager process: listen, report the address, serve until shut down.
fn manager_main(address: String, authkey: Option<ByteBuf>, ready: Connection<Result<String, String>>) {
    // As Python's manager process (bpo-36368): a terminal's Ctrl-C reaches
    // every process of the group, and the program that catches it may still
    // use its shared objects while it winds down. It still dies with the
    // program, and stops on `shutdown`.
    crate::sys::imp::signal::ignore_sigint();
    // Its objects' values are allocated and freed call after call: their
    // pages are kept for reuse (see `crate::allow_allocator_tuning`).
    crate::sys::imp::malloc::keep_freed_memory();
    let server = match server::Server::bind(address, authkey.as_deref().map(|k| &k[..])) {
        Ok(server) => server,
        Err(e) => {
            let _ = ready.send(&Err(e.to_string()));
            return;
        }
    };
    if ready.send(&Ok(server.address().to_string())).is_err() {
        return;
    }
    drop(ready);
    server.dedicate_process();
    server.run();
}

fn fresh_address() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut salt = [0u8; 4];
    let _ = getrandom::fill(&mut salt);
    // ORDERING: Relaxed: only uniqueness matters.
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("abstract:multiproc-manager-{}-{n}-{:08x}", std::process::id(), u32::from_le_bytes(salt))
}

fn random_key() -> Result<Vec<u8>, ManagerError> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| ManagerError::Start(format!("no random bytes for the auth key: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A manager process that reports an address that is no address, then
    /// stays up (as long as a test may take).
    fn misreporting_manager(ready: Connection<Result<String, String>>) {
        let _ = ready.send(&Ok("not an address".to_string()));
        std::thread::sleep(Duration::from_secs(120));
    }

    #[test]
    fn a_manager_process_that_reports_no_address_is_killed_and_reaped() {
        let (ours, theirs) = Pipe::<Result<String, String>>::duplex().unwrap();
        let mut process = Process::builder().daemon(true).spawn(misreporting_manager, (theirs,)).unwrap();
        let err = listening_address(&mut process, &ours).unwrap_err();
        assert!(err.to_string().contains("does not parse"), "{err}");
        assert!(!process.is_alive(), "the manager process still runs after the failed start");
        assert_eq!(process.exitcode(), Some(-9), "the manager process was not killed and reaped");
    }
}
