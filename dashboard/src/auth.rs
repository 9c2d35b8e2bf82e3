//! Bearer-token authorisation for mutating and expensive endpoints (planner runs).
//!
//! The dashboard is read-only by default: without a configured token those endpoints answer
//! 403 and say how to enable them. With one, a request must carry `Authorization: Bearer
//! <token>`; the comparison takes the same time whatever the first differing byte.

use std::path::Path;

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError};

use crate::api::error_body;

/// The shortest token accepted, so a guessable one is refused at start-up.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// A configured bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Token(…)")
    }
}

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("could not read the token file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is too short.
    #[error(
        "the dashboard token has {length} characters; use at least {MIN_TOKEN_LENGTH} (for example `openssl rand -hex 32`)"
    )]
    TooShort {
        /// Its length.
        length: usize,
    },
}

impl Token {
    /// A token from text (surrounding whitespace removed).
    ///
    /// # Errors
    /// [`TokenError::TooShort`] below [`MIN_TOKEN_LENGTH`] characters.
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_LENGTH {
            return Err(TokenError::TooShort {
                length: token.chars().count(),
            });
        }
        Ok(Self(token.to_owned()))
    }

    /// A token from the first line of a file.
    ///
    /// # Errors
    /// [`TokenError::Read`] or [`TokenError::TooShort`].
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(text.lines().next().unwrap_or_default())
    }

    fn matches(&self, given: &str) -> bool {
        constant_time_equal(self.0.as_bytes(), given.as_bytes())
    }
}

/// Compares without an early exit on the first differing byte.
#[must_use]
pub fn constant_time_equal(expected: &[u8], given: &[u8]) -> bool {
    let mut difference = u8::from(expected.len() != given.len());
    for (position, byte) in expected.iter().enumerate() {
        difference |= byte ^ given.get(position).copied().unwrap_or(!byte);
    }
    difference == 0
}

/// Why a request was not authorised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token is configured: the endpoint is disabled.
    #[error(
        "this endpoint changes state or costs CPU and is disabled: start the dashboard with --token-file FILE or GPUFLEET_DASHBOARD_TOKEN, then send `Authorization: Bearer <token>`"
    )]
    Disabled,
    /// No `Authorization: Bearer` header.
    #[error("send the dashboard token as `Authorization: Bearer <token>`")]
    Missing,
    /// A token that does not match.
    #[error(
        "the bearer token is not the dashboard's; check --token-file or GPUFLEET_DASHBOARD_TOKEN"
    )]
    Invalid,
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::Disabled => StatusCode::FORBIDDEN,
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(self.status_code(), "unauthorised", &self.to_string());
        if self.status_code() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer realm=\"gpufleet\""),
            );
        }
        response
    }
}

/// Checks the request carries the configured token.
///
/// # Errors
/// An [`AuthError`] saying what is missing.
pub fn require(request: &HttpRequest, token: Option<&Token>) -> Result<(), AuthError> {
    let token = token.ok_or(AuthError::Disabled)?;
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(AuthError::Missing)?;
    if token.matches(given.trim()) {
        Ok(())
    } else {
        Err(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn tokens_must_be_long_and_must_match_exactly() {
        assert!(matches!(
            Token::new("short"),
            Err(TokenError::TooShort { length: 5 })
        ));
        let token = Token::new("  0123456789abcdef\n").expect("token");
        let request = |header: Option<&str>| {
            let mut request = TestRequest::default();
            if let Some(header) = header {
                request = request.insert_header((AUTHORIZATION, header));
            }
            request.to_http_request()
        };
        assert_eq!(
            require(&request(Some("Bearer 0123456789abcdef")), Some(&token)),
            Ok(())
        );
        assert_eq!(
            require(&request(Some("Bearer 0123456789abcdeF")), Some(&token)),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            require(&request(Some("Bearer 0123456789abcdef0")), Some(&token)),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            require(&request(Some("Basic abc")), Some(&token)),
            Err(AuthError::Missing)
        );
        assert_eq!(require(&request(None), None), Err(AuthError::Disabled));
        assert!(constant_time_equal(b"", b""));
        assert!(!constant_time_equal(b"a", b""));
        assert!(!constant_time_equal(b"", b"a"));
    }
}
