//! A TCP proxy in front of a test's redis-server that can lose a reply:
//! it forwards a chosen command to the server, waits for the reply (so
//! the server has run the command), and cuts the client's connection
//! instead of passing the reply on — a reply lost after Redis acted on
//! the command, as on a network cut. It can also change the server (run
//! a hook) after it ran the command and before the client hears of the
//! cut, so that the client's next try meets a server that refuses it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use multiproc_redis::RedisServer;

/// How long the proxy waits to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy runs when it loses a reply (see
/// [`LossyProxy::lose_next_reply_to_then`]).
type Hook = Box<dyn FnOnce() + Send>;

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
    /// The command (as sent: a RESP bulk string) whose next reply is lost.
    trigger: Mutex<Option<Vec<u8>>>,
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
        let bulk = format!("${}\r\n{command}\r\n", command.len()).into_bytes();
        *self.state.trigger.lock().unwrap() = Some(bulk);
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
        // server's next bytes are its reply, which is lost.
        let lose = Arc::new(AtomicBool::new(false));
        let up = {
            let (state, lose) = (state.clone(), lose.clone());
            let (client, server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || client_to_server(&state, &lose, client, server))
        };
        let down = {
            let state = state.clone();
            std::thread::spawn(move || server_to_client(&state, &lose, server, client))
        };
        state.threads.lock().unwrap().extend([up, down]);
    }
}

fn client_to_server(state: &State, lose: &AtomicBool, mut client: TcpStream, mut server: TcpStream) {
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
        if let Some(t) = trigger.as_ref()
            && tail.windows(t.len()).any(|w| w.eq_ignore_ascii_case(t))
        {
            *trigger = None;
            lose.store(true, Ordering::SeqCst);
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

fn server_to_client(state: &State, lose: &AtomicBool, mut server: TcpStream, mut client: TcpStream) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose.load(Ordering::SeqCst) {
            // The server ran the command; its client never hears of it.
            let hook = state.on_loss.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
            state.lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
