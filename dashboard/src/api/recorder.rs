//! `GET /api/v1/recorder`: the Kubernetes recorder's health — buffer depth, facts recorded and
//! dropped, gap markers written, store failures and each watch's state — so an operator can
//! tell whether history is complete. `{"running": false}` when the dashboard runs without one
//! (`--simulate`, or PostgreSQL history only).

use actix_web::{HttpResponse, web};

use crate::startup::AppState;

async fn status(state: web::Data<AppState>) -> HttpResponse {
    let body = match &state.recorder {
        Some(recorder) => match serde_json::to_value(recorder.status()) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.insert("running".to_owned(), serde_json::Value::Bool(true));
                serde_json::Value::Object(fields)
            }
            _ => serde_json::json!({"running": true}),
        },
        None => serde_json::json!({
            "running": false,
            "message": "this dashboard records no cluster; start it with `gpufleet dashboard --kubernetes`",
        }),
    };
    HttpResponse::Ok().json(body)
}

/// Registers the route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/recorder", web::get().to(status));
}
