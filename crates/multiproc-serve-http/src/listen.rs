//! Accepting connections and serving HTTP/1.1 on them with hyper, with
//! graceful shutdown: stop accepting, let every connection finish the
//! request it is on, then return. A request a client sent before it could
//! know is one in flight too: the connections waiting in the listen backlog,
//! and those accepted on which no request was read yet, each answer one
//! request (or close after the header timeout) rather than being reset or
//! closed with it unread.
//!
//! Inference requests go straight to their handler; everything else goes
//! through the axum router. The router costs an allocation or three per
//! request (its parameter map, a boxed body, boxed futures), which on a
//! small model is a noticeable share of the whole request. The fast path
//! takes exactly the requests the router's infer routes would take (`POST`,
//! the same path shape, segments that need no percent-decoding) and leaves
//! every other request, including every error case, to the router.

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::App;
use crate::idle::{Activity, InFlight, first_request, idle_for};

/// How long a connection with no request started when the shutdown came
/// is given for one to start: the request its client sent before it knew
/// arrives well within it.
pub(crate) const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Serves `router` (and, if `app` is given, its inference fast path) on
/// `listener` until `stop` turns true; then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed.
/// A connection on which no request has started and none has been in
/// flight for `header_timeout` is closed. The connections the kernel took
/// and this loop had not accepted yet when `stop` came (their clients may
/// have sent a request) are accepted then and answer one request each:
/// closing the listener with them waiting would reset them.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    app: Option<Arc<App>>,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    // Every connection holds a receiver; `closed` resolves when all are gone.
    let (open_tx, open_rx) = watch::channel(());
    let router = TowerToHyperService::new(router);
    let mut stopping = pin!(stopped(stop.clone()));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        let front = Front { router: router.clone(), app: app.clone() };
        tokio::spawn(connection(stream, front, header_timeout, stop.clone(), open_rx.clone()));
    }
    // Stopping: the connections waiting to be accepted each finish the
    // request they came with, and close.
    for stream in waiting(listener) {
        let front = Front { router: router.clone(), app: app.clone() };
        tokio::spawn(connection(stream, front, header_timeout, stop.clone(), open_rx.clone()));
    }
    drop(open_rx);
    open_tx.closed().await;
}

/// Closes `listener`, taking first the connections waiting in its backlog
/// (all the kernel holds now: the reactor may not have seen them yet).
fn waiting(listener: TcpListener) -> Vec<TcpStream> {
    let listener = match listener.into_std() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("cannot take the connections waiting to be accepted: {e}; they are reset");
            return Vec::new();
        }
    };
    let mut streams = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, _)) => match stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) {
                Ok(stream) => streams.push(stream),
                Err(e) => tracing::debug!("a connection waiting to be accepted is dropped: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return streams,
            Err(e) => {
                tracing::debug!("taking the connections waiting to be accepted stopped: {e}");
                return streams;
            }
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// An accept error: too many open files and the like are passing
/// conditions, so wait a little and go on (as axum and hyper do).
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        tracing::warn!("accept failed: {e}; retrying in 1 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Serves one connection until it closes, or until no request has started
/// and none has been in flight for `header_timeout` (see [`idle_for`]); on
/// `stop`, finishes the request in flight and closes it.
async fn connection(
    stream: TcpStream,
    front: Front,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    // One write per response, so Nagle never holds anything back; without
    // delay is what an answer should have anyway.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::default());
    let requests = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request| {
        let front = front.clone();
        let in_flight = InFlight::enter(&requests);
        async move {
            let response = front.answer(request).await;
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    // A client may shut down its write side once its request is sent and
    // still wait for the answer (HTTP/1.0-style clients, some proxies);
    // without half-close support hyper takes that EOF as the client gone
    // and closes without answering. TCP cannot tell that EOF from a client
    // gone for good, so a request whose client closed is now answered into
    // the closed socket rather than cancelled (its deadline and the queue
    // bound still hold). An idle connection still closes on EOF.
    let mut conn = pin!(http1::Builder::new().half_close(true).serve_connection(TokioIo::new(stream), service));
    let mut stopping = pin!(stopped(stop));
    // Dropping the connection closes it.
    let mut idle = pin!(idle_for(&activity, header_timeout));
    tokio::select! {
        biased;
        done = conn.as_mut() => return ended(done),
        _ = &mut stopping => {}
        _ = &mut idle => {
            tracing::debug!("closing a connection on which no request started for {header_timeout:?}");
            return;
        }
    }
    // Stopping. A connection on which no request has started yet may have
    // come with one (its client sent it before it knew): that one is
    // answered. Shut down before it is read, the connection would close
    // with the request unread, and the client would see it reset. One that
    // sends nothing (a browser's preconnect) holds the shutdown only
    // briefly.
    tokio::select! {
        biased;
        done = conn.as_mut() => return ended(done),
        _ = first_request(&activity) => conn.as_mut().graceful_shutdown(),
        _ = tokio::time::sleep(FIRST_REQUEST_GRACE) => {
            tracing::debug!("closing a connection on which no request started while shutting down");
            return;
        }
        _ = &mut idle => return,
    }
    tokio::select! {
        done = conn => if let Err(e) = done {
            tracing::trace!("connection ended while shutting down: {e}");
        },
        _ = idle => tracing::debug!("closing an idle connection while shutting down"),
    }
}

/// Logs how a connection ended.
fn ended(done: Result<(), hyper::Error>) {
    if let Err(e) = done {
        tracing::trace!("connection ended: {e}");
    }
}

/// What a connection serves requests with.
#[derive(Clone)]
struct Front {
    router: TowerToHyperService<Router>,
    app: Option<Arc<App>>,
}

impl Front {
    async fn answer(self, request: Request<Incoming>) -> Response {
        if let Some(app) = &self.app
            && let Some((name, version)) = infer_route(request.method(), request.uri().path())
        {
            let (name, version) = (name.to_string(), version.map(str::to_string));
            return crate::infer::answer(app, name, version.as_deref(), request).await;
        }
        match hyper::service::Service::call(&self.router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The model name and version string if this is a request the router's
/// infer routes would take: `POST /v2/models/{name}/infer` or
/// `POST /v2/models/{name}/versions/{version}/infer`, each segment
/// non-empty and free of `%` (the router percent-decodes those; they go
/// to it).
fn infer_route<'a>(method: &Method, path: &'a str) -> Option<(&'a str, Option<&'a str>)> {
    if method != Method::POST {
        return None;
    }
    let rest = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
    match rest.split_once('/') {
        None => plain(rest).then_some((rest, None)),
        Some((name, tail)) => {
            let version = tail.strip_prefix("versions/")?;
            (plain(name) && plain(version)).then_some((name, Some(version)))
        }
    }
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").field("fast_path", &self.app.is_some()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_takes_exactly_the_router_s_infer_routes() {
        let post = Method::POST;
        assert_eq!(infer_route(&post, "/v2/models/digits/infer"), Some(("digits", None)));
        assert_eq!(infer_route(&post, "/v2/models/digits/versions/2/infer"), Some(("digits", Some("2"))));
        // The version is checked by the handler, as with the router.
        assert_eq!(infer_route(&post, "/v2/models/d/versions/x/infer"), Some(("d", Some("x"))));
        for (method, path) in [
            (Method::GET, "/v2/models/digits/infer"),
            (post.clone(), "/v2/models//infer"),
            (post.clone(), "/v2/models/digits/infer/"),
            (post.clone(), "/v2/models/a%20b/infer"),
            (post.clone(), "/v2/models/a/b/infer"),
            (post.clone(), "/v2/models/a/versions//infer"),
            (post.clone(), "/v2/models/a/versions/1/2/infer"),
            (post.clone(), "/v2/models/a/ready"),
            (post.clone(), "/v2/models/infer"),
        ] {
            assert_eq!(infer_route(&method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn connections_waiting_to_be_accepted_at_shutdown_are_answered_not_reset() {
        use std::io::{Read, Write};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // Clients whose connections wait in the listen backlog, their
            // requests sent, when the shutdown comes.
            let clients: Vec<std::net::TcpStream> = (0..8)
                .map(|_| {
                    let mut client = std::net::TcpStream::connect(addr).unwrap();
                    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    client.write_all(b"GET /live HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    client
                })
                .collect();
            // And one that sends nothing: it holds the shutdown only briefly.
            let mut silent = std::net::TcpStream::connect(addr).unwrap();
            silent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let (stop_tx, stop_rx) = watch::channel(false);
            stop_tx.send(true).unwrap();
            let router = Router::new().route("/live", axum::routing::get(|| async { "live" }));
            let served = serve(listener, router, None, Duration::from_secs(60), stop_rx);
            let start = std::time::Instant::now();
            tokio::time::timeout(Duration::from_secs(30), served).await.expect("the server did not stop");
            // (The grace is 1 s; far less than the header timeout of 60 s.)
            assert!(start.elapsed() < Duration::from_secs(20), "a silent connection held the shutdown");
            for (i, mut client) in clients.into_iter().enumerate() {
                let mut answer = String::new();
                let read = client.read_to_string(&mut answer);
                assert!(
                    read.is_ok() && answer.starts_with("HTTP/1.1 200") && answer.ends_with("live"),
                    "client {i}, waiting to be accepted at shutdown, got {read:?}: {answer:?}"
                );
            }
            assert_eq!(silent.read(&mut [0; 16]).ok(), Some(0), "the silent connection was not closed");
        });
    }
}
