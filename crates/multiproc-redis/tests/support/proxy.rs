//! A TCP proxy in front of a test's redis-server that can lose a reply:
//! it forwards a chosen command to the server, waits for the reply (so
//! the server has run the command), and cuts the client's connection
//! instead of passing the reply on — a reply lost after Redis acted on
//! the command, as on a network cut. It can also change the server (run
//! a hook) after it ran the command and before the client hears of the
//! cut, so that the client's next try meets a server that refuses it.
//! Or it can hold a reply back until the test releases it ([`Stall`]): the
//! server ran the command, and its client waits for the reply meanwhile.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use multiproc_redis::RedisServer;

/// How long the proxy waits to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the proxy holds a reply back (see [`Stall`]), released or
/// not: a test that forgets to release it does not hang.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// What the proxy runs when it loses a reply (see
/// [`LossyProxy::lose_next_reply_to_then`]).
type Hook = Box<dyn FnOnce() + Send>;

/// What becomes of the reply to the trigger command.
enum Fate {
    /// Lost: the client's connection is cut instead.
    Lose,
    /// Held back until the gate opens, then passed on.
    Stall(Arc<Gate>),
}

/// Where a held reply waits (see [`Stall`]).
#[derive(Default)]
struct Gate {
    /// Whether the reply is held (or was), and whether it may go on.
    state: Mutex<GateState>,
    /// Signalled when either changes.
    changed: Condvar,
}

/// The two facts a [`Gate`] guards.
#[derive(Default)]
struct GateState {
    /// The server replied, and the proxy holds the reply (or did).
    held: bool,
    /// The reply may go on to the client.
    released: bool,
}

impl Gate {
    /// Sets what `f` sets, and wakes the waiters.
    fn set(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits at most `timeout` until `ready` holds; whether it does.
    fn wait(&self, timeout: Duration, ready: impl Fn(&GateState) -> bool) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self.changed.wait_timeout_while(state, timeout, |s| !ready(s)).unwrap();
        ready(&state)
    }
}

/// The reply to a command that the proxy holds back (see
/// [`LossyProxy::stall_next_reply_to`]); released on drop.
pub struct Stall(Arc<Gate>);

impl Stall {
    /// Waits at most `timeout` until the server has replied to the
    /// command (it ran it) and the proxy holds the reply; whether it does.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        self.0.wait(timeout, |s| s.held)
    }

    /// Passes the reply on to its client (at once when it arrives, if the
    /// proxy does not hold it yet).
    pub fn release(&self) {
        self.0.set(|s| s.released = true);
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.release();
    }
}

/// A proxy on a free loopback port; stopped, with every connection
/// through it closed and its threads joined, on drop.
pub struct LossyProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

struct State {
    server: SocketAddr,
    stop: AtomicBool,
    /// The command (as sent: a RESP bulk string) whose next reply is lost
    /// or held back, and which of the two.
    trigger: Mutex<Option<(Vec<u8>, Fate)>>,
    /// Every gate made, opened on drop (so that no copying thread waits).
    gates: Mutex<Vec<Arc<Gate>>>,
    /// Run once the server replied to the trigger, before the cut.
    on_loss: Mutex<Option<Hook>>,
    /// Replies lost so far.
    lost: AtomicUsize,
    /// Both sockets of every connection, to close on drop.
    sockets: Mutex<Vec<TcpStream>>,
    /// The copying threads.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl LossyProxy {
    /// A proxy to `server`, passing everything on until told to lose a
    /// reply.
    pub fn start(server: &RedisServer) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            server: SocketAddr::from(([127, 0, 0, 1], server.port())),
            stop: AtomicBool::new(false),
            trigger: Mutex::new(None),
            gates: Mutex::default(),
            on_loss: Mutex::new(None),
            lost: AtomicUsize::new(0),
            sockets: Mutex::default(),
            threads: Mutex::default(),
        });
        let s = state.clone();
        let accept = std::thread::spawn(move || accept_loop(&listener, &s));
        LossyProxy { addr, state, accept: Some(accept) }
    }

    /// The URL to connect through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Loses the reply to the next `command` (its name as the client sends
    /// it, such as `EVAL`) that any client sends: the server runs it, the
    /// client's connection is cut before the reply reaches it.
    pub fn lose_next_reply_to(&self, command: &str) {
        self.arm(command, Fate::Lose);
    }

    /// Holds back the reply to the next `command` (as for
    /// [`LossyProxy::lose_next_reply_to`]) that any client sends: the
    /// server runs it, and the client waits for the reply until the
    /// returned [`Stall`] is released or dropped (at most 10 s).
    pub fn stall_next_reply_to(&self, command: &str) -> Stall {
        let gate = Arc::new(Gate::default());
        self.state.gates.lock().unwrap().push(gate.clone());
        self.arm(command, Fate::Stall(gate.clone()));
        Stall(gate)
    }

    /// Makes `command` the trigger, whose next reply meets `fate`.
    fn arm(&self, command: &str, fate: Fate) {
        let bulk = format!("${}\r\n{command}\r\n", command.len()).into_bytes();
        *self.state.trigger.lock().unwrap() = Some((bulk, fate));
    }

    /// As [`LossyProxy::lose_next_reply_to`], running `hook` once the
    /// server replied and before the client's connection is cut (the
    /// client's next try finds the server as `hook` left it).
    pub fn lose_next_reply_to_then(&self, command: &str, hook: impl FnOnce() + Send + 'static) {
        *self.state.on_loss.lock().unwrap() = Some(Box::new(hook));
        self.lose_next_reply_to(command);
    }

    /// How many replies the proxy lost so far.
    pub fn replies_lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for gate in self.state.gates.lock().unwrap().drain(..) {
            gate.set(|s| s.released = true);
        }
        for s in self.state.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads: Vec<JoinHandle<()>> = self.state.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    for client in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect_timeout(&state.server, CONNECT_TIMEOUT) else { continue };
        let mut sockets = state.sockets.lock().unwrap();
        sockets.push(client.try_clone().unwrap());
        sockets.push(server.try_clone().unwrap());
        drop(sockets);
        // Set by the client's side when it passed the trigger on: the
        // server's next bytes are its reply, which meets this fate.
        let armed = Arc::new(Mutex::new(None));
        let up = {
            let (state, armed) = (state.clone(), armed.clone());
            let (client, server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || client_to_server(&state, &armed, client, server))
        };
        let down = {
            let state = state.clone();
            std::thread::spawn(move || server_to_client(&state, &armed, server, client))
        };
        state.threads.lock().unwrap().extend([up, down]);
    }
}

fn client_to_server(state: &State, armed: &Mutex<Option<Fate>>, mut client: TcpStream, mut server: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    // The end of the bytes read before, so that a trigger split across
    // two reads is still seen.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buf[..n]);
        let mut trigger = state.trigger.lock().unwrap();
        if let Some((t, _)) = trigger.as_ref()
            && tail.windows(t.len()).any(|w| w.eq_ignore_ascii_case(t))
        {
            *armed.lock().unwrap() = trigger.take().map(|(_, fate)| fate);
            // Matched once: a trigger armed later looks at bytes sent after.
            tail.clear();
        }
        drop(trigger);
        let keep = tail.len().min(64);
        tail.drain(..tail.len() - keep);
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
}

fn server_to_client(state: &State, armed: &Mutex<Option<Fate>>, mut server: TcpStream, mut client: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fate = armed.lock().unwrap().take();
        match fate {
            Some(Fate::Lose) => {
                // The server ran the command; its client never hears of it.
                let hook = state.on_loss.lock().unwrap().take();
                if let Some(hook) = hook {
                    hook();
                }
                state.lost.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Some(Fate::Stall(gate)) => {
                // The server ran the command; its client waits meanwhile.
                gate.set(|s| s.held = true);
                gate.wait(STALL_LIMIT, |s| s.released);
            }
            None => {}
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
