//! The agent's HTTP endpoint: `/metrics` (Prometheus), `/healthz` (the process answers) and
//! `/readyz` (a first sample was taken).
//!
//! A deliberately small HTTP/1.1 server on one thread of the standard library: the only clients
//! are a scraper every 15–30 s and kubelet probes, and the agent must stay under 20 MiB of RSS
//! and 1% of a core on every GPU node. Each connection gets one response and is closed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::metrics::{CONTENT_TYPE, NodeView, render};
use crate::{Error, Result};

/// What the server serves from: the agent's shared view of its node.
pub type SharedView = Arc<Mutex<NodeView>>;

/// A running metrics server.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` (port 0 picks a free port) and serves `view` on a background thread.
    pub fn start(address: SocketAddr, view: SharedView) -> Result<Self> {
        let listener =
            TcpListener::bind(address).map_err(|source| Error::BindMetrics { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| Error::BindMetrics { address, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| Error::BindMetrics { address, source })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("gpufleet-metrics".to_owned())
            .spawn(move || serve(&listener, &view, &thread_stop))
            .map_err(|source| Error::BindMetrics { address, source })?;
        Ok(Self {
            address,
            stop,
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
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, view: &SharedView, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A client that misbehaves only loses its own response.
                let _ = answer(stream, view);
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The response to a request path: status line, content type and body.
pub fn respond(method: &str, path: &str, view: &NodeView) -> (&'static str, &'static str, String) {
    let path = path.split('?').next().unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        );
    }
    match path {
        "/metrics" => ("200 OK", CONTENT_TYPE, render(view)),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            if view.sample.is_some() {
                ("200 OK", "text/plain", "ready\n".to_owned())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "no sample yet\n".to_owned(),
                )
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

fn answer(stream: TcpStream, view: &SharedView) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read and ignore the headers up to the blank line.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let (status, content_type, body) = {
        let view = view.lock().unwrap_or_else(PoisonError::into_inner);
        respond(&method, &path, &view)
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::reading::NodeSample;

    fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(address)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    #[test]
    fn serves_metrics_health_and_readiness() -> Result<(), Box<dyn std::error::Error>> {
        let view: SharedView = Arc::new(Mutex::new(NodeView {
            hostname: "node-a".to_owned(),
            ..NodeView::default()
        }));
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
        let (status, _, _) = respond("POST", "/metrics", &NodeView::default());
        assert!(status.starts_with("405"));
    }
}
