//! The agent's HTTP endpoint: `/metrics` (Prometheus), `/healthz` (the process answers) and
//! `/readyz` (a first sample was taken).
//!
//! hyper's HTTP/1.1 server on a single-threaded tokio runtime of its own thread. Every
//! connection is its own task, so a client that dribbles its headers, or never reads its
//! answer, holds only its own connection: kubelet's probes and the scraper keep being answered
//! (the one-connection-at-a-time server this replaced left `/healthz` unanswered for 20 s behind
//! one slow client, and read a 200 MB request line into memory). [`Limits`] bounds what one
//! client may cost: header bytes, time to send its headers, time for the whole exchange, and the
//! number of connections open at once. Each connection gets one response and is closed, as
//! Prometheus and kubelet open one per scrape or probe anyway.
//!
//! The agent must stay under 20 MiB of RSS and 1% of a core on every GPU node: one thread, no
//! keep-alive, buffers of a few KiB per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::metrics::{CONTENT_TYPE, NodeView, render};
use crate::{Error, Result};

/// What the server serves from: the agent's shared view of its node.
pub type SharedView = Arc<Mutex<NodeView>>;

/// What one client may cost the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of request line and headers; a longer head is answered 431 and the connection
    /// closed. A probe or a scrape sends a few hundred.
    pub header_bytes: usize,
    /// Time a client has to send its request line and headers.
    pub header_timeout: Duration,
    /// Time for the whole exchange, answer included, so a client that never reads is dropped.
    pub exchange_timeout: Duration,
    /// Connections served at once; one more is closed unanswered. Each costs a task and its
    /// buffers (a few KiB), so the cap bounds memory, not the answer time of the others.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(10),
            max_connections: 128,
        }
    }
}

/// hyper's smallest allowed read buffer; the buffer also holds the head being parsed.
const MIN_READ_BUFFER: usize = 8 * 1024;

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` (port 0 picks a free port) and serves `view` on a background thread
    /// with the default [`Limits`].
    ///
    /// # Errors
    /// [`Error::BindMetrics`] when the address cannot be bound or the thread not started.
    pub fn start(address: SocketAddr, view: SharedView) -> Result<Self> {
        Self::start_with(address, view, Limits::default())
    }

    /// [`MetricsServer::start`] with explicit limits.
    ///
    /// # Errors
    /// [`Error::BindMetrics`] when the address cannot be bound or the thread not started.
    pub fn start_with(address: SocketAddr, view: SharedView, limits: Limits) -> Result<Self> {
        let bind_error = |source| Error::BindMetrics { address, source };
        // Bound here, not on the server thread, so a taken port is the caller's error.
        let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(bind_error)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("gpufleet-metrics".to_owned())
            .spawn(move || runtime.block_on(serve(listener, view, limits, stopped)))
            .map_err(bind_error)?;
        Ok(Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Releases a connection's slot when its task ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(
    listener: std::net::TcpListener,
    view: SharedView,
    limits: Limits,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let open = Arc::new(AtomicUsize::new(0));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.header_bytes.max(MIN_READ_BUFFER))
        .max_header_size(limits.header_bytes)
        .keep_alive(false)
        .title_case_headers(true);
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.fetch_add(1, Ordering::Relaxed) >= limits.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let slot = Slot(Arc::clone(&open));
        let view = Arc::clone(&view);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request| {
                let response = answer(&request, &view);
                async move { Ok::<_, Infallible>(response) }
            }),
        );
        let exchange_timeout = limits.exchange_timeout;
        tokio::spawn(async move {
            // A client that misbehaves only loses its own response.
            let _ = tokio::time::timeout(exchange_timeout, connection).await;
            drop(slot);
        });
    }
}

fn answer(request: &Request<Incoming>, view: &SharedView) -> Response<Full<Bytes>> {
    let (status, content_type, body) = {
        let view = view.lock().unwrap_or_else(PoisonError::into_inner);
        respond(request.method(), request.uri().path(), &view)
    };
    // hyper leaves the body out of a HEAD answer and keeps its Content-Length.
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(content_type));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The response to a request: status, content type and body.
pub fn respond(method: &Method, path: &str, view: &NodeView) -> (StatusCode, &'static str, String) {
    if *method != Method::GET && *method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        );
    }
    match path {
        "/metrics" => (StatusCode::OK, CONTENT_TYPE, render(view)),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            if view.sample.is_some() {
                (StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no sample yet\n".to_owned(),
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;
    use crate::reading::NodeSample;

    fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(address)?;
        // Far above any answer time; it only turns a hang into a failure.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    fn view() -> SharedView {
        Arc::new(Mutex::new(NodeView {
            hostname: "node-a".to_owned(),
            ..NodeView::default()
        }))
    }

    #[test]
    fn serves_metrics_health_and_readiness() -> Result<(), Box<dyn std::error::Error>> {
        let view = view();
        let server = MetricsServer::start("127.0.0.1:0".parse()?, Arc::clone(&view))?;
        let address = server.address();
        assert!(get(address, "/healthz")?.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(get(address, "/readyz")?.starts_with("HTTP/1.1 503"));
        view.lock().map_err(|error| error.to_string())?.sample = Some(NodeSample::default());
        assert!(get(address, "/readyz")?.starts_with("HTTP/1.1 200"));
        let metrics = get(address, "/metrics")?;
        assert!(
            metrics.contains("Content-Type: text/plain; version=0.0.4"),
            "{metrics}"
        );
        assert!(metrics.contains("gpufleet_agent_build_info{"), "{metrics}");
        assert!(get(address, "/nope")?.starts_with("HTTP/1.1 404"));
        Ok(())
    }

    #[test]
    fn only_reads_are_allowed() {
        let (status, _, _) = respond(&Method::POST, "/metrics", &NodeView::default());
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    /// Finding 2 of the hardening issue: 50 clients that dribble their headers hold their
    /// connections, and `/healthz` is answered while every one of them is still connected.
    /// The one-connection-at-a-time server served them in turn, 5 s each.
    #[test]
    fn health_is_answered_while_fifty_slow_clients_hold_connections()
    -> Result<(), Box<dyn std::error::Error>> {
        let limits = Limits {
            // Long enough that no slow client is dropped while the test runs, however busy the
            // machine: the test is about concurrency, not about the timeout.
            header_timeout: Duration::from_secs(300),
            exchange_timeout: Duration::from_secs(300),
            ..Limits::default()
        };
        let server = MetricsServer::start_with("127.0.0.1:0".parse()?, view(), limits)?;
        let mut slow = Vec::new();
        for _ in 0..50 {
            let mut stream = TcpStream::connect(server.address())?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")?;
            slow.push(stream);
        }
        let started = Instant::now();
        let health = get(server.address(), "/healthz")?;
        let took = started.elapsed();
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        eprintln!("/healthz answered in {took:?} beside 50 slow clients");
        for (number, stream) in slow.iter_mut().enumerate() {
            // Still connected and unanswered: a read finds nothing yet, not the end.
            stream.set_nonblocking(true)?;
            let mut byte = [0_u8; 1];
            match stream.read(&mut byte) {
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                other => panic!("slow client {number} was answered or dropped: {other:?}"),
            }
        }
        Ok(())
    }

    /// A request head longer than the limit is refused after a few KiB, not read into memory:
    /// the server closes the connection long before 64 MiB are sent.
    #[test]
    fn an_endless_request_line_is_refused_not_buffered() -> Result<(), Box<dyn std::error::Error>> {
        let server = MetricsServer::start("127.0.0.1:0".parse()?, view())?;
        let mut stream = TcpStream::connect(server.address())?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let chunk = vec![b'A'; 64 * 1024];
        let mut sent = 0_usize;
        let refused = loop {
            if sent >= 64 * 1024 * 1024 {
                break None;
            }
            match stream.write(&chunk) {
                Ok(written) => sent += written,
                Err(error) => break Some(error),
            }
        };
        let refused = refused.ok_or("the server read 64 MiB of one request line")?;
        assert!(
            matches!(
                refused.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
            "the server closed the connection, it did not stall: {refused}"
        );
        // And it keeps serving everyone else.
        assert!(get(server.address(), "/healthz")?.starts_with("HTTP/1.1 200 OK\r\n"));
        Ok(())
    }

    /// Over the connection cap a client is closed unanswered, and once the others are gone a
    /// new one is served again.
    #[test]
    fn connections_over_the_cap_are_closed_and_slots_come_back()
    -> Result<(), Box<dyn std::error::Error>> {
        let limits = Limits {
            header_timeout: Duration::from_secs(300),
            exchange_timeout: Duration::from_secs(300),
            max_connections: 4,
            ..Limits::default()
        };
        let server = MetricsServer::start_with("127.0.0.1:0".parse()?, view(), limits)?;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut stream = TcpStream::connect(server.address())?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\n")?;
            held.push(stream);
        }
        // The fifth is accepted only to be closed: it reads the end, no answer.
        let mut fifth = TcpStream::connect(server.address())?;
        fifth.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut answer = Vec::new();
        let _ = fifth.read_to_end(&mut answer);
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
        drop(held);
        gpufleet_test_support::wait_until_blocking(
            Duration::from_secs(60),
            "a client is served again after the held connections closed",
            || {
                Ok(match get(server.address(), "/healthz") {
                    Ok(answer) => gpufleet_test_support::Seen::done_if(
                        answer.starts_with("HTTP/1.1 200"),
                        || format!("{answer:?}"),
                    ),
                    Err(error) => gpufleet_test_support::Seen::NotYet(error.to_string()),
                })
            },
        )?;
        Ok(())
    }
}
