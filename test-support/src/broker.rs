//! A tansu broker process for one test.

use std::{net::TcpListener as StdListener, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::env::TestEnv;

/// A Kafka-protocol broker on a free loopback port, storing in memory.
pub struct Broker {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let mut broker = Self { port: free_port()?, child: None };
        broker.restart().await?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL (its in-memory records are gone with it).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        let env = TestEnv::load();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&env.tansu)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (run scripts/setup)", env.tansu.display()))?;
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("tansu did not start listening on port {}", self.port)
    }
}
