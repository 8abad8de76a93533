//! Inference: scoring latency per single row and batched rows/s for both model types, each
//! beside Python onnxruntime scoring the same artifact on the same rows (one thread each, as
//! the cells score), and the pipeline's feature read (`SessionStore::load`, one `HMGET`) beside
//! `redis-benchmark` running `HGETALL` on the same hash and the same Redis.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use nudge_contracts::ShopperId;
use nudge_data_plane_features::{
    FeatureVector, N_FEATURES, SessionState,
    store::{SessionKey, SessionStore},
};
use nudge_data_plane_inference::{Model, init_runtime};
use nudge_tenants::TenantId;
use serde::Deserialize;
use sha2::Digest;
use tokio::process::Command;

use crate::stats::{max, median, min, quantile};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Single-row scores timed per model.
    #[arg(long, default_value_t = 20_000)]
    single: usize,
    /// Rows per batched call.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Rounds of batched scoring (each `--seconds` long).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Feature reads timed.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    #[arg(long, env = "NUDGE_BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The project's root (model artifacts, the Python peer).
    #[arg(long, env = "NUDGE_ROOT", default_value = ".")]
    root: PathBuf,
    /// The Python with onnxruntime installed.
    #[arg(long, env = "NUDGE_VENV_PYTHON")]
    python: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Golden {
    model_version: String,
    rows: Vec<GoldenRow>,
}

#[derive(Deserialize)]
struct GoldenRow {
    features: Vec<f32>,
}

/// What the Python peer prints.
#[derive(Deserialize)]
struct Peer {
    #[serde(flatten)]
    measured: Measured,
    onnxruntime: String,
}

/// One scorer's figures for one model.
#[derive(Deserialize)]
struct Measured {
    single_p50_us: f64,
    single_p99_us: f64,
    batched_rows_per_s: Vec<f64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let python = args.python.clone().context("NUDGE_VENV_PYTHON is not set (run scripts/bench)")?;
    let env = init_runtime(None).context("ONNX Runtime (ORT_DYLIB_PATH) loads")?;
    let mut lines = Vec::new();
    let mut ratios = Vec::new();
    let mut peer_version = String::new();
    for dir in ["cart_abandonment/v1", "cart_abandonment_gbdt/v1"] {
        let dir = args.root.join("model").join(dir);
        let bytes = std::fs::read(dir.join("model.onnx")).with_context(|| format!("{}", dir.display()))?;
        let golden: Golden = serde_json::from_slice(&std::fs::read(dir.join("golden.json"))?)?;
        let rows: Vec<FeatureVector> = golden
            .rows
            .iter()
            .map(|r| {
                let mut v = [0f32; N_FEATURES];
                v.copy_from_slice(&r.features);
                v
            })
            .collect();
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let model = Model::load(env, &golden.model_version, &bytes, &sha)?;
        let ours = measure(&model, &rows, &args)?;
        let Peer { measured: peer, onnxruntime } = python_peer(&python, &args, &dir).await?;
        peer_version = onnxruntime;
        let v = &golden.model_version;
        lines.push(table_row(v, &format!("nudge (Rust, {})", model.engine()), &ours));
        if model.engine() != "onnxruntime" {
            // What the cells' model replaces, for the same artifact.
            let session = Model::load_onnxruntime(env, v, &bytes, &sha)?;
            lines.push(table_row(v, "nudge (Rust, onnxruntime session)", &measure(&session, &rows, &args)?));
        }
        lines.push(table_row(v, "Python onnxruntime", &peer));
        ratios.push(format!(
            "- {v}: batched rows/s Rust / Python {:.0} %, single-row p50 Python / Rust {:.0} %",
            median(&ours.batched_rows_per_s) / median(&peer.batched_rows_per_s) * 100.0,
            peer.single_p50_us / ours.single_p50_us * 100.0
        ));
    }

    let reads = feature_reads(&args).await?;

    println!(
        "\nscoring: {} single rows, batches of {} rows for {} rounds of {} s, one thread; onnxruntime {peer_version}\n",
        args.single, args.batch, args.rounds, args.seconds
    );
    println!("| model | scorer | single row p50 µs | single row p99 µs | batched rows/s median (range) |");
    println!("|---|---|---|---|---|");
    for l in &lines {
        println!("{l}");
    }
    println!();
    for r in &ratios {
        println!("{r}");
    }
    println!("\nfeature reads: {} sequential reads of one session hash, one connection\n", args.reads);
    println!("| reader | p50 µs | p99 µs |");
    println!("|---|---|---|");
    println!("| SessionStore::load (HMGET of the session's fields) | {:.0} | {:.0} |", reads.0, reads.1);
    println!("| redis-benchmark HGETALL, same hash | {:.0} | {:.0} |", reads.2, reads.3);
    Ok(())
}

fn table_row(version: &str, scorer: &str, m: &Measured) -> String {
    let rates = &m.batched_rows_per_s;
    format!(
        "| {version} | {scorer} | {:.1} | {:.1} | {:.0} ({:.0}–{:.0}) |",
        m.single_p50_us,
        m.single_p99_us,
        median(rates),
        min(rates),
        max(rates)
    )
}

fn measure(model: &Model, rows: &[FeatureVector], args: &Args) -> anyhow::Result<Measured> {
    for row in rows.iter().cycle().take(1000) {
        model.score(std::slice::from_ref(row))?;
    }
    let mut latencies = Vec::with_capacity(args.single);
    for row in rows.iter().cycle().take(args.single) {
        let t = Instant::now();
        model.score(std::slice::from_ref(row))?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
    }
    latencies.sort_by(f64::total_cmp);

    let batch: Vec<FeatureVector> = rows.iter().cycle().take(args.batch).copied().collect();
    model.score(&batch)?;
    let mut rates = Vec::with_capacity(args.rounds);
    let round = Duration::from_secs_f64(args.seconds);
    for _ in 0..args.rounds {
        let (mut n, start) = (0usize, Instant::now());
        while start.elapsed() < round {
            model.score(&batch)?;
            n += batch.len();
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    Ok(Measured {
        single_p50_us: quantile(&latencies, 0.5),
        single_p99_us: quantile(&latencies, 0.99),
        batched_rows_per_s: rates,
    })
}

async fn python_peer(python: &Path, args: &Args, dir: &Path) -> anyhow::Result<Peer> {
    let script = args.root.join("bench/python/onnxruntime_peer.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir.join("model.onnx"))
        .arg(dir.join("golden.json"))
        .args(["--single", &args.single.to_string(), "--batch", &args.batch.to_string()])
        .args(["--rounds", &args.rounds.to_string(), "--seconds", &args.seconds.to_string()])
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(out.status.success(), "the Python peer failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// p50 and p99 in µs of `SessionStore::load`, then of redis-benchmark's `HGETALL`.
async fn feature_reads(args: &Args) -> anyhow::Result<(f64, f64, f64, f64)> {
    let redis = redis::aio::ConnectionManager::new(redis::Client::open(args.redis_url.as_str())?).await?;
    let prefix = format!("nudge-bench:{}:", std::process::id());
    let store = SessionStore::new(redis.clone(), prefix.clone());
    let key = SessionKey { tenant: TenantId::new(), shopper: ShopperId::parse("shp_bench")? };
    let state = SessionState {
        first_seen_ms: 1_764_000_000_000,
        last_seen_ms: 1_764_000_185_000,
        cart_value_minor: 12_900,
        cart_items: 2,
        page_views: 4,
        product_views: 3,
        cart_adds: 2,
        exit_intents: 1,
        ..SessionState::default()
    };
    store.commit(&key, "bench-event", &state, nudge_data_plane_features::store::IdleTimer::Keep, "").await?;
    for _ in 0..1000 {
        store.load(&key).await?;
    }
    let mut latencies = Vec::with_capacity(args.reads);
    for _ in 0..args.reads {
        let t = Instant::now();
        let loaded = store.load(&key).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(loaded == state, "the session read back differs");
    }
    latencies.sort_by(f64::total_cmp);

    let url = url_parts(&args.redis_url);
    let out = Command::new("redis-benchmark")
        .args(["-h", &url.0, "-p", &url.1, "-c", "1", "-n", &args.reads.to_string(), "--csv"])
        .arg("HGETALL")
        .arg(key.redis_key(&prefix))
        .output()
        .await
        .context("running redis-benchmark")?;
    anyhow::ensure!(out.status.success(), "redis-benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    let (p50, p99) = benchmark_percentiles(&String::from_utf8_lossy(&out.stdout))?;

    let mut conn = redis;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await?;
    if !keys.is_empty() {
        redis::cmd("UNLINK").arg(keys).query_async::<()>(&mut conn).await?;
    }
    Ok((quantile(&latencies, 0.5), quantile(&latencies, 0.99), p50 * 1000.0, p99 * 1000.0))
}

/// Host and port of a `redis://host:port[/db]` URL.
fn url_parts(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let authority = rest.split('/').next().unwrap_or("127.0.0.1:6379");
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "6379"));
    (host.to_owned(), port.to_owned())
}

/// p50 and p99 in ms from redis-benchmark's `--csv` output (a header row, then one row).
fn benchmark_percentiles(csv: &str) -> anyhow::Result<(f64, f64)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> =
        lines.next().context("no CSV header")?.split(',').map(|c| c.trim_matches('"').to_owned()).collect();
    let row: Vec<String> =
        lines.next().context("no CSV row")?.split(',').map(|c| c.trim_matches('"').to_owned()).collect();
    let column = |name: &str| -> anyhow::Result<f64> {
        let i = header.iter().position(|h| h == name).with_context(|| format!("no column {name} in {header:?}"))?;
        Ok(row.get(i).context("short CSV row")?.parse()?)
    };
    Ok((column("p50_latency_ms")?, column("p99_latency_ms")?))
}
