//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, written by hand next to the
//! routes; a test checks every route in [`ROUTES`] is documented and answers.

use serde_json::{Value, json};

/// Every API route as (method, OpenAPI path).
pub const ROUTES: [(&str, &str); 18] = [
    ("get", "/healthz"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/fleet"),
    ("get", "/api/v1/fleet/stranded"),
    ("get", "/api/v1/fleet/nodes/{name}"),
    ("get", "/api/v1/fleet/gpus/{uuid}"),
    ("get", "/api/v1/deployments"),
    ("get", "/api/v1/deployments/{namespace}/{name}"),
    ("get", "/api/v1/placements"),
    ("get", "/api/v1/history"),
    ("get", "/api/v1/history/events"),
    ("get", "/api/v1/planner/scenarios"),
    ("post", "/api/v1/planner/runs"),
    ("get", "/api/v1/planner/runs/{id}"),
    ("get", "/api/v1/planner/runs/{id}/plan.csv"),
    ("get", "/api/v1/planner/runs/{id}/chart.svg"),
    ("get", "/api/v1/recorder"),
];

fn parameter(
    name: &str,
    location: &str,
    required: bool,
    schema: Value,
    description: &str,
) -> Value {
    json!({"name": name, "in": location, "required": required, "schema": schema, "description": description})
}

fn ok(description: &str, content_type: &str) -> Value {
    json!({
        "200": {"description": description, "content": {content_type: {}}},
        "default": {"$ref": "#/components/responses/Error"}
    })
}

fn limit() -> Value {
    parameter(
        "limit",
        "query",
        false,
        json!({"type": "integer", "minimum": 1}),
        "How many to return.",
    )
}

/// The document.
#[must_use]
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gpufleet dashboard API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Fleet, placements, history and planner runs of a gpufleet fleet. Read-only except POST /api/v1/planner/runs, which needs `Authorization: Bearer <token>`. Times are Unix milliseconds. Errors are {\"error\": code, \"message\": what to fix}."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error with a message saying what to fix.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
                "Parameters": {"type": "object", "additionalProperties": false, "properties": {
                    "capexBudgetMusd": {"type": "number", "description": "Capex budget per period, $M."},
                    "discountRate": {"type": "number"},
                    "electricityUsdPerKwh": {"type": "number"},
                    "mfu": {"type": "number", "description": "Training model-FLOP utilisation."},
                    "demandGrowthScale": {"type": "number", "description": "Multiplies every service's demand growth."}
                }},
                "Deployment": {"type": "object", "required": ["key", "namespace", "name", "desired", "strategy", "need", "placed", "unplaced", "placementSource", "replicas", "unplacedReplicas", "conditions"], "properties": {
                    "key": {"type": "string", "description": "namespace/name."},
                    "namespace": {"type": "string"},
                    "name": {"type": "string"},
                    "desired": {"type": "integer"},
                    "strategy": {"type": "string"},
                    "need": {"type": "string", "description": "What one replica needs, in words."},
                    "placed": {"type": "array", "items": {"type": "object", "properties": {
                        "replica": {"type": "string"},
                        "node": {"type": "string"},
                        "gpus": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": ["integer", "null"]}, "uuid": {"type": "string"}}}},
                        "gpuMilli": {"type": "integer"},
                        "gpuMemoryMiB": {"type": "integer"},
                        "score": {"type": ["object", "null"], "description": "The engine's score breakdown; `total`: lower wins."},
                        "placedAtMs": {"type": ["integer", "null"]}
                    }}},
                    "unplaced": {"type": "array", "items": {"type": "object", "properties": {"replica": {"type": "string"}, "reason": {"type": "string"}}}},
                    "placementSource": {"type": "string", "enum": ["operator", "whatIf"]},
                    "replicas": {"type": "integer", "description": "Replicas that have a place."},
                    "readyReplicas": {"type": ["integer", "null"]},
                    "unplacedReplicas": {"type": "integer"},
                    "unplacedReason": {"type": ["string", "null"]},
                    "conditions": {"type": "array", "items": {"type": "object", "properties": {
                        "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}, "message": {"type": "string"},
                        "lastTransitionMs": {"type": ["integer", "null"]}, "observedGeneration": {"type": ["integer", "null"]}
                    }}},
                    "generation": {"type": ["integer", "null"]},
                    "observedGeneration": {"type": ["integer", "null"]}
                }},
                "RunRequest": {"type": "object", "additionalProperties": false, "description": "Exactly one of scenario or yaml.", "properties": {
                    "scenario": {"type": "string", "description": "A shipped scenario (GET /api/v1/planner/scenarios)."},
                    "yaml": {"type": "string", "maxLength": 65536},
                    "parameters": {"$ref": "#/components/schemas/Parameters"}
                }}
            }
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness, store reachability and feed counters (ticks, store failures, records dropped).", "responses": ok("Health.", "application/json")}},
            "/api/v1/openapi.json": {"get": {"summary": "This document.", "responses": ok("OpenAPI 3.1.", "application/json")}},
            "/api/v1/events": {"get": {"summary": "Server-sent events: telemetry, health, event, placements, resync.", "responses": ok("An endless event stream.", "text/event-stream")}},
            "/api/v1/fleet": {"get": {
                "summary": "Every node and GPU with live telemetry and health, and fleet totals.",
                "description": "Encoded once per tick: sent gzip-compressed to clients that send `Accept-Encoding: gzip` (a ninth of the bytes at 10,000 GPUs), with an `ETag` per representation; `If-None-Match` with a tag of the current tick's document answers 304.",
                "parameters": [
                    parameter("Accept-Encoding", "header", false, json!({"type": "string"}), "`gzip` for a compressed body (`Content-Encoding: gzip`)."),
                    parameter("If-None-Match", "header", false, json!({"type": "string"}), "An `ETag` from an earlier answer: 304 while the fleet is unchanged.")
                ],
                "responses": {
                    "200": {"description": "The fleet.", "headers": {"ETag": {"schema": {"type": "string"}}}, "content": {"application/json": {}}},
                    "304": {"description": "The document named by `If-None-Match` is still current."},
                    "default": {"$ref": "#/components/responses/Error"}
                }
            }},
            "/api/v1/fleet/stranded": {"get": {"summary": "Free and stranded memory and compute per node and product.", "responses": ok("Stranded capacity.", "application/json")}},
            "/api/v1/fleet/nodes/{name}": {"get": {"summary": "One node.", "parameters": [parameter("name", "path", true, json!({"type": "string"}), "Node name.")], "responses": ok("The node.", "application/json")}},
            "/api/v1/fleet/gpus/{uuid}": {"get": {"summary": "One GPU.", "parameters": [parameter("uuid", "path", true, json!({"type": "string"}), "GPU UUID.")], "responses": ok("The GPU.", "application/json")}},
            "/api/v1/deployments": {"get": {
                "summary": "InferenceDeployments with each replica's node, GPUs and score breakdown.",
                "description": "`placementSource` says who placed the replicas: `operator` (`gpufleet dashboard --kubernetes`: the operator's `status`, what really runs; `placed` lists at most 100 replicas, `replicas` counts them all) or `whatIf` (`--simulate`: the dashboard's own engine, nothing runs there). Only the operator reports `readyReplicas`, `conditions` (`Available`, `Progressing`, `Degraded` with reason and message), `generation` and `observedGeneration`; it gives an unplaced count and reason (`unplacedReplicas`, `unplacedReason`) but no names, so `unplaced` (by replica) stays empty. In its placements a GPU's `index` is null when no watched GpuNode lists the UUID, `score` is null when none was reported, `placedAtMs` is null, and `gpuMilli`/`gpuMemoryMiB` are what the current spec asks for.",
                "responses": {
                    "200": {"description": "Deployments.", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}}}}},
                    "default": {"$ref": "#/components/responses/Error"}
                }
            }},
            "/api/v1/deployments/{namespace}/{name}": {"get": {"summary": "One deployment and its placement decisions, newest first.", "parameters": [parameter("namespace", "path", true, json!({"type": "string"}), "Namespace."), parameter("name", "path", true, json!({"type": "string"}), "Name."), limit()], "responses": ok("The deployment.", "application/json")}},
            "/api/v1/recorder": {"get": {"summary": "The Kubernetes recorder (`gpufleet dashboard --kubernetes`): `running`, and when it runs its buffer depth, facts recorded and dropped (by kind), gap markers written, store write failures and each watch's lists, errors and sync state.", "responses": ok("Recorder status.", "application/json")}},
            "/api/v1/placements": {"get": {"summary": "Placement decisions, newest first.", "parameters": [parameter("deployment", "query", false, json!({"type": "string"}), "namespace/name."), limit()], "responses": ok("Decisions.", "application/json")}},
            "/api/v1/history": {"get": {"summary": "A metric of one GPU or node over time, one point (mean, min, max) per step.", "parameters": [
                parameter("gpu", "query", false, json!({"type": "string"}), "GPU UUID (or node)."),
                parameter("node", "query", false, json!({"type": "string"}), "Node name (or gpu)."),
                parameter("metric", "query", false, json!({"type": "string", "enum": ["memoryUsed", "utilization", "temperature", "power", "health"]}), "Default utilization."),
                parameter("from", "query", false, json!({"type": "integer"}), "Start, Unix ms; default 15 minutes before `to`."),
                parameter("to", "query", false, json!({"type": "integer"}), "End, Unix ms; default now."),
                parameter("step", "query", false, json!({"type": "integer", "minimum": 1000}), "Bucket width, ms; at most 5000 points.")
            ], "responses": ok("Points.", "application/json")}},
            "/api/v1/history/events": {"get": {"summary": "Recorded fleet events (health changes, placements), newest first.", "parameters": [limit()], "responses": ok("Events.", "application/json")}},
            "/api/v1/planner/scenarios": {"get": {"summary": "Shipped planning scenarios with their changeable parameters.", "responses": ok("Scenarios.", "application/json")}},
            "/api/v1/planner/runs": {
                "get": {"summary": "Planner runs, newest first.", "parameters": [limit()], "responses": ok("Runs.", "application/json")},
                "post": {"summary": "Solve a scenario with changed parameters (and as written, for comparison). One at a time, time-limited.", "security": [{"bearer": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunRequest"}}}},
                    "responses": {"201": {"description": "The run: plan, comparison, chart SVG."}, "default": {"$ref": "#/components/responses/Error"}}}
            },
            "/api/v1/planner/runs/{id}": {"get": {"summary": "One run with its result.", "parameters": [parameter("id", "path", true, json!({"type": "integer"}), "Run id.")], "responses": ok("The run.", "application/json")}},
            "/api/v1/planner/runs/{id}/plan.csv": {"get": {"summary": "The run's plan, one row per period.", "parameters": [parameter("id", "path", true, json!({"type": "integer"}), "Run id.")], "responses": ok("CSV.", "text/csv")}},
            "/api/v1/planner/runs/{id}/chart.svg": {"get": {"summary": "The run's spend split and GPU-hour chart.", "parameters": [parameter("id", "path", true, json!({"type": "integer"}), "Run id.")], "responses": ok("SVG.", "image/svg+xml")}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_method() {
        let document = document();
        for (method, path) in ROUTES {
            assert!(
                document["paths"][path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
        let documented: usize = document["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .values()
                    .map(|item| item.as_object().map_or(0, serde_json::Map::len))
                    .sum()
            })
            .unwrap_or(0);
        // GET /api/v1/planner/runs is the one documented operation outside ROUTES' path list
        // (it shares its path with the POST).
        assert_eq!(documented, ROUTES.len() + 1);
    }
}
