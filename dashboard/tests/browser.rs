//! Browser tests: Debian's Chromium, headless, against the dashboard on a port-0 listener with
//! a scripted fleet. Screenshots go to `$CARGO_TARGET_TMPDIR/dashboard-browser/` (under the
//! target directory, never committed).
//!
//! The page is loaded with `?streamSeconds=N` so each server-sent-event stream ends after N
//! seconds and reconnects: headless Chromium's virtual time waits while a request is open, and
//! would otherwise wait for ever on the stream.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `GPUFLEET_CHROMIUM`): `bash tests/run-all.sh`
//! installs it.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message, like the tests themselves"
)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Script, deployment, gpu_uuid};
use gpufleet_dashboard::auth::Token;
use gpufleet_dashboard::store::memory::MemoryStore;
use gpufleet_dashboard::{Application, Settings};

const TOKEN: &str = "browser-test-token-0123456789";

fn chromium() -> PathBuf {
    std::env::var_os("GPUFLEET_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

/// Starts the dashboard with a background feed loop on its own thread and runtime.
fn start(script: &Script, token: Option<&str>) -> SocketAddr {
    let (sender, receiver) = std::sync::mpsc::channel();
    let feed = script.feed();
    let token = token.map(|token| Token::new(token).expect("token"));
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let settings = Settings {
                bind: "127.0.0.1:0".parse().expect("address"),
                token,
                tick: Duration::from_millis(250),
                workers: 2,
                ..Settings::default()
            };
            let app = Application::build(settings, Arc::new(MemoryStore::default()), Some(feed))
                .await
                .expect("build the dashboard");
            sender.send(app.address()).expect("hand over the address");
            app.run_until_stopped().await.expect("serve");
        });
    });
    receiver.recv().expect("the dashboard started")
}

fn browser(extra: &[String], url: &str) -> Command {
    static PROFILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let profile = output_dir().join(format!(
        "profile-{}-{}",
        std::process::id(),
        PROFILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

fn dump_dom(url: &str, budget_ms: u32) -> std::process::Child {
    browser(
        &[
            format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom".to_owned(),
        ],
        url,
    )
    .spawn()
    .expect("start chromium (apt-get install chromium, or set GPUFLEET_CHROMIUM)")
}

fn screenshot(url: &str, name: &str, budget_ms: u32) -> PathBuf {
    let path = output_dir().join(name);
    let output: Output = browser(
        &[
            format!("--virtual-time-budget={budget_ms}"),
            format!("--screenshot={}", path.display()),
        ],
        url,
    )
    .output()
    .expect("run chromium");
    assert!(output.status.success(), "chromium failed taking {name}");
    assert!(
        std::fs::metadata(&path).is_ok_and(|meta| meta.len() > 10_000),
        "no screenshot at {}",
        path.display()
    );
    path
}

fn subscribers(address: SocketAddr) -> u64 {
    common::http(address, "GET", "/healthz", &[], "")
        .ok()
        .and_then(|response| serde_json::from_str::<serde_json::Value>(&response.body).ok())
        .and_then(|body| body["subscribers"].as_u64())
        .unwrap_or(0)
}

/// The opening tag of the element carrying `attribute`.
fn tag_with<'a>(dom: &'a str, attribute: &str) -> Option<&'a str> {
    let at = dom.find(attribute)?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

#[test]
#[ignore = "needs Chromium: run `bash tests/run-all.sh` (installs Debian's chromium)"]
fn the_fleet_heatmap_shows_every_gpu_and_a_gpu_turning_unhealthy_live() {
    let script = Script::new(6, 8);
    let address = start(&script, None);
    let page = format!("http://{address}/?streamSeconds=3#fleet");
    let browser = dump_dom(&page, 12_000);

    // Break the GPU only once the page is subscribed: the fleet it drew was read before, so the
    // change can only reach it through the stream.
    gpufleet_test_support::wait_until_blocking(
        Duration::from_secs(120),
        "the page to open /api/v1/events",
        || {
            Ok(gpufleet_test_support::Seen::done_if(
                subscribers(address) > 0,
                || "no subscriber".to_owned(),
            ))
        },
    )
    .expect("the page subscribes");
    script.break_gpu(2, 5);
    let output = browser.wait_with_output().expect("chromium");
    let dom = String::from_utf8_lossy(&output.stdout);

    // The heatmap is one canvas; it counts what it painted, and lists by name every GPU it
    // painted as not Healthy.
    let heatmap = tag_with(&dom, "id=\"heatmap\"").expect("the heatmap canvas");
    assert!(
        heatmap.contains("data-gpus=\"48\""),
        "one cell per GPU: {heatmap}"
    );
    assert!(
        heatmap.contains("data-nodes=\"6\""),
        "one box per node: {heatmap}"
    );
    assert!(
        heatmap.contains("data-unhealthy=\"1\"") && heatmap.contains("data-healthy=\"47\""),
        "the broken GPU repainted live, and only it: {heatmap}"
    );
    let broken = tag_with(&dom, &format!("data-uuid=\"{}\"", gpu_uuid(2, 5)))
        .expect("the broken GPU listed under needs attention");
    assert!(broken.contains("data-health=\"Unhealthy\""), "{broken}");
    assert!(
        tag_with(&dom, &format!("data-uuid=\"{}\"", gpu_uuid(2, 4))).is_none(),
        "a healthy neighbour is not listed"
    );
    assert!(
        dom.contains("data-reason=\"GpuUnhealthy\""),
        "the event arrived in the events panel"
    );
    let updates = tag_with(&dom, "data-live-updates=").expect("live updates counted");
    assert!(!updates.contains("data-live-updates=\"0\""), "{updates}");

    let shot = screenshot(
        &format!("http://{address}/?streamSeconds=1#fleet"),
        "fleet.png",
        3_000,
    );
    eprintln!("screenshot: {}", shot.display());
}

#[test]
#[ignore = "needs Chromium: run `bash tests/run-all.sh` (installs Debian's chromium)"]
fn the_planner_page_submits_a_scenario_and_draws_its_charts() {
    let script = Script::new(2, 4);
    script.set_deployments(vec![deployment("llama", 2, 40_000)]);
    let address = start(&script, Some(TOKEN));
    let page = format!(
        "http://{address}/?streamSeconds=1#planner?scenario=deepseek-shock&electricityUsdPerKwh=0.3&run=1&token={TOKEN}"
    );
    let output = dump_dom(&page, 30_000)
        .wait_with_output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        !dom.contains("id=\"planner-error\""),
        "the run failed: {}",
        &dom[dom.find("planner-error").unwrap_or(0)..]
            .chars()
            .take(400)
            .collect::<String>()
    );
    let summary = tag_with(&dom, "id=\"planner-summary\"")
        .unwrap_or_else(|| panic!("no run summary in {dom}"));
    assert!(summary.contains("data-run=\"1\""), "{summary}");
    let chart_at = dom
        .find("id=\"planner-chart\"")
        .expect("the spend chart container");
    assert!(
        dom[chart_at..].contains("data-series=\"capex-gpus\""),
        "the spend split is drawn"
    );
    let comparison_at = dom
        .find("id=\"comparison-chart\"")
        .expect("the comparison chart");
    assert!(dom[comparison_at..].contains("data-series=\"energy\""));
    assert!(
        dom.contains("href=\"/api/v1/planner/runs/1/plan.csv\""),
        "a CSV download link"
    );

    // The stored run is what the page showed.
    let run = common::http(address, "GET", "/api/v1/planner/runs/1", &[], "").expect("run");
    let run: serde_json::Value = serde_json::from_str(&run.body).expect("json");
    assert_eq!(run["scenario"], "deepseek-shock");
    assert_eq!(run["parameters"]["electricityUsdPerKwh"], 0.3);

    let shot = screenshot(
        &format!("http://{address}/?streamSeconds=1#planner?show=1"),
        "planner.png",
        4_000,
    );
    eprintln!("screenshot: {}", shot.display());
    screenshot(
        &format!("http://{address}/?streamSeconds=1#deployments"),
        "deployments.png",
        4_000,
    );
}

#[test]
#[ignore = "needs Chromium: run `bash tests/run-all.sh` (installs Debian's chromium)"]
fn the_deployments_page_says_who_placed_the_replicas_and_shows_the_operators_conditions() {
    use std::collections::BTreeMap;

    use gpufleet_api::InferenceDeploymentStatus;
    use gpufleet_api::inference_deployment::ReplicaPlacement;
    use gpufleet_dashboard::placement::PlacementSource;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    // --simulate: the dashboard's own what-if placement.
    let what_if = Script::new(2, 4);
    what_if.set_deployments(vec![deployment("llama", 2, 40_000)]);
    let address = start(&what_if, None);
    let output = dump_dom(
        &format!("http://{address}/?streamSeconds=1#deployments"),
        4_000,
    )
    .wait_with_output()
    .expect("chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    let card = tag_with(&dom, "data-deployment=\"default/llama\"").expect("the llama card");
    assert!(card.contains("data-placement-source=\"whatIf\""), "{card}");
    assert!(dom.contains("what-if placement by the dashboard"));
    assert!(!dom.contains("placed by the operator"));

    // --kubernetes: the operator's status, conditions and unplaced reason.
    let cluster = Script::new(2, 4);
    cluster.set_placement_source(PlacementSource::Operator);
    let mut served = deployment("served", 3, 40_000);
    let since = Time(Timestamp::from_millisecond(1_700_000_000_000).expect("valid time"));
    let condition = |kind: &str, status: &str, reason: &str, message: &str| Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: None,
        last_transition_time: since.clone(),
    };
    served.status = Some(InferenceDeploymentStatus {
        replicas: 2,
        ready_replicas: 2,
        unplaced_replicas: 1,
        conditions: vec![
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "2 of 3 replicas Ready (at least 2 required)",
            ),
            condition(
                "Progressing",
                "True",
                "ReplicasUpdating",
                "2 replicas exist, 2 Ready, 3 wanted",
            ),
            condition(
                "Degraded",
                "True",
                "ReplicasUnplaceable",
                "1 replicas cannot be placed: 0/2 nodes are available: 2 insufficient GPU memory.",
            ),
        ],
        placements: vec![
            ReplicaPlacement {
                pod: "served-r0".to_owned(),
                node: common::node_name(1),
                gpu_uuids: vec![gpu_uuid(1, 3)],
                score: Some(0.5),
                score_breakdown: BTreeMap::from([("strategy".to_owned(), 0.5)]),
            },
            ReplicaPlacement {
                pod: "served-r1".to_owned(),
                node: common::node_name(0),
                gpu_uuids: vec![gpu_uuid(0, 2)],
                score: Some(0.25),
                score_breakdown: BTreeMap::from([("strategy".to_owned(), 0.25)]),
            },
        ],
        ..InferenceDeploymentStatus::default()
    });
    cluster.set_deployments(vec![served]);
    let address = start(&cluster, None);
    let page = format!("http://{address}/?streamSeconds=1#deployments");
    let output = dump_dom(&page, 4_000).wait_with_output().expect("chromium");
    let dom = String::from_utf8_lossy(&output.stdout);
    let card = tag_with(&dom, "data-deployment=\"default/served\"").expect("the served card");
    assert!(
        card.contains("data-placement-source=\"operator\""),
        "{card}"
    );
    assert!(dom.contains("placed by the operator"));
    assert!(!dom.contains("what-if placement by the dashboard"));
    assert!(dom.contains("served-r0") && dom.contains("served-r1"));
    assert!(
        dom.contains("2/3 placed · 2 Ready"),
        "counts from the status"
    );
    let degraded = tag_with(&dom, "data-condition=\"Degraded\"").expect("the Degraded condition");
    assert!(degraded.contains("bad"), "{degraded}");
    assert!(
        dom.contains("2 insufficient GPU memory"),
        "the condition's message"
    );
    assert!(
        dom.contains("1 unplaced: 0/2 nodes are available: 2 insufficient GPU memory."),
        "the unplaced count and reason"
    );
    screenshot(&page, "deployments-operator.png", 3_000);
}
