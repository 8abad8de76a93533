//! A private SMTP server per test: aiosmtpd (from PyPI, `scripts/setup` installs it) on a
//! free loopback port, keeping what it receives in a maildir the test reads.

use std::{net::TcpListener as StdListener, path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use tokio::{
    io::AsyncReadExt,
    process::{Child, Command},
};

use crate::{env::TestEnv, unique_suffix};

/// One e-mail as the server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: String,
    pub subject: String,
    pub message_id: String,
    /// The whole message as received (headers and body).
    pub raw: String,
}

pub struct MailServer {
    port: u16,
    maildir: PathBuf,
    child: Child,
}

impl MailServer {
    pub async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::load();
        let maildir = std::env::temp_dir().join(format!("nudge-mail-{}", unique_suffix()));
        let mut last = None;
        // Another process may take the free port before the server binds it: then another
        // port is tried.
        for _ in 0..3 {
            let port = StdListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut child = Command::new(&env.localstripe_python)
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| {
                    format!("starting aiosmtpd with {} (scripts/setup installs it)", env.localstripe_python.display())
                })?;
            for _ in 0..300 {
                if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let mut banner = [0u8; 3];
                    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut banner)).await;
                    if matches!(read, Ok(Ok(_))) && &banner == b"220" && child.try_wait()?.is_none() {
                        return Ok(Self { port, maildir, child });
                    }
                }
                if let Some(status) = child.try_wait()? {
                    last = Some(anyhow::anyhow!("aiosmtpd exited at start ({status}) on port {port}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill().await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("aiosmtpd did not answer within 30 s")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything received so far.
    pub fn received(&self) -> anyhow::Result<Vec<ReceivedMail>> {
        let mut mails = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) else { continue };
            for entry in entries {
                let raw = std::fs::read_to_string(entry?.path())?;
                let header = |name: &str| {
                    raw.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default()
                };
                mails.push(ReceivedMail {
                    to: header("To"),
                    subject: header("Subject"),
                    message_id: header("Message-ID"),
                    raw: raw.clone(),
                });
            }
        }
        Ok(mails)
    }

    /// The messages to `address`.
    pub fn received_by(&self, address: &str) -> anyhow::Result<Vec<ReceivedMail>> {
        Ok(self.received()?.into_iter().filter(|m| m.to.contains(address)).collect())
    }

    /// Waits until a message to `address` arrives, for at most `wait`.
    pub async fn wait_for(&self, address: &str, wait: Duration) -> anyhow::Result<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(mail) = self.received_by(address)?.into_iter().next() {
                return Ok(mail);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no e-mail to {address} within {wait:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}
