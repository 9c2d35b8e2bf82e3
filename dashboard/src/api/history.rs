//! `/api/v1/history…`: telemetry history of a GPU or a node, downsampled to a step, and the
//! recorded fleet events.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Deserialize;

use super::{error_body, store_error_response};
use crate::history::{HistoryQuery, QueryProblem};
use crate::live::unix_millis_now;
use crate::startup::AppState;
use crate::store::StoreError;

/// Errors of the history routes.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The query is malformed.
    #[error(transparent)]
    Query(#[from] QueryProblem),
    /// A limit out of range.
    #[error("`limit` {0} is outside 1–1000")]
    Limit(i64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResponseError for HistoryError {
    fn status_code(&self) -> StatusCode {
        match self {
            HistoryError::Query(_) | HistoryError::Limit(_) => StatusCode::BAD_REQUEST,
            HistoryError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            HistoryError::Store(error) => store_error_response(error),
            other => error_body(other.status_code(), "invalid-query", &other.to_string()),
        }
    }
}

/// Query parameters of `/api/v1/history`.
#[derive(Debug, Deserialize)]
struct HistoryParameters {
    gpu: Option<String>,
    node: Option<String>,
    #[serde(default = "default_metric")]
    metric: String,
    from: Option<i64>,
    to: Option<i64>,
    step: Option<i64>,
}

fn default_metric() -> String {
    "utilization".to_owned()
}

async fn history(
    state: web::Data<AppState>,
    parameters: web::Query<HistoryParameters>,
) -> Result<HttpResponse, HistoryError> {
    let parameters = parameters.into_inner();
    let to = parameters.to.unwrap_or_else(|| unix_millis_now() + 1);
    let from = parameters.from.unwrap_or(to - 15 * 60 * 1000);
    let query = HistoryQuery::new(
        parameters.gpu,
        parameters.node,
        &parameters.metric,
        from,
        to,
        parameters.step,
    )?;
    let points = state.store.history(&query).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "query": query,
        "unit": query.metric.unit(),
        "points": points,
    })))
}

#[derive(Debug, Deserialize)]
struct EventParameters {
    limit: Option<i64>,
}

async fn events(
    state: web::Data<AppState>,
    parameters: web::Query<EventParameters>,
) -> Result<HttpResponse, HistoryError> {
    let limit = parameters.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(HistoryError::Limit(limit));
    }
    Ok(HttpResponse::Ok().json(state.store.events(limit).await?))
}

/// Registers the history routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/history", web::get().to(history))
        .route("/history/events", web::get().to(events));
}
