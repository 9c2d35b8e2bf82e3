//! `/api/v1/deployments…` and `/api/v1/placements`: where each replica sits, why, and the
//! decisions that put it there.

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Deserialize;

use super::{error_body, store_error_response};
use crate::startup::AppState;
use crate::store::StoreError;

/// The most decisions one request returns.
const MAX_LIMIT: i64 = 1_000;

/// Errors of the deployment routes.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// No such deployment.
    #[error("no InferenceDeployment `{0}`; GET /api/v1/deployments lists them")]
    Unknown(String),
    /// A limit out of range.
    #[error("`limit` {0} is outside 1–{MAX_LIMIT}")]
    Limit(i64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResponseError for DeploymentError {
    fn status_code(&self) -> StatusCode {
        match self {
            DeploymentError::Unknown(_) => StatusCode::NOT_FOUND,
            DeploymentError::Limit(_) => StatusCode::BAD_REQUEST,
            DeploymentError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            DeploymentError::Store(error) => store_error_response(error),
            DeploymentError::Unknown(_) => {
                error_body(self.status_code(), "not-found", &self.to_string())
            }
            DeploymentError::Limit(_) => {
                error_body(self.status_code(), "invalid-query", &self.to_string())
            }
        }
    }
}

fn check_limit(limit: Option<i64>) -> Result<i64, DeploymentError> {
    let limit = limit.unwrap_or(100);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(DeploymentError::Limit(limit))
    }
}

async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(state.live.current().deployments_json.clone())
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn one(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, DeploymentError> {
    let (namespace, name) = path.into_inner();
    let key = format!("{namespace}/{name}");
    let limit = check_limit(query.limit)?;
    let current = state.live.current();
    let view = current
        .deployments
        .iter()
        .find(|deployment| deployment.key == key)
        .ok_or_else(|| DeploymentError::Unknown(key.clone()))?;
    let decisions = state.store.placements(Some(&key), limit).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "deployment": view,
        "decisions": decisions,
    })))
}

#[derive(Debug, Deserialize)]
struct PlacementQuery {
    deployment: Option<String>,
    limit: Option<i64>,
}

async fn placements(
    state: web::Data<AppState>,
    query: web::Query<PlacementQuery>,
) -> Result<HttpResponse, DeploymentError> {
    let limit = check_limit(query.limit)?;
    let decisions = state
        .store
        .placements(query.deployment.as_deref(), limit)
        .await?;
    Ok(HttpResponse::Ok().json(decisions))
}

/// Registers the deployment routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/deployments", web::get().to(list))
        .route("/deployments/{namespace}/{name}", web::get().to(one))
        .route("/placements", web::get().to(placements));
}
