//! User types in a manager (issue 9, item 4): one instance served to many
//! processes, a panic is that caller's error, requests outside the exposed
//! enum are refused. Every wait is bounded.

#[path = "sync_support/mod.rs"]
mod sync_support;

use multiproc::manager::{Manager, ManagerError, RemoteError, Shared, SharedObject};
use serde::{Deserialize, Serialize};
use sync_support::Kid;

#[derive(Serialize, Deserialize)]
struct Accounts {
    balances: std::collections::BTreeMap<String, i64>,
}

#[derive(Serialize, Deserialize)]
enum AccountCall {
    Deposit(String, i64),
    Balance(String),
    Explode,
}

impl Shared for Accounts {
    type Request = AccountCall;
    type Response = i64;

    fn call(&mut self, request: AccountCall) -> i64 {
        match request {
            AccountCall::Deposit(who, n) => {
                let b = self.balances.entry(who).or_default();
                *b += n;
                *b
            }
            AccountCall::Balance(who) => self.balances.get(&who).copied().unwrap_or(0),
            AccountCall::Explode => panic!("account boom"),
        }
    }
}

fn deposit(accounts: SharedObject<Accounts>, n: i64) {
    for _ in 0..n {
        accounts.call(AccountCall::Deposit("ann".into(), 1)).unwrap();
    }
}

#[test]
fn a_user_type_serves_children_and_survives_a_panic() {
    let m = Manager::start().unwrap();
    let accounts = m.create(Accounts { balances: Default::default() }).unwrap();
    let other = m.dict::<u8, u8>().unwrap();
    other.insert(1, 1).unwrap();
    let kids: Vec<Kid<()>> = (0..3).map(|_| Kid::spawn(deposit, (accounts.clone(), 50))).collect();
    for k in kids {
        k.join();
    }
    assert_eq!(accounts.call(AccountCall::Balance("ann".into())).unwrap(), 150);
    match accounts.call(AccountCall::Explode) {
        Err(ManagerError::Remote(RemoteError::Panicked(msg))) => assert!(msg.contains("account boom"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // The object and the others survive.
    assert_eq!(accounts.call(AccountCall::Deposit("ann".into(), 1)).unwrap(), 151);
    assert_eq!(other.get(&1).unwrap(), Some(1));
    m.shutdown().unwrap();
}

#[derive(Serialize, Deserialize)]
enum NarrowCall {
    Only,
}

#[derive(Serialize, Deserialize)]
struct Narrow;

impl Shared for Narrow {
    type Request = NarrowCall;
    type Response = ();
    fn call(&mut self, _: NarrowCall) {}
}

#[derive(Serialize, Deserialize)]
enum WideCall {
    Only,
    NotExposed(u32),
}

#[derive(Serialize, Deserialize)]
struct Wide;

impl Shared for Wide {
    type Request = WideCall;
    type Response = ();
    fn call(&mut self, _: WideCall) {}
}

#[test]
fn calling_a_method_the_type_does_not_expose_is_a_remote_error() {
    let m = Manager::start().unwrap();
    let narrow = m.create(Narrow).unwrap();
    m.publish("narrow", &narrow).unwrap();
    narrow.call(NarrowCall::Only).unwrap();
    // A proxy of another type is refused by `get`…
    assert!(matches!(m.get::<SharedObject<Wide>>("narrow"), Err(ManagerError::TypeMismatch { .. })));
    // …and a request outside the exposed enum, sent anyway, is refused by the manager.
    let forged: SharedObject<Wide> = postcard_roundtrip(&narrow);
    match forged.call(WideCall::NotExposed(1)) {
        Err(ManagerError::Remote(RemoteError::BadRequest(msg))) => assert!(msg.contains("exposes"), "{msg}"),
        other => panic!("{other:?}"),
    }
    narrow.call(NarrowCall::Only).unwrap();
}

/// A proxy reinterpreted as another proxy type (as a confused or hostile
/// client could).
fn postcard_roundtrip<A, B>(a: &A) -> B
where
    A: Serialize + serde::de::DeserializeOwned,
    B: Serialize + serde::de::DeserializeOwned,
{
    let (t, r) = multiproc::Pipe::<A>::duplex().unwrap();
    t.send(a).unwrap();
    let bytes = r.recv_bytes().unwrap();
    let (t, r) = multiproc::Pipe::<B>::duplex().unwrap();
    t.send_bytes(&bytes).unwrap();
    r.recv().unwrap()
}

/// A shared type whose decoding panics on 13, in the manager.
#[derive(Serialize)]
struct Fragile(u8);

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fragile, D::Error> {
        let v = u8::deserialize(d)?;
        assert!(v != 13, "unlucky number");
        Ok(Fragile(v))
    }
}

impl Shared for Fragile {
    type Request = ();
    type Response = u8;
    fn call(&mut self, _: ()) -> u8 {
        self.0
    }
}

#[test]
fn a_panic_while_creating_a_user_object_is_that_calls_error() {
    let m = Manager::start().unwrap();
    match m.create(Fragile(13)) {
        Err(ManagerError::Remote(RemoteError::Panicked(msg))) => assert!(msg.contains("unlucky"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(m.create(Fragile(7)).unwrap().call(()).unwrap(), 7);
}

/// A user type whose method calls back into its own manager through a
/// proxy it is handed.
#[derive(Serialize, Deserialize)]
struct Echo;

#[derive(Serialize, Deserialize)]
enum EchoCall {
    Ping,
    /// Calls `Ping` on this very object, from inside the manager.
    CallSelf(SharedObject<Echo>),
    /// Reads the length of another object of the same manager.
    ReadOther(multiproc::manager::Dict<u8, u8>),
    /// Calls `Ping` on this very object from a thread that the call starts
    /// and waits for.
    CallSelfFromThread(SharedObject<Echo>),
}

impl Shared for Echo {
    type Request = EchoCall;
    type Response = Result<u8, String>;
    fn call(&mut self, request: EchoCall) -> Result<u8, String> {
        match request {
            EchoCall::Ping => Ok(1),
            EchoCall::CallSelf(me) => me.call(EchoCall::Ping).map_err(|e| e.to_string())?,
            EchoCall::ReadOther(d) => d.len().map(|n| n as u8).map_err(|e| e.to_string()),
            EchoCall::CallSelfFromThread(me) => {
                on_a_thread_of_its_own(move || me.call(EchoCall::Ping).map_err(|e| e.to_string())?)
            }
        }
    }
}

/// Runs `f` on a thread started for it, and waits for it (no timeout: run
/// inside the manager, which the test bounds with [`within_30s`]).
fn on_a_thread_of_its_own<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().expect("the thread panicked")
}

/// Runs `f` on a thread and waits at most 30 s for it: a hang fails the test.
fn within_30s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the call hung (a deadlock in the manager)")
}

#[test]
fn code_running_in_the_manager_that_calls_the_manager_back_is_refused_not_a_hang() {
    let m = Manager::start().unwrap();
    let echo = m.create(Echo).unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    d.insert(1, 1).unwrap();
    let (e, dd) = (echo.clone(), d.clone());
    let answers = within_30s(move || (e.call(EchoCall::CallSelf(e.clone())), e.call(EchoCall::ReadOther(dd))));
    for answer in [answers.0, answers.1] {
        let msg = answer.unwrap().unwrap_err();
        assert!(msg.contains("calls its own manager"), "{msg}");
    }
    // An update (run by the manager's dispatcher) that calls the manager.
    let (dd, other) = (d.clone(), m.dict::<u8, u8>().unwrap());
    let answer = within_30s(move || {
        dd.update_with(&1, other, |_: &mut Option<u8>, o: multiproc::manager::Dict<u8, u8>| {
            o.len().map_err(|e| e.to_string())
        })
    });
    let msg = answer.unwrap().unwrap_err();
    assert!(msg.contains("calls its own manager"), "{msg}");
    // The manager still serves.
    assert_eq!(echo.call(EchoCall::Ping).unwrap(), Ok(1));
    assert_eq!(d.len().unwrap(), 1);
    m.shutdown().unwrap();
}

#[test]
fn a_thread_that_code_in_the_manager_starts_and_waits_for_is_refused_its_calls_back_not_a_hang() {
    let m = Manager::start().unwrap();
    let echo = m.create(Echo).unwrap();
    // A user type's call waits for a thread that calls this very object.
    let e = echo.clone();
    let msg = within_30s(move || e.call(EchoCall::CallSelfFromThread(e.clone()))).unwrap().unwrap_err();
    assert!(msg.contains("calls its own manager"), "{msg}");
    // An update (run by the dispatcher, which serves every lane) waits for
    // a thread that calls another object.
    let (d, other) = (m.dict::<u8, u8>().unwrap(), m.dict::<u8, u8>().unwrap());
    let dd = d.clone();
    let answer = within_30s(move || {
        dd.update_with(&1, other, |_: &mut Option<u8>, o: multiproc::manager::Dict<u8, u8>| {
            on_a_thread_of_its_own(move || o.len().map_err(|e| e.to_string()))
        })
    });
    let msg = answer.unwrap().unwrap_err();
    assert!(msg.contains("calls its own manager"), "{msg}");
    // The manager still serves.
    assert_eq!(echo.call(EchoCall::Ping).unwrap(), Ok(1));
    assert_eq!(d.len().unwrap(), 0);
    m.shutdown().unwrap();
}
