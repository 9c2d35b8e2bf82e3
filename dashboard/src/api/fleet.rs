//! `/api/v1/fleet…`: nodes, GPUs, live telemetry, health and stranded capacity.

use actix_web::http::StatusCode;
use actix_web::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, ContentType, ETAG, IF_NONE_MATCH, VARY,
};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

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

/// Whether an `Accept-Encoding` value lets us answer in gzip (`gzip`, `x-gzip` or `*` with a
/// non-zero weight; an explicit `gzip;q=0` refuses it even when `*` is accepted).
#[must_use]
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let mut gzip = None;
    let mut any = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let weight = parts
            .filter_map(|parameter| parameter.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, value)| value.trim().parse::<f32>().unwrap_or(0.0));
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(weight > 0.0);
        } else if coding == "*" {
            any = Some(weight > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Whether an `If-None-Match` value names one of `tags` (or is `*`). Weak comparison, as RFC
/// 9110 asks for this header: `W/"x"` matches `"x"`.
#[must_use]
pub fn none_match_hits(if_none_match: &str, tags: &[&str]) -> bool {
    if_none_match.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || tags.contains(&candidate.strip_prefix("W/").unwrap_or(candidate))
    })
}

/// The whole fleet, encoded once per tick ([`crate::live::EncodedDocument`]): `304 Not
/// Modified` when the client already has this tick's document, gzip when it accepts it (a
/// fraction of the bytes: at 10,000 GPUs the route is bound by bytes moved, not by CPU), else
/// the JSON. `no-cache` rather than the default `no-store`, so that clients keep the document
/// and revalidate it with its tag.
async fn fleet(state: web::Data<AppState>, request: HttpRequest) -> HttpResponse {
    let current = state.live.current();
    let document = &current.fleet_document;
    let headers = request.headers();
    let gzip = !document.gzip.is_empty()
        && headers
            .get_all(ACCEPT_ENCODING)
            .filter_map(|value| value.to_str().ok())
            .any(accepts_gzip);
    let (etag, body) = if gzip {
        (&document.gzip_etag, &document.gzip)
    } else {
        (&document.etag, &document.json)
    };
    let tags = [document.etag.as_str(), document.gzip_etag.as_str()];
    let unchanged = headers
        .get_all(IF_NONE_MATCH)
        .filter_map(|value| value.to_str().ok())
        .any(|value| none_match_hits(value, &tags));
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((ETAG, etag.as_str()))
        .insert_header((VARY, "Accept-Encoding"))
        .insert_header((CACHE_CONTROL, "no-cache"));
    if unchanged {
        return response.finish();
    }
    if gzip {
        response.insert_header((CONTENT_ENCODING, "gzip"));
    }
    response
        .content_type(ContentType::json())
        .body(body.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_accepted_by_name_or_wildcard_unless_weighted_zero() {
        assert!(accepts_gzip("gzip, deflate, br, zstd"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts_gzip("x-gzip"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip(""));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("*, gzip; Q=0.000"));
        assert!(!accepts_gzip("gzip;q=nonsense"));
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_wildcards() {
        let tags = ["\"abc\"", "\"abc-gzip\""];
        assert!(none_match_hits("\"abc\"", &tags));
        assert!(none_match_hits("W/\"abc-gzip\"", &tags));
        assert!(none_match_hits("\"old\", \"abc\"", &tags));
        assert!(none_match_hits("*", &tags));
        assert!(!none_match_hits("\"old\"", &tags));
        assert!(!none_match_hits("abc", &tags));
        assert!(!none_match_hits("", &tags));
    }
}
