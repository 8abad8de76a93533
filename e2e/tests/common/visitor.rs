//! A browser without JavaScript for the console's tests: cookies kept by hand, redirects
//! not followed, forms posted from the console's own origin.

use std::{collections::HashMap, time::Duration};

use nudge_test_support::PASSWORD;
use reqwest::{StatusCode, header};

/// A browser without JavaScript: cookies kept by hand, redirects not followed.
pub struct Visitor {
    pub http: reqwest::Client,
    pub base: String,
    /// Cookie name → value, as the server last set them.
    pub cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The first form's CSRF token.
    pub fn csrf(&self) -> String {
        self.body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn location(&self) -> &str {
        self.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn error_code(&self) -> &str {
        self.headers.get("nudge-error-code").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

impl Visitor {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()?,
            base: base.to_owned(),
            cookies: HashMap::new(),
        })
    }

    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> anyhow::Result<Page> {
        let cookies: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let request = if cookies.is_empty() { request } else { request.header(header::COOKIE, cookies.join("; ")) };
        let response = request.send().await?;
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str()?;
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let (status, headers) = (response.status(), response.headers().clone());
        Ok(Page { status, headers, body: response.text().await? })
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Page> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts a form as the console's own page would (same origin).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> anyhow::Result<Page> {
        self.post_from(path, fields, &self.base.clone()).await
    }

    pub async fn post_from(&mut self, path: &str, fields: &[(&str, &str)], origin: &str) -> anyhow::Result<Page> {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .body(body);
        self.send(request).await
    }

    /// Signs in through the console's form.
    pub async fn sign_in(&mut self, email: &str) -> anyhow::Result<()> {
        self.sign_in_to(email, "").await
    }

    /// Signs in to one of the account's stores (`""`: its only store).
    pub async fn sign_in_to(&mut self, email: &str, tenant: &str) -> anyhow::Result<()> {
        let form = self.get("/console/login").await?;
        let fields = [
            ("csrf", form.csrf()),
            ("email", email.to_owned()),
            ("password", PASSWORD.to_owned()),
            ("tenant_id", tenant.to_owned()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = self.post("/console/login", &fields).await?;
        anyhow::ensure!(
            page.status == StatusCode::SEE_OTHER && page.location() == "/console",
            "sign-in: {}",
            page.body
        );
        Ok(())
    }
}
