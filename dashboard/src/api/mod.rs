//! The REST API under `/api/v1` (JSON), the SSE stream and `/healthz`.
//!
//! Each route group has its own error enum implementing `ResponseError`; every error body is
//! `{"error": "<code>", "message": "<what to fix>"}`. Malformed queries, paths and bodies get
//! the same shape through the extractor configs below; an unknown `/api/v1` path points at the
//! OpenAPI document.

pub mod deployments;
pub mod events;
pub mod fleet;
pub mod history;
pub mod planner;
pub mod recorder;

use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::startup::AppState;
use crate::store::StoreError;

/// The JSON body of every error.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// An error response with the common body.
#[must_use]
pub fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        error: code,
        message,
    })
}

/// The store failing is the server's problem, never the caller's.
pub(crate) fn store_error_response(error: &StoreError) -> HttpResponse {
    tracing::error!(%error, "store failure");
    error_body(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        &format!("history storage failed: {error}; retry later"),
    )
}

/// JSON bodies: size limit and JSON errors.
#[must_use]
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _| {
            let (status, message) = match &error {
                JsonPayloadError::OverflowKnownLength { length, limit } => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body has {length} bytes, above the limit of {limit}; send a smaller scenario"),
                ),
                JsonPayloadError::Overflow { limit } => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is above the limit of {limit} bytes; send a smaller scenario"),
                ),
                JsonPayloadError::ContentType => (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send the body as JSON with `Content-Type: application/json`".to_owned(),
                ),
                other => (
                    StatusCode::BAD_REQUEST,
                    format!("the body is not the JSON this endpoint takes: {other}; see /api/v1/openapi.json"),
                ),
            };
            let response = error_body(status, "invalid-body", &message);
            InternalError::from_response(error, response).into()
        })
}

/// Query strings: parameter errors.
#[must_use]
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _| {
        let message = format!("{error}; see /api/v1/openapi.json for the parameters");
        let response = error_body(StatusCode::BAD_REQUEST, "invalid-query", &message);
        InternalError::from_response(error, response).into()
    })
}

/// Path segments: parse errors.
#[must_use]
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error, _| {
        let message = format!("{error}; see /api/v1/openapi.json for the paths");
        let response = error_body(StatusCode::NOT_FOUND, "invalid-path", &message);
        InternalError::from_response(error, response).into()
    })
}

async fn not_found() -> HttpResponse {
    error_body(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint; the API is described at /api/v1/openapi.json",
    )
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}

/// How long `/healthz` waits for the store. A probe must be answered quickly whatever the
/// database does: with PostgreSQL down, the pool's acquire timeout (5 s) would outlast the
/// probe's and kubelet would kill a dashboard that serves everything else fine.
const STORE_PING_BUDGET: std::time::Duration = std::time::Duration::from_millis(80);

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store = match tokio::time::timeout(STORE_PING_BUDGET, state.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(_) => Some(format!(
            "no answer within {} ms",
            STORE_PING_BUDGET.as_millis()
        )),
    };
    let body = serde_json::json!({
        "status": if store.is_none() { "ok" } else { "degraded" },
        "store": state.store.kind(),
        "storeError": store,
        "live": state.live.counter_values(),
        "subscribers": state.live.subscribers(),
        "gpus": state.live.current().fleet.totals.gpus,
    });
    HttpResponse::Ok().json(body)
}

/// Registers `/healthz` and everything under `/api/v1`.
pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/healthz", web::get().to(healthz)).service(
        web::scope("/api/v1")
            .route("/openapi.json", web::get().to(openapi))
            .route("/events", web::get().to(events::stream))
            .configure(fleet::routes)
            .configure(deployments::routes)
            .configure(history::routes)
            .configure(planner::routes)
            .configure(recorder::routes)
            .default_service(web::to(not_found)),
    );
}
