//! The store's cell, called over HTTP with the member's access token: reports (lift, the
//! send log) live in the cell that serves the store, not in the control plane. The cell
//! checks the token itself (the control plane's public key) and answers only for the store
//! the token names, with what the member's role reaches.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

/// How long a report may take before the page says it is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a cell's answer is missing, in words for the page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CellError {
    /// The cell answered with an error.
    #[error("{message} ({code})")]
    Refused { status: StatusCode, code: String, message: String },
    /// No answer in time, or no connection.
    #[error("the store's cell did not answer: {0}")]
    Unreachable(String),
}

impl CellError {
    /// What the member can do about it.
    pub fn next_step(&self) -> &'static str {
        match self {
            Self::Refused { code, .. } if code == "invalid_token" || code == "members_not_accepted" => {
                "The store's cell does not take the console's sign-in yet: the platform's operators set its \
                 members.token_public_keys. Reports stay readable with a secret key with reports:read."
            }
            Self::Refused { status, .. } if *status == StatusCode::FORBIDDEN => {
                "Your role does not reach this report. Ask an owner or admin of the store."
            }
            _ => "Try again in a few seconds.",
        }
    }
}

#[derive(Clone)]
pub struct CellClient {
    http: reqwest::Client,
}

impl CellClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(CALL_TIMEOUT).connect_timeout(Duration::from_secs(2)).build()?;
        Ok(Self { http })
    }

    /// `GET {cell_url}{path}` with the member's token, as JSON.
    pub async fn get(&self, cell_url: &str, path: &str, token: &str) -> Result<Value, CellError> {
        let url = format!("{}{path}", cell_url.trim_end_matches('/'));
        Self::answer(self.http.get(&url).bearer_auth(token)).await
    }

    /// `POST {cell_url}{path}` with the member's token and a JSON body, as JSON.
    pub async fn post(&self, cell_url: &str, path: &str, token: &str, body: &Value) -> Result<Value, CellError> {
        let url = format!("{}{path}", cell_url.trim_end_matches('/'));
        Self::answer(self.http.post(&url).bearer_auth(token).json(body)).await
    }

    async fn answer(request: reqwest::RequestBuilder) -> Result<Value, CellError> {
        let response = request.send().await.map_err(|e| CellError::Unreachable(e.to_string()))?;
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let body: Value = response.json().await.map_err(|e| CellError::Unreachable(format!("its answer: {e}")))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(CellError::Refused {
            status,
            code: body["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
            message: body["error"]["message"].as_str().unwrap_or("the cell refused").to_owned(),
        })
    }
}
