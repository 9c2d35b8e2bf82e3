//! The web UI: one HTML page, one script, one stylesheet and an icon, compiled into the binary
//! (no CDN, no build step). The script reads the API and the SSE stream; see
//! `dashboard/assets/app.js` for the pages (fleet heatmap, stranded capacity, deployments,
//! history, planner).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");
const ICON: &str = include_str!("../assets/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

async fn icon() -> HttpResponse {
    asset("image/svg+xml", ICON)
}

/// Registers the page and its assets.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(index))
        .route("/assets/app.js", web::get().to(script))
        .route("/assets/style.css", web::get().to(style))
        .route("/favicon.svg", web::get().to(icon));
}
