//! Errors as HTTP answers: `{"error": {"code", "message", "field"}}` with a
//! stable code and the status that fits it; `field` names the request field
//! at fault when there is one, so that a form can show the message beside
//! it.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ratekeeper_backend::Error;

use crate::api::{ErrorBody, ErrorCode, ErrorDetail};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The stable code, which also decides the status.
    pub code: ErrorCode,
    /// The sentence for people.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with the code given, about no field in particular.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The HTTP status it is answered with: the code's.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The same error, about the request field `field`.
    pub fn in_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// The server is stopping; the client should try again shortly.
    pub fn shutting_down() -> Self {
        ApiError::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down; retry shortly",
        )
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        // Every code of the engine and the backends is in the table (a
        // test checks); an unknown one would be a bug, answered as a
        // store failure rather than a panic.
        let code = ErrorCode::parse(err.code()).unwrap_or(ErrorCode::Unavailable);
        ApiError {
            code,
            message: err.to_string(),
            field: err.field().map(str::to_owned),
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
        let code = match &rejection {
            JsonRejection::MissingJsonContentType(_) => ErrorCode::UnsupportedMediaType,
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ErrorCode::BodyTooLarge
            }
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::REQUEST_TIMEOUT =>
            {
                ErrorCode::BodyTimeout
            }
            JsonRejection::JsonDataError(_) => ErrorCode::InvalidField,
            _ => ErrorCode::InvalidJson,
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
            code,
            message: detail.to_owned(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = self.code.retryable();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().into(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use ratekeeper_core::{AcquireError, LeaseError, LimitError, NameError};

    use super::*;

    #[test]
    fn every_code_of_the_engine_and_the_backends_is_in_the_table() {
        let name = || "x".to_owned();
        let errors: Vec<Error> = vec![
            LimitError::InvalidName(NameError::Empty).into(),
            LimitError::InvalidSlots { slots: 0 }.into(),
            LimitError::InvalidDecay { value: -1.0 }.into(),
            LimitError::DecayTooSlow {
                slots: 1,
                value: 0.0,
            }
            .into(),
            LimitError::DescriptionTooLong { len: 0 }.into(),
            LimitError::InvalidPause { reason: "x".into() }.into(),
            LimitError::NotFound { name: name() }.into(),
            LimitError::AlreadyExists { name: name() }.into(),
            AcquireError::NameCount { count: 0 }.into(),
            AcquireError::DuplicateName { name: name() }.into(),
            AcquireError::InvalidName(NameError::Empty).into(),
            AcquireError::LimitNotFound { name: name() }.into(),
            AcquireError::InvalidOccupy.into(),
            AcquireError::OccupyExceedsSlots {
                name: name(),
                occupy: 2,
                slots: 1,
            }
            .into(),
            AcquireError::RateModeNeedsDecay { name: name() }.into(),
            AcquireError::InvalidLeaseTtl { millis: 0 }.into(),
            AcquireError::HolderTooLong { len: 0 }.into(),
            AcquireError::WouldBlock.into(),
            AcquireError::TimedOut.into(),
            AcquireError::LimitDeleted { name: name() }.into(),
            LeaseError::Expired.into(),
            LeaseError::Revoked.into(),
            LeaseError::InvalidTtl { millis: 0 }.into(),
            Error::Unavailable {
                reason: "down".into(),
            },
        ];
        for err in errors {
            assert!(
                ErrorCode::parse(err.code()).is_some(),
                "{} is not in the table",
                err.code()
            );
        }
    }
}
