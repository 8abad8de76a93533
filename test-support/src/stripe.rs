//! A private localstripe per test (a fake Stripe server from PyPI, `scripts/setup` installs
//! it), on a free loopback port, starting empty.

use std::{net::TcpListener as StdListener, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::env::TestEnv;

/// Runs localstripe's server without its disk copy.
const NO_DISK: &str = "import sys\nimport localstripe.resources as r\nr.Store.dump_to_disk = lambda self: None\nfrom localstripe.server import start\nsys.exit(start())";

/// The secret key the tests use (localstripe takes any `sk_…`).
pub const STRIPE_KEY: &str = "sk_test_nudge";

pub struct LocalStripe {
    port: u16,
    http: reqwest::Client,
    _child: Child,
}

impl LocalStripe {
    pub async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::load();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let mut last = None;
        // Another process may take the free port before the server binds it: then another
        // port is tried.
        for _ in 0..3 {
            let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
            // Its entry point, with the copy of its state it writes to a fixed file in /tmp
            // after every change (never read back with --from-scratch) turned off: parallel
            // tests would all write the one file.
            let mut child = Command::new(&env.localstripe_python)
                .args(["-c", NO_DISK, "--port", &port.to_string(), "--from-scratch"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!(
                        "starting {} with localstripe (scripts/setup installs it)",
                        env.localstripe_python.display()
                    )
                })?;
            // It starts in about a second on an idle machine; a loaded one gets 30 s.
            for _ in 0..600 {
                let probe = http.get(format!("http://127.0.0.1:{port}/v1/customers")).bearer_auth(STRIPE_KEY);
                if probe.send().await.is_ok_and(|r| r.status().is_success()) {
                    // The answer was ours only if our server is still running (another one
                    // may have had the port).
                    if child.try_wait()?.is_none() {
                        return Ok(Self { port, http, _child: child });
                    }
                }
                if let Some(status) = child.try_wait()? {
                    last = Some(anyhow::anyhow!("localstripe exited at start ({status}) on port {port}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last.get_or_insert_with(|| anyhow::anyhow!("localstripe did not start on port {port} within 30 s"));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("localstripe did not start")))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Gives `customer` a card that pays (Visa 4242…) as their default payment method: what a
    /// merchant does in Stripe's own pages (Checkout, the billing portal).
    pub async fn add_card(&self, customer: &str) -> anyhow::Result<()> {
        let card = [
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ];
        let method = self.post("/v1/payment_methods", &card).await?;
        let id = method["id"].as_str().ok_or_else(|| anyhow::anyhow!("a payment method without an id"))?;
        self.post(&format!("/v1/payment_methods/{id}/attach"), &[("customer", customer)]).await?;
        self.post(&format!("/v1/customers/{customer}"), &[("invoice_settings[default_payment_method]", id)]).await?;
        Ok(())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
        let response =
            self.http.post(format!("{}{path}", self.url())).bearer_auth(STRIPE_KEY).form(form).send().await?;
        anyhow::ensure!(response.status().is_success(), "POST {path}: {}", response.status());
        Ok(response.json().await?)
    }

    /// The object at `path` (`/v1/subscriptions/sub_…`), as Stripe shows it.
    pub async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self.http.get(format!("{}{path}", self.url())).bearer_auth(STRIPE_KEY).send().await?;
        anyhow::ensure!(response.status().is_success(), "GET {path}: {}", response.status());
        Ok(response.json().await?)
    }
}
