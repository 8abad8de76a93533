//! `nudge-operator run [--config operator.toml]`: reconciles Cells and Tenants while this
//! replica holds the operator lease.
//! `nudge-operator crds`: writes the CustomResourceDefinitions into `deploy/crds/`
//! (`crds --stdout` prints them instead, for `kubectl apply -f -`).
//! `nudge-operator platform-topics`: writes `deploy/k8s/platform-topics.yaml`.

use std::path::{Path, PathBuf};

use nudge_operator::config::OperatorConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["crds"] => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
            std::fs::create_dir_all(&dir)?;
            for (name, yaml) in nudge_operator::render()? {
                std::fs::write(dir.join(&name), yaml)?;
                println!("wrote deploy/crds/{name}");
            }
            Ok(())
        }
        ["crds", "--stdout"] => {
            for (_, yaml) in nudge_operator::render()? {
                println!("---\n{yaml}");
            }
            Ok(())
        }
        ["platform-topics"] => {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/platform-topics.yaml");
            std::fs::write(&path, nudge_operator::render_platform_topics()?)?;
            println!("wrote deploy/k8s/platform-topics.yaml");
            Ok(())
        }
        ["run"] => run(None).await,
        ["run", "--config", path] => run(Some(PathBuf::from(path))).await,
        _ => anyhow::bail!(
            "usage: nudge-operator run [--config operator.toml] | nudge-operator crds [--stdout] | nudge-operator platform-topics"
        ),
    }
}

async fn run(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config: OperatorConfig =
        nudge_platform_config::load("NUDGE_OPERATOR__", config.as_deref(), &serde_json::json!({}))?;
    nudge_platform_telemetry::init(&config.log);
    let client = kube::Client::try_default().await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let signal = shutdown.clone();
        tokio::spawn(async move {
            term.recv().await;
            signal.cancel();
        });
    }
    nudge_operator::controller::run(client, config, shutdown).await
}
