//! RFC 9457 problem details: every error of the HTTP API v1 is one
//! (`application/problem+json`), with a stable `type` per kind of problem, the HTTP status,
//! and for a bad field its name (`errors[].field`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::protocol::ErrorCode;
use crate::service::ServiceError;

/// A problem, as RFC 9457 describes it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:chat-gateway:problem:<kind>`: what kind of problem, stable across versions.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields that were wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds until a retry may succeed (429, 503): the `Retry-After` header.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// One wrong field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// The query parameter, or the body's field as a path (`to.operator`).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str) -> Problem {
        Problem {
            kind: format!("urn:chat-gateway:problem:{kind}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Problem {
        self.detail = Some(d.into());
        self
    }

    pub fn unauthorized(detail: &str) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Not authenticated",
        )
        .detail(detail)
    }

    pub fn forbidden(detail: &str) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed").detail(detail)
    }

    pub fn not_found(detail: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(detail)
    }

    pub fn conflict(detail: &str) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", "Not possible now").detail(detail)
    }

    pub fn unavailable(detail: &str) -> Problem {
        let mut p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Temporarily unavailable",
        )
        .detail(detail);
        p.retry_after = Some(1);
        p
    }

    pub fn too_many(retry_after: u64) -> Problem {
        let mut p = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
        )
        .detail("this key's rate limit was reached; retry after the time in Retry-After");
        p.retry_after = Some(retry_after.max(1));
        p
    }

    /// 422 naming the wrong fields.
    pub fn invalid(errors: Vec<FieldError>) -> Problem {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "The request has invalid fields",
        )
        .detail(detail);
        p.errors = errors;
        p
    }

    /// 422 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Problem {
        Problem::invalid(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"chat-gateway\""),
            );
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Problem {
        if !matches!(e, ServiceError::Rejected(_)) {
            tracing::warn!(error = %e, "API request failed");
        }
        let (code, message) = e.client_error();
        match code {
            ErrorCode::NotFound => Problem::not_found(message),
            ErrorCode::Unauthorized => Problem::unauthorized(message),
            ErrorCode::Forbidden | ErrorCode::Banned => Problem::forbidden(message),
            ErrorCode::Unavailable => Problem::unavailable(message),
            ErrorCode::RateLimited => Problem::too_many(1),
            ErrorCode::BadRequest | ErrorCode::TooLarge => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "The request has invalid fields",
            )
            .detail(message),
            // Taken, closed, at capacity, already open: the state forbids it now.
            _ => Problem::conflict(message),
        }
    }
}

impl From<crate::archive::ArchiveError> for Problem {
    fn from(e: crate::archive::ArchiveError) -> Problem {
        ServiceError::Archive(e).into()
    }
}
