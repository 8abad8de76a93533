//! The public API, called in-process: a request is handed to the API's own router with the
//! member's access token, exactly as if it had come over the network, so every check the
//! API makes (the token's store, the member's role, validation) applies to the console too.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tower::ServiceExt;

use crate::error::ConsoleError;

/// Larger than any answer the console reads (an erasure receipt is the largest).
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// What the API refused, as it said it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    /// The API's stable error code.
    pub code: String,
    pub message: String,
    /// Field name → what is wrong with it (`invalid_fields`).
    pub fields: Vec<(String, String)>,
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// What the member can do about it.
    pub fn next_step(&self) -> &'static str {
        match self.status.as_u16() {
            403 => "Your role does not allow this. Ask an owner or admin of the store.",
            404 => "It may have been removed. Go back to the overview.",
            409 | 422 => "Correct what is named and send it again.",
            429 => "Wait a moment and try again.",
            503 => "A service the platform depends on is unavailable. Try again in a few seconds.",
            _ => "Try again; if it keeps happening, contact support.",
        }
    }

    /// The error on `field`, if any.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.fields.iter().find(|(f, _)| f == field).map(|(_, e)| e.as_str())
    }
}

/// The public API's router.
#[derive(Clone)]
pub struct Api(Router);

impl Api {
    pub fn new(router: Router) -> Self {
        Self(router)
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value, Option<u64>), ConsoleError> {
        self.send_with(method, path, token, body, None).await
    }

    /// [`Api::send`] with an `If-Match` precondition (a version the change replaces).
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Result<(StatusCode, Value, Option<u64>), ConsoleError> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(tag) = if_match {
            request = request.header(header::IF_MATCH, tag);
        }
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&body).map_err(|e| ConsoleError::Internal(e.to_string()))?)),
            None => request.body(Body::empty()),
        }
        .map_err(|e| ConsoleError::Internal(e.to_string()))?;
        let response = self.0.clone().oneshot(request).await.map_err(|e| ConsoleError::Internal(e.to_string()))?;
        let status = response.status();
        let retry_after =
            response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| ConsoleError::Internal(format!("reading an API answer: {e}")))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ConsoleError::Internal(format!("an API answer: {e}")))?
        };
        Ok((status, body, retry_after))
    }

    /// Sends a request; a success is decoded as `T`, anything else is a [`Refusal`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&impl Serialize>,
    ) -> Result<T, ConsoleError> {
        let body = match body {
            Some(b) => Some(serde_json::to_value(b).map_err(|e| ConsoleError::Internal(e.to_string()))?),
            None => None,
        };
        let (status, body, retry_after) = self.send(method, path, token, body).await?;
        if status.is_success() {
            let body = if body.is_null() { Value::Object(Default::default()) } else { body };
            return serde_json::from_value(body).map_err(|e| ConsoleError::Internal(format!("an API answer: {e}")));
        }
        Err(refusal(status, &body, retry_after, token))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, token: &str) -> Result<T, ConsoleError> {
        self.call(Method::GET, path, Some(token), None::<&()>).await
    }
}

/// An API error answer as a [`Refusal`]; a rejected `token` is renewed (or signs the member
/// out).
pub(crate) fn refusal(status: StatusCode, body: &Value, retry_after: Option<u64>, token: Option<&str>) -> ConsoleError {
    let error = &body["error"];
    let code = error["code"].as_str().unwrap_or("unknown").to_owned();
    if status == StatusCode::UNAUTHORIZED
        && code == "invalid_token"
        && let Some(token) = token
    {
        return ConsoleError::TokenRejected(crate::error::TokenDigest::of(token));
    }
    // No longer a member of the store: the session has nothing more to show.
    if status == StatusCode::UNAUTHORIZED && (code == "missing_token" || code == "membership_ended") {
        return ConsoleError::SignedOut;
    }
    let fields = error["details"]["fields"]
        .as_object()
        .map(|f| f.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    ConsoleError::Refused(Refusal {
        status,
        code,
        message: error["message"].as_str().unwrap_or("the request was refused").to_owned(),
        fields,
        retry_after,
    })
}

/// An answer without a body (`204 No Content`).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Empty {}
