//! `gpufleet demo` as a user meets it: the binary started with the README's arguments (on a
//! free port), its printed address opened in headless Chromium, and the fleet, the placed
//! deployments and the solved planning scenarios checked on the page and through the API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::support::{browse, http_get, tag_with};

/// A running `gpufleet demo`, killed when dropped; its stdout is collected as it comes.
struct Demo {
    child: Child,
    address: SocketAddr,
    stdout: Arc<Mutex<String>>,
}

impl Demo {
    fn start(nodes: u16) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gpufleet"))
            .args([
                "demo",
                "--bind",
                "127.0.0.1:0",
                "--nodes",
                &nodes.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start gpufleet demo")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let pipe = child.stdout.take().context("demo stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        {
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(url) = line.split("dashboard on http://").nth(1) {
                        let _ = sender.send(url.trim_end_matches('/').to_owned());
                    }
                    if let Ok(mut all) = stdout.lock() {
                        all.push_str(&line);
                        all.push('\n');
                    }
                }
            });
        }
        let address = receiver
            .recv_timeout(Duration::from_secs(60))
            .context("the demo never printed its dashboard address")?
            .parse()
            .context("the printed dashboard address")?;
        Ok(Self {
            child,
            address,
            stdout,
        })
    }

    fn printed(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the demo's stdout contains `text`.
    fn wait_printed(&self, text: &str, within: Duration) -> anyhow::Result<String> {
        gpufleet_test_support::wait_until_blocking(
            within,
            &format!("the demo to print {text:?}"),
            || {
                let printed = self.printed();
                Ok(gpufleet_test_support::Seen::done_if(
                    printed.contains(text),
                    || format!("it printed:\n{printed}"),
                ))
            },
        )?;
        Ok(self.printed())
    }

    /// A GET on the demo's dashboard; the body.
    fn get(&self, path: &str) -> anyhow::Result<String> {
        http_get(self.address, path)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs Chromium: run `bash tests/run-all.sh` (installs Debian's chromium)"]
fn the_demo_serves_the_fleet_its_placements_and_the_solved_scenarios() -> anyhow::Result<()> {
    let demo = Demo::start(12)?;
    let printed = demo.printed();
    // "12 simulated nodes, 84 GPUs; 5 InferenceDeployments, 28 of 28 replicas placed …"
    let gpus: u32 = printed
        .split(" simulated nodes, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("the GPU count in {printed}"))?;
    assert!(printed.contains("InferenceDeployments"), "{printed}");

    let dom = browse(
        &format!("http://{}/?streamSeconds=2#fleet", demo.address),
        6_000,
        "fleet",
    )?;
    let heatmap = tag_with(&dom, "id=\"heatmap\"").context("the heatmap on the fleet page")?;
    assert!(
        heatmap.contains(&format!("data-gpus=\"{gpus}\"")),
        "the heatmap paints the {gpus} GPUs the demo announced: {heatmap}"
    );
    assert!(heatmap.contains("data-nodes=\"12\""), "{heatmap}");

    let deployments = demo.get("/api/v1/deployments")?;
    let deployments: serde_json::Value = serde_json::from_str(&deployments)?;
    let placed = deployments
        .as_array()
        .or_else(|| deployments["deployments"].as_array())
        .context("a deployment list")?
        .iter()
        .filter(|d| d["placed"].as_array().is_some_and(|p| !p.is_empty()))
        .count();
    assert!(
        placed >= 3,
        "the engine placed the demo deployments: {deployments}"
    );

    // The planner solves the shipped scenarios in the background and says how many it stored.
    let printed = demo.wait_printed(
        "Shipped planning scenarios, solved (",
        Duration::from_secs(180),
    )?;
    let stored: usize = printed
        .split("Shipped planning scenarios, solved (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .context("the number of solved scenarios")?;
    assert!(stored >= 5, "{printed}");
    let runs: serde_json::Value = serde_json::from_str(&demo.get("/api/v1/planner/runs")?)?;
    let runs = runs
        .as_array()
        .or_else(|| runs["runs"].as_array())
        .context("a run list")?;
    assert_eq!(
        runs.len(),
        stored,
        "every solved scenario is on the planner page"
    );
    assert!(runs.iter().any(|run| run["scenario"] == "deepseek-shock"));

    let dom = browse(
        &format!("http://{}/?streamSeconds=2#deployments", demo.address),
        6_000,
        "deployments",
    )?;
    assert!(
        dom.contains("llama-3-70b"),
        "the deployments page lists the demo deployments"
    );
    Ok(())
}
