//! API tests against the real app (every route, the shared `configure`) with the in-memory
//! store and a scripted feed: no services needed.

#![allow(
    clippy::expect_used,
    reason = "test helpers fail the test with a message, like the tests themselves"
)]

mod common;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, test};
use common::{Script, deployment, gpu_uuid, node_name};
use gpufleet_dashboard::auth::Token;
use gpufleet_dashboard::live::{FeedLoop, LiveFleet, Maintenance};
use gpufleet_dashboard::startup::{AppState, configure, security_headers};
use gpufleet_dashboard::store::Store;
use gpufleet_dashboard::store::memory::MemoryStore;
use gpufleet_dashboard::{Application, Settings};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

struct Harness {
    state: AppState,
    feed: FeedLoop,
    script: Script,
}

fn harness(token: Option<&str>) -> Harness {
    let script = Script::new(4, 8);
    script.set_deployments(vec![deployment("llama", 3, 40_000)]);
    let live = Arc::new(LiveFleet::new());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let settings = Settings {
        token: token.map(|token| Token::new(token).expect("token")),
        ..Settings::default()
    };
    let feed = FeedLoop::new(
        script.feed(),
        Arc::clone(&live),
        Arc::clone(&store),
        Maintenance::default(),
    );
    Harness {
        state: AppState::new(live, store, settings),
        feed,
        script,
    }
}

macro_rules! service {
    ($harness:expr) => {
        test::init_service(
            App::new()
                .wrap(security_headers())
                .configure(configure($harness.state.clone())),
        )
        .await
    };
}

async fn json(response: actix_web::dev::ServiceResponse) -> Value {
    let bytes = test::read_body(response).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", String::from_utf8_lossy(&bytes)))
}

#[actix_web::test]
async fn fleet_lists_every_gpu_with_security_headers() {
    let harness = harness(None);
    harness.feed.tick().await;
    let app = service!(harness);
    let response = test::call_service(
        &app,
        test::TestRequest::get().uri("/api/v1/fleet").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    for header in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(headers.contains_key(header), "missing {header}");
    }
    let fleet = json(response).await;
    assert_eq!(fleet["totals"]["gpus"], 32);
    assert_eq!(fleet["nodes"].as_array().map(Vec::len), Some(4));
    assert_eq!(fleet["nodes"][0]["gpus"][3]["uuid"], gpu_uuid(0, 3));

    let node = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/fleet/nodes/{}", node_name(2)))
            .to_request(),
    )
    .await;
    assert_eq!(json(node).await["gpus"].as_array().map(Vec::len), Some(8));
    let missing = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/fleet/gpus/GPU-nope")
            .to_request(),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body = json(missing).await;
    assert_eq!(body["error"], "not-found");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| message.contains("/api/v1/fleet"))
    );
}

#[actix_web::test]
async fn the_fleet_is_served_gzipped_and_revalidated_by_its_entity_tag() {
    use std::io::Read as _;

    let harness = harness(None);
    harness.feed.tick().await;
    let app = service!(harness);
    let get = |headers: &[(&'static str, &str)]| {
        let mut request = test::TestRequest::get().uri("/api/v1/fleet");
        for (name, value) in headers {
            request = request.insert_header((*name, (*value).to_owned()));
        }
        request.to_request()
    };
    let header = |response: &actix_web::dev::ServiceResponse, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };

    let plain = test::call_service(&app, get(&[])).await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(header(&plain, "content-encoding"), None);
    assert_eq!(header(&plain, "vary").as_deref(), Some("Accept-Encoding"));
    assert_eq!(header(&plain, "cache-control").as_deref(), Some("no-cache"));
    let plain_tag = header(&plain, "etag").expect("an entity tag");
    let plain_body = test::read_body(plain).await;

    let zipped = test::call_service(&app, get(&[("accept-encoding", "gzip, deflate, br")])).await;
    assert_eq!(zipped.status(), StatusCode::OK);
    assert_eq!(header(&zipped, "content-encoding").as_deref(), Some("gzip"));
    let zipped_tag = header(&zipped, "etag").expect("an entity tag");
    assert_ne!(zipped_tag, plain_tag, "each representation has its own tag");
    let compressed = test::read_body(zipped).await;
    assert!(
        compressed.len() * 3 < plain_body.len(),
        "gzip shrinks the fleet"
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_ref())
        .read_to_end(&mut unzipped)
        .expect("valid gzip");
    assert_eq!(
        unzipped,
        plain_body.as_ref(),
        "the same document either way"
    );

    for tag in [&plain_tag, &zipped_tag] {
        let again = test::call_service(
            &app,
            get(&[("accept-encoding", "gzip"), ("if-none-match", tag)]),
        )
        .await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert_eq!(header(&again, "etag").as_deref(), Some(zipped_tag.as_str()));
        assert!(test::read_body(again).await.is_empty());
    }

    // The next tick is a new document: the old tag no longer matches.
    harness.feed.tick().await;
    let changed = test::call_service(&app, get(&[("if-none-match", &plain_tag)])).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(header(&changed, "etag"), Some(plain_tag));
}

#[actix_web::test]
async fn a_broken_gpu_shows_in_health_events_history_and_moves_its_replica() {
    let harness = harness(None);
    harness.feed.tick().await;
    let app = service!(harness);
    let deployments = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/deployments")
                .to_request(),
        )
        .await,
    )
    .await;
    let placed = deployments[0]["placed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(placed.len(), 3);
    // A feed without an operator gets the dashboard's own what-if placement.
    assert_eq!(deployments[0]["placementSource"], "whatIf");
    assert_eq!(deployments[0]["replicas"], 3);
    let victim = &placed[0];
    assert!(victim["score"]["total"].is_number());
    let node: usize = victim["node"]
        .as_str()
        .and_then(|name| name.strip_prefix("node-"))
        .and_then(|n| n.parse().ok())
        .expect("node");
    let index = u32::try_from(victim["gpus"][0]["index"].as_u64().expect("index")).expect("u32");
    harness.script.break_gpu(node, index);
    harness.feed.tick().await;

    let gpu = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri(&format!("/api/v1/fleet/gpus/{}", gpu_uuid(node, index)))
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(gpu["health"], "Unhealthy");
    let events = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/history/events?limit=50")
                .to_request(),
        )
        .await,
    )
    .await;
    let reasons: Vec<&str> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"GpuUnhealthy"), "{reasons:?}");
    assert!(reasons.contains(&"Moved"), "{reasons:?}");
    let detail = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/deployments/default/llama")
                .to_request(),
        )
        .await,
    )
    .await;
    let moved = detail["deployment"]["placed"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|replica| replica["replica"] == victim["replica"])
        .expect("replica");
    assert_ne!(moved["gpus"][0]["uuid"], gpu_uuid(node, index));
    assert_eq!(
        detail["decisions"].as_array().map(Vec::len),
        Some(4),
        "3 placements and 1 move"
    );

    let history = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri(&format!(
                    "/api/v1/history?gpu={}&metric=health",
                    gpu_uuid(node, index)
                ))
                .to_request(),
        )
        .await,
    )
    .await;
    let points = history["points"].as_array().cloned().unwrap_or_default();
    assert!(!points.is_empty());
    assert_eq!(
        points.last().map(|point| point["max"].clone()),
        Some(serde_json::json!(2.0))
    );
    let stranded = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/fleet/stranded")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(stranded["products"][0]["unhealthyGpus"], 1);
}

#[actix_web::test]
async fn bad_queries_are_refused_with_a_message_naming_the_parameter() {
    let harness = harness(None);
    let app = service!(harness);
    for (uri, needle) in [
        ("/api/v1/history?metric=utilization", "`gpu`"),
        ("/api/v1/history?gpu=x&metric=heat", "`metric`"),
        ("/api/v1/history?gpu=x&from=10&to=5", "`from`"),
        (
            "/api/v1/history?gpu=x&from=0&to=86400000&step=1000",
            "`step`",
        ),
        ("/api/v1/history?gpu=x&from=abc", "invalid"),
        ("/api/v1/history/events?limit=0", "`limit`"),
    ] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        let body = json(response).await;
        let message = body["message"].as_str().unwrap_or_default().to_owned();
        assert!(
            message.to_lowercase().contains(&needle.to_lowercase()),
            "{uri}: {message}"
        );
    }
    let unknown = test::call_service(
        &app,
        test::TestRequest::get().uri("/api/v1/nothing").to_request(),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn planner_runs_need_the_token_and_stay_within_limits() {
    let read_only = harness(None);
    let app = service!(read_only);
    let body = serde_json::json!({"scenario": "baseline"});
    let refused = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .set_json(&body)
            .to_request(),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        json(refused).await["message"]
            .as_str()
            .is_some_and(|message| message.contains("--token-file"))
    );

    let harness = harness(Some(TOKEN));
    let app = service!(harness);
    let unauthorised = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .set_json(&body)
            .to_request(),
    )
    .await;
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    assert!(unauthorised.headers().contains_key("www-authenticate"));
    let wrong = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .insert_header(("Authorization", "Bearer wrong-token-0123456789"))
            .set_json(&body)
            .to_request(),
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let bearer = ("Authorization", format!("Bearer {TOKEN}"));
    let oversized = serde_json::json!({"yaml": "#".repeat(200 * 1024)});
    let too_large = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .insert_header(bearer.clone())
            .set_json(&oversized)
            .to_request(),
    )
    .await;
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(too_large).await["error"], "invalid-body");
    let unknown_field = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .insert_header(bearer.clone())
            .set_json(serde_json::json!({"scenario": "baseline", "budget": 1}))
            .to_request(),
    )
    .await;
    assert_eq!(unknown_field.status(), StatusCode::BAD_REQUEST);
    let unknown_scenario = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .insert_header(bearer.clone())
            .set_json(serde_json::json!({"scenario": "mars"}))
            .to_request(),
    )
    .await;
    assert_eq!(unknown_scenario.status(), StatusCode::BAD_REQUEST);
    assert!(
        json(unknown_scenario).await["message"]
            .as_str()
            .is_some_and(|message| message.contains("deepseek-shock"))
    );

    let run =
        serde_json::json!({"scenario": "baseline", "parameters": {"capexBudgetMusd": 1500.0}});
    let created = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/planner/runs")
            .insert_header(bearer.clone())
            .set_json(&run)
            .to_request(),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created = json(created).await;
    let id = created["id"].as_i64().expect("id");
    assert!(
        created["result"]["chartSvg"]
            .as_str()
            .is_some_and(|svg| svg.contains("data-series=\"capex-gpus\""))
    );
    let comparison = created["result"]["comparison"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(comparison.iter().any(|row| row["id"] == "capexSpent"));
    assert!(
        created["result"]["plan"]["totals"]["capex_spent_musd"]
            .as_f64()
            .is_some()
    );

    let csv = test::call_service(
        &app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/planner/runs/{id}/plan.csv"))
            .to_request(),
    )
    .await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()
            .get("content-disposition")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("attachment"))
    );
    let csv = String::from_utf8_lossy(&test::read_body(csv).await).into_owned();
    assert_eq!(csv.lines().count(), 13, "a header and 12 quarters:\n{csv}");
    let runs = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/planner/runs")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(runs[0]["id"], id);
    assert_eq!(runs[0]["parameters"]["capexBudgetMusd"], 1500.0);
}

#[actix_web::test]
async fn every_documented_get_route_answers() {
    let harness = harness(Some(TOKEN));
    harness.feed.tick().await;
    let app = service!(harness);
    let document = json(
        test::call_service(
            &app,
            test::TestRequest::get()
                .uri("/api/v1/openapi.json")
                .to_request(),
        )
        .await,
    )
    .await;
    assert_eq!(document["openapi"], "3.1.0");
    for (method, path) in gpufleet_dashboard::openapi::ROUTES {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path}"
        );
        if method != "get" || path.contains("{id}") || path == "/api/v1/events" {
            continue;
        }
        let uri = path
            .replace("{name}", &node_name(0))
            .replace("{uuid}", &gpu_uuid(0, 0))
            .replace("{namespace}", "default")
            + if path.ends_with("/history") {
                "?node=node-00"
            } else {
                ""
            };
        let uri = if path.ends_with("{namespace}/{name}") {
            "/api/v1/deployments/default/llama".to_owned()
        } else {
            uri
        };
        let response =
            test::call_service(&app, test::TestRequest::get().uri(&uri).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
    }
    let page = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = String::from_utf8_lossy(&test::read_body(page).await).into_owned();
    assert!(
        html.contains("/assets/app.js") && !html.contains("http://") && !html.contains("https://"),
        "assets are local"
    );
    for asset in ["/assets/app.js", "/assets/style.css", "/favicon.svg"] {
        let response =
            test::call_service(&app, test::TestRequest::get().uri(asset).to_request()).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
}

#[actix_web::test]
async fn the_application_listens_on_port_0_and_streams_changes() {
    let script = Script::new(2, 4);
    let settings = Settings {
        bind: "127.0.0.1:0".parse().expect("address"),
        workers: 1,
        ..Settings::default()
    };
    let app = Application::build(
        settings,
        Arc::new(MemoryStore::default()),
        Some(script.feed()),
    )
    .await
    .expect("build");
    let address = app.address();
    assert_ne!(address.port(), 0);
    let feed = app.feed().cloned().expect("feed");
    actix_web::rt::spawn(app.run_without_ticking());
    let healthz = actix_web::rt::task::spawn_blocking(move || {
        common::http(address, "GET", "/healthz", &[], "")
    })
    .await
    .expect("join")
    .expect("healthz");
    assert_eq!(healthz.status, 200);
    let health: Value = serde_json::from_str(&healthz.body).expect("json");
    assert_eq!(health["gpus"], 8);
    assert_eq!(health["store"], "memory");

    // A bounded stream; the GPU breaks while it is open.
    let stream = actix_web::rt::task::spawn_blocking(move || {
        common::http(address, "GET", "/api/v1/events?seconds=2", &[], "")
    });
    gpufleet_test_support::wait_every(
        std::time::Duration::from_secs(60),
        std::time::Duration::from_millis(20),
        "the event stream's subscriber in /healthz",
        || async {
            let subscribers = feed_subscribers(address).await;
            Ok(gpufleet_test_support::Seen::done_if(
                subscribers >= 1,
                || format!("{subscribers} subscribers"),
            ))
        },
    )
    .await
    .expect("the stream subscribed");
    script.break_gpu(1, 2);
    feed.tick().await;
    let stream = stream.await.expect("join").expect("stream");
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert!(
        stream.body.starts_with("retry: 3000\nevent: hello\n"),
        "{}",
        stream.body
    );
    assert!(
        stream.body.contains("event: telemetry\n"),
        "{}",
        stream.body
    );
    let health_frame = stream
        .body
        .split("\n\n")
        .find(|frame| frame.starts_with("event: health\n"))
        .expect("a health frame");
    assert!(
        health_frame.contains(&gpu_uuid(1, 2)) && health_frame.contains("\"to\":\"Unhealthy\""),
        "{health_frame}"
    );
}

async fn feed_subscribers(address: std::net::SocketAddr) -> u64 {
    let response = actix_web::rt::task::spawn_blocking(move || {
        common::http(address, "GET", "/healthz", &[], "")
    })
    .await
    .expect("join")
    .expect("healthz");
    serde_json::from_str::<Value>(&response.body)
        .ok()
        .and_then(|body| body["subscribers"].as_u64())
        .unwrap_or(0)
}

/// Malformed planner-run bodies, each answered with a 4xx and a JSON message saying what to
/// fix; the dashboard keeps serving afterwards.
#[actix_web::test]
async fn malformed_planner_bodies_get_a_4xx_with_a_message() {
    let harness = harness(Some(TOKEN));
    let app = service!(harness);
    let bearer = ("Authorization", format!("Bearer {TOKEN}"));
    let baseline = gpufleet_planner::library::text("baseline").expect("shipped");
    let cases: Vec<(&str, &str, String, &str)> = vec![
        (
            "truncated JSON",
            "application/json",
            "{\"scenario\": ".to_owned(),
            "",
        ),
        (
            "not JSON",
            "application/json",
            "scenario=baseline".to_owned(),
            "",
        ),
        (
            "a number for the scenario",
            "application/json",
            r#"{"scenario": 5}"#.to_owned(),
            "",
        ),
        (
            "neither source",
            "application/json",
            "{}".to_owned(),
            "scenario",
        ),
        (
            "both sources",
            "application/json",
            serde_json::json!({"scenario": "baseline", "yaml": baseline}).to_string(),
            "scenario",
        ),
        (
            "YAML that is not a scenario",
            "application/json",
            r#"{"yaml": "- a\n- list"}"#.to_owned(),
            "scenario",
        ),
        (
            "a scenario with no periods",
            "application/json",
            serde_json::json!({"yaml": baseline.replace("count: 12", "count: 0")}).to_string(),
            "periods.count",
        ),
        (
            "a negative electricity price",
            "application/json",
            r#"{"scenario": "baseline", "parameters": {"electricityUsdPerKwh": -1}}"#.to_owned(),
            "electricity",
        ),
        (
            "an unknown parameter",
            "application/json",
            r#"{"scenario": "baseline", "parameters": {"gpuDiscount": 0.5}}"#.to_owned(),
            "gpuDiscount",
        ),
        ("a text body", "text/plain", "baseline".to_owned(), ""),
    ];
    for (case, content_type, body, needle) in cases {
        let response = test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/api/v1/planner/runs")
                .insert_header(bearer.clone())
                .insert_header(("Content-Type", content_type))
                .set_payload(body)
                .to_request(),
        )
        .await;
        let status = response.status();
        assert!(status.is_client_error(), "{case}: {status}");
        let body = json(response).await;
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && body["error"].is_string(),
            "{case}: no JSON error: {body}"
        );
        assert!(
            message.contains(needle),
            "{case}: `{message}` does not mention `{needle}`"
        );
    }
    let health =
        test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(health.status(), StatusCode::OK);
}
