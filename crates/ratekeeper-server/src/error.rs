//! Errors as HTTP answers: `{"error": {"code", "message", "field"}}` with a
//! stable code and the status that fits it; `field` names the request field
//! at fault when there is one, so that a form can show the message beside
//! it.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ratekeeper_backend::Error;

use crate::api::{ErrorBody, ErrorDetail};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// The sentence for people.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
}

impl ApiError {
    /// A request that is well-formed JSON but asks for something invalid.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// Something that does not exist.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// An error with the status and code given, about no field in
    /// particular.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The same error, about the request field `field`.
    pub fn in_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// The server is stopping; the client should try again shortly.
    pub fn shutting_down() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry shortly",
        )
    }
}

/// The status of each backend error code.
fn status_of(code: &str) -> StatusCode {
    match code {
        "limit_not_found" => StatusCode::NOT_FOUND,
        "limit_exists" | "limit_deleted" => StatusCode::CONFLICT,
        "would_block" | "timeout" => StatusCode::TOO_MANY_REQUESTS,
        "lease_expired" | "lease_revoked" => StatusCode::GONE,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let code = err.code();
        let field = err.field();
        ApiError {
            status: status_of(code),
            code,
            message: err.to_string(),
            field: field.map(str::to_owned),
        }
    }
}

/// The field in serde's account of a JSON body that does not fit: either
/// ``missing field `FIELD` at ...`` (and the like, for unknown fields) or
/// `FIELD: what is wrong at ...`.
fn json_field(detail: &str) -> Option<String> {
    if let Some((_, rest)) = detail.split_once(" field `") {
        return rest.split_once('`').map(|(field, _)| field.to_owned());
    }
    let (path, _) = detail.split_once(": ")?;
    let valid = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c));
    valid.then(|| path.to_owned())
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            _ => (StatusCode::BAD_REQUEST, "invalid_json"),
        };
        // axum prefixes serde's account with a sentence of its own.
        let text = rejection.body_text();
        let detail = text
            .split_once("target type: ")
            .map_or(text.as_str(), |(_, detail)| detail);
        let field = match rejection {
            JsonRejection::JsonDataError(_) => json_field(detail),
            _ => None,
        };
        ApiError {
            status,
            code,
            message: detail.to_owned(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(self.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
