//! A private OpenBao dev server per test (`bao server -dev`: in memory, unsealed, on a free
//! loopback port), with the Transit engine mounted.

use std::{net::TcpListener as StdListener, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::{env::TestEnv, unique_suffix};

pub struct VaultServer {
    port: u16,
    pub token: String,
    child: Option<Child>,
}

impl VaultServer {
    pub async fn start() -> anyhow::Result<Self> {
        // Another process may take the free port between here and the server's bind: then
        // the server exits, and another port is tried.
        let mut last = None;
        for _ in 0..3 {
            let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = Self { port, token: format!("test-root-{}", unique_suffix()), child: None };
            match server.restart().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("OpenBao did not start")))
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL); everything it held is gone.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again, empty, on the same port, with Transit mounted at `transit`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let env = TestEnv::load();
        let child = Command::new(&env.bao)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={}", self.token),
                &format!("-dev-listen-address=127.0.0.1:{}", self.port),
            ])
            .env("BAO_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (scripts/setup installs it)", env.bao.display()))?;
        self.child = Some(child);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let health = format!("{}/v1/sys/health", self.address());
        // It starts in well under a second on an idle machine; a loaded one gets 30 s.
        let mut up = false;
        for _ in 0..600 {
            if http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
                up = true;
                break;
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                anyhow::bail!("OpenBao exited at start ({status}) on port {}", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(up, "OpenBao did not start on port {} within 30 s", self.port);
        let mounted = http
            .post(format!("{}/v1/sys/mounts/transit", self.address()))
            .header("X-Vault-Token", &self.token)
            .json(&serde_json::json!({ "type": "transit" }))
            .send()
            .await?;
        anyhow::ensure!(mounted.status().is_success(), "mounting Transit: {}", mounted.text().await?);
        Ok(())
    }
}
