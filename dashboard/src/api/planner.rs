//! `/api/v1/planner…`: shipped scenarios, planner runs (token required; bounded in size, time
//! and concurrency), their results, CSV and chart.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;

use super::{error_body, store_error_response};
use crate::auth::{self, AuthError};
use crate::live::unix_millis_now;
use crate::planner_run::{self, RunError, RunRequest};
use crate::startup::AppState;
use crate::store::{NewPlannerRun, StoreError};

/// Errors of the planner routes.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    /// Not authorised.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Another run is in progress.
    #[error("a planner run is already in progress; retry in a few seconds")]
    Busy,
    /// The run took longer than allowed.
    #[error(
        "the run took longer than the dashboard's limit of {0} s; shorten the horizon or run it with `gpufleet plan run`"
    )]
    TimedOut(u64),
    /// The request is invalid or the scenario cannot be solved.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The solver thread panicked.
    #[error("the planner failed unexpectedly; the server log has the details")]
    Crashed,
    /// No such run.
    #[error("no planner run {0}; GET /api/v1/planner/runs lists them")]
    UnknownRun(i64),
    /// A limit out of range.
    #[error("`limit` {0} is outside 1–100")]
    Limit(i64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResponseError for PlannerError {
    fn status_code(&self) -> StatusCode {
        match self {
            PlannerError::Auth(error) => error.status_code(),
            PlannerError::Busy => StatusCode::TOO_MANY_REQUESTS,
            PlannerError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            PlannerError::Run(RunError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            PlannerError::Run(RunError::Plan(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            PlannerError::Run(_) | PlannerError::Limit(_) => StatusCode::BAD_REQUEST,
            PlannerError::Crashed => StatusCode::INTERNAL_SERVER_ERROR,
            PlannerError::UnknownRun(_) => StatusCode::NOT_FOUND,
            PlannerError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            PlannerError::Auth(error) => return error.error_response(),
            PlannerError::Store(error) => return store_error_response(error),
            PlannerError::Busy => "busy",
            PlannerError::TimedOut(_) => "timed-out",
            PlannerError::Run(RunError::Plan(_)) => "infeasible-or-unsolved",
            PlannerError::Run(_) => "invalid-scenario",
            PlannerError::Crashed => "internal",
            PlannerError::UnknownRun(_) => "not-found",
            PlannerError::Limit(_) => "invalid-query",
        };
        error_body(self.status_code(), code, &self.to_string())
    }
}

async fn scenarios() -> HttpResponse {
    HttpResponse::Ok().json(planner_run::shipped_scenarios())
}

async fn create_run(
    request: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<RunRequest>,
) -> Result<HttpResponse, PlannerError> {
    auth::require(&request, state.settings.token.as_ref())?;
    let permit = std::sync::Arc::clone(&state.planner_gate)
        .try_acquire_owned()
        .map_err(|_| PlannerError::Busy)?;
    let limits = state.settings.run_limits;
    let run_request = body.into_inner();
    let parameters = serde_json::to_value(run_request.parameters).unwrap_or_default();
    // The permit moves into the blocking task: a run that outlives the time limit keeps the
    // gate closed until it really ends, so timed-out runs cannot pile up.
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        planner_run::solve(&run_request, &limits)
    });
    let result = tokio::time::timeout(limits.time_limit, task)
        .await
        .map_err(|_| PlannerError::TimedOut(limits.time_limit.as_secs()))?
        .map_err(|_| PlannerError::Crashed)??;
    let run = stored_run(&result, parameters, unix_millis_now());
    let id = state.store.record_planner_run(&run).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/planner/runs/{id}")))
        .json(serde_json::json!({
            "id": id,
            "atMs": run.at_ms,
            "scenario": run.scenario,
            "parameters": run.parameters,
            "durationMs": run.duration_ms,
            "result": run.result,
        })))
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn list_runs(
    state: web::Data<AppState>,
    query: web::Query<Limit>,
) -> Result<HttpResponse, PlannerError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(PlannerError::Limit(limit));
    }
    Ok(HttpResponse::Ok().json(state.store.planner_runs(limit).await?))
}

async fn load(state: &AppState, id: i64) -> Result<crate::store::PlannerRunRecord, PlannerError> {
    state
        .store
        .planner_run(id)
        .await?
        .ok_or(PlannerError::UnknownRun(id))
}

async fn get_run(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, PlannerError> {
    Ok(HttpResponse::Ok().json(load(&state, id.into_inner()).await?))
}

async fn get_csv(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, PlannerError> {
    let id = id.into_inner();
    let run = load(&state, id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            CONTENT_DISPOSITION,
            format!("attachment; filename=\"gpufleet-plan-{id}.csv\""),
        ))
        .body(run.csv))
}

async fn get_chart(
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, PlannerError> {
    let run = load(&state, id.into_inner()).await?;
    let svg = run
        .result
        .get("chartSvg")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "image/svg+xml"))
        .body(svg))
}

/// Registers the planner routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/planner/scenarios", web::get().to(scenarios))
        .route("/planner/runs", web::post().to(create_run))
        .route("/planner/runs", web::get().to(list_runs))
        .route("/planner/runs/{id}", web::get().to(get_run))
        .route("/planner/runs/{id}/plan.csv", web::get().to(get_csv))
        .route("/planner/runs/{id}/chart.svg", web::get().to(get_chart));
}

/// What history keeps of a finished run: the plan, its comparison with the scenario as
/// written, its chart and per-period CSV. Shared by the API and `gpufleet demo`, which solves
/// the shipped scenarios at start-up so the planner page has runs to show.
#[must_use]
pub fn stored_run(
    result: &planner_run::RunResult,
    parameters: serde_json::Value,
    at_ms: i64,
) -> NewPlannerRun {
    let comparison = result
        .baseline
        .as_ref()
        .map(|baseline| planner_run::comparison(baseline, &result.plan));
    let chart = gpufleet_planner::chart::plan_chart(&result.plan, None);
    NewPlannerRun {
        at_ms,
        scenario: result.scenario.clone(),
        parameters,
        duration_ms: i64::try_from(result.duration.as_millis()).unwrap_or(i64::MAX),
        result: serde_json::json!({
            "plan": result.plan,
            "comparison": comparison,
            "chartSvg": chart,
        }),
        csv: result.plan.to_csv(),
    }
}
