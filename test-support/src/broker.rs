//! A tansu broker process for one test.

use std::{net::TcpListener as StdListener, path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::env::TestEnv;

/// A Kafka-protocol broker on a free loopback port.
pub struct Broker {
    port: u16,
    /// Where a durable broker keeps its SQLite file; `None` stores in memory.
    data_dir: Option<PathBuf>,
    child: Option<Child>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.data_dir {
            // Best effort: a leftover directory in the temp dir harms nothing.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Where the broker's output goes: the file `NUDGE_BROKER_LOG` names, for diagnosing a test.
fn log() -> anyhow::Result<Stdio> {
    Ok(match std::env::var_os("NUDGE_BROKER_LOG") {
        Some(path) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        None => Stdio::null(),
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    /// Starts a broker that stores in memory (fast; a kill loses everything) and waits
    /// until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let mut broker = Self { port: free_port()?, data_dir: None, child: None };
        broker.restart().await?;
        Ok(broker)
    }

    /// Starts a broker that stores in SQLite, so records survive `kill` and `restart`.
    pub async fn start_durable() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("nudge-broker-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        let mut broker = Self { port: free_port()?, data_dir: Some(dir), child: None };
        broker.restart().await?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL.
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
        let mut command = Command::new(&env.tansu);
        let storage = match &self.data_dir {
            // tansu resolves the SQLite path against its working directory.
            Some(dir) => {
                command.current_dir(dir);
                "sqlite://tansu.db"
            }
            None => "memory://tansu/",
        };
        let child = command
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(storage)
            .stdout(log()?)
            .stderr(log()?)
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
