//! `/api/v1/events`: server-sent events of live changes.
//!
//! Frames: `telemetry` (GPUs whose readings changed, with fleet totals), `health` (a GPU's
//! grade changed), `event` (a fleet event as stored), `placements` (a placement round ran),
//! `resync` (nodes or GPUs came or went, or this client fell behind: refetch `/api/v1/fleet`).
//! A comment line every 15 s keeps proxies from closing an idle stream.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use tokio::sync::broadcast::error::RecvError;

use crate::live::unix_millis_now;
use crate::startup::AppState;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Streams live changes until the client goes away.
pub async fn stream(state: web::Data<AppState>) -> HttpResponse {
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
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/event-stream"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames)
}

