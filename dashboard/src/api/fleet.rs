//! `/api/v1/fleet…`: nodes, GPUs, live telemetry, health and stranded capacity.

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError, web};

use super::error_body;
use crate::fleet::stranded;
use crate::startup::AppState;

/// Errors of the fleet routes.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No node of that name.
    #[error("no node `{0}` in the fleet; GET /api/v1/fleet lists the nodes")]
    UnknownNode(String),
    /// No GPU of that UUID.
    #[error("no GPU `{0}` in the fleet; GET /api/v1/fleet lists every GPU's uuid")]
    UnknownGpu(String),
}

impl ResponseError for FleetError {
    fn status_code(&self) -> StatusCode {
        StatusCode::NOT_FOUND
    }

    fn error_response(&self) -> HttpResponse {
        error_body(self.status_code(), "not-found", &self.to_string())
    }
}

/// The whole fleet, pre-serialised once per tick.
async fn fleet(state: web::Data<AppState>) -> HttpResponse {
    let current = state.live.current();
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(current.fleet_json.clone())
}

async fn node(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, FleetError> {
    let current = state.live.current();
    let name = name.into_inner();
    let node = current
        .fleet
        .node(&name)
        .ok_or_else(|| FleetError::UnknownNode(name.clone()))?;
    Ok(HttpResponse::Ok().json(node))
}

async fn gpu(
    state: web::Data<AppState>,
    uuid: web::Path<String>,
) -> Result<HttpResponse, FleetError> {
    let current = state.live.current();
    let uuid = uuid.into_inner();
    let gpu = current
        .fleet
        .gpus()
        .find(|gpu| gpu.uuid == uuid)
        .ok_or_else(|| FleetError::UnknownGpu(uuid.clone()))?;
    Ok(HttpResponse::Ok().json(gpu))
}

async fn stranded_capacity(state: web::Data<AppState>) -> HttpResponse {
    let current = state.live.current();
    HttpResponse::Ok().json(stranded(&current.fleet))
}

/// Registers the fleet routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/fleet", web::get().to(fleet))
        .route("/fleet/stranded", web::get().to(stranded_capacity))
        .route("/fleet/nodes/{name}", web::get().to(node))
        .route("/fleet/gpus/{uuid}", web::get().to(gpu));
}
