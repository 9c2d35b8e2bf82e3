//! `/api/v1/events`: server-sent events of live changes.
//!
//! Frames: `telemetry` (GPUs whose readings changed, with fleet totals), `health` (a GPU's
//! grade changed), `event` (a fleet event as stored), `placements` (a placement round ran),
//! `resync` (nodes or GPUs came or went, or this client fell behind: refetch `/api/v1/fleet`).
//! A comment line every 15 s keeps proxies from closing an idle stream. `?seconds=N` ends the
//! stream after N seconds (the browser's EventSource reconnects by itself): for proxies that cut
//! long responses, and for headless browsers whose virtual time waits for open requests.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{HttpResponse, ResponseError, web};
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::live::unix_millis_now;
use crate::startup::AppState;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Streams served at once; more would let clients exhaust the server's memory.
pub const MAX_SUBSCRIBERS: usize = 512;

/// Errors of the event stream.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Too many streams are open.
    #[error(
        "{MAX_SUBSCRIBERS} event streams are already open; close a dashboard tab or retry later"
    )]
    TooManyStreams,
}

impl ResponseError for EventsError {
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        super::error_body(self.status_code(), "too-many-streams", &self.to_string())
    }
}

/// The longest bounded stream, seconds.
const MAX_SECONDS: u64 = 24 * 3600;

/// Query parameters of the stream.
#[derive(Debug, Deserialize)]
pub struct StreamParameters {
    /// End the stream after this many seconds (1 to a day); absent: never.
    seconds: Option<u64>,
}

/// Streams live changes until the client goes away (or `seconds` pass).
pub async fn stream(
    state: web::Data<AppState>,
    parameters: web::Query<StreamParameters>,
) -> Result<HttpResponse, EventsError> {
    if state.live.subscribers() >= MAX_SUBSCRIBERS {
        return Err(EventsError::TooManyStreams);
    }
    let limit = Duration::from_secs(
        parameters
            .seconds
            .unwrap_or(MAX_SECONDS)
            .clamp(1, MAX_SECONDS),
    );
    let receiver = state.live.subscribe();
    let hello = Bytes::from(format!(
        "retry: 3000\nevent: hello\ndata: {{\"atMs\":{}}}\n\n",
        unix_millis_now()
    ));
    let frames = futures::stream::unfold(
        (receiver, Some(hello)),
        |(mut receiver, first)| async move {
            if let Some(first) = first {
                return Some((Ok::<Bytes, Infallible>(first), (receiver, None)));
            }
            let next = match tokio::time::timeout(KEEP_ALIVE, receiver.recv()).await {
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                Ok(Ok(frame)) => frame,
                Ok(Err(RecvError::Lagged(_))) => Bytes::from(format!(
                    "event: resync\ndata: {{\"atMs\":{}}}\n\n",
                    unix_millis_now()
                )),
                Ok(Err(RecvError::Closed)) => return None,
            };
            Some((Ok(next), (receiver, None)))
        },
    );
    let frames = frames.take_until(tokio::time::sleep(limit));
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames))
}
