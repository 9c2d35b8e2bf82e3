//! A real Prometheus (Debian's `prometheus` package) scrapes the agent's `/metrics` and stores
//! the DCGM series under dcgm-exporter's names and labels. Skipped, with a note, when the
//! `prometheus` binary is not installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpufleet_agent::fault::parse_script;
use gpufleet_agent::health::HealthPolicy;
use gpufleet_agent::preset;
use gpufleet_agent::sampler::Sampler;
use gpufleet_agent::server::MetricsServer;
use gpufleet_agent::simulated::{SimulatedSource, SimulationClock};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Kills the Prometheus this test started when the test ends, passing or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn prometheus_scrapes_and_stores_the_dcgm_series() -> TestResult {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prometheus not found (apt-get install prometheus)");
        return Ok(());
    }
    let source = SimulatedSource::new(
        preset::dgx_h100(),
        "prom-node",
        parse_script("xid:79@gpu3@t=0s")?,
        SimulationClock::wall(),
    );
    let mut sampler = Sampler::new(Box::new(source), "prom-node", HealthPolicy::default());
    sampler.sample_once();
    sampler.wait_until(Instant::now() + Duration::from_millis(10));
    let server = MetricsServer::start("127.0.0.1:0".parse()?, sampler.view())?;

    let directory =
        std::env::temp_dir().join(format!("gpufleet-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let config = directory.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gpufleet-agent\n    static_configs:\n      - targets: ['{}']\n",
            server.address()
        ),
    )?;
    let port = free_port()?;
    let prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                directory.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let api: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(response) = get(api, "/api/v1/query?query=DCGM_FI_DEV_FB_FREE") else {
            continue;
        };
        // Seven GPUs answer; GPU 3 fell off the bus and has no series.
        if response
            .matches("\"__name__\":\"DCGM_FI_DEV_FB_FREE\"")
            .count()
            == 7
        {
            assert!(
                response.contains("\"modelName\":\"NVIDIA H100 80GB HBM3\""),
                "{response}"
            );
            assert!(
                response.contains("\"Hostname\":\"prom-node\""),
                "{response}"
            );
            assert!(!response.contains("\"gpu\":\"3\""), "{response}");
            let xid = get(api, "/api/v1/query?query=DCGM_FI_DEV_XID_ERRORS")?;
            assert!(
                xid.contains("\"gpu\":\"3\"") && xid.contains("\"79\"]"),
                "{xid}"
            );
            drop(prometheus);
            let _ = std::fs::remove_dir_all(&directory);
            return Ok(());
        }
        last = response;
    }
    Err(
        format!("Prometheus did not store the DCGM series within 120 s; last answer: {last}")
            .into(),
    )
}
