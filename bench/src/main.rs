//! `nudge-bench`: measurements that print figures, each beside a peer measured in the same
//! run — `ingest` (the ingest path, ingest into the broker) and `inference` (ONNX scoring
//! beside Python onnxruntime, feature reads beside redis-benchmark) and `sockets` (the
//! gateway's memory per connection and routing beside Node `ws`). Run it with
//! `scripts/bench` (release build, Redis and the broker set up).

mod cpu;
mod inference;
mod ingest;
mod load;
mod pubsub;
mod sockets;
mod stats;
mod targets;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Nudge benchmarks, each beside its peer")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// The ingest path against a trivial handler; ingest into the broker against a bare producer.
    Ingest(ingest::Args),
    /// Scoring both model types against Python onnxruntime; feature reads against redis-benchmark.
    Inference(inference::Args),
    /// The interventions' backbone: Redis pub/sub against NATS, at the gateway's message size.
    Pubsub(pubsub::Args),
    /// Idle memory per connection and routed deliveries with churn: the gateway against a Node `ws` server.
    Sockets(sockets::Args),
    /// The gateway as a cell mounts it, for `sockets` to measure in its own process.
    #[command(hide = true)]
    SocketServer(sockets::ServerArgs),
    /// Shopper connections of one server, driven by `sockets` over stdin.
    #[command(hide = true)]
    SocketClients(sockets::ClientArgs),
}

/// The cell binary's allocator, so the ingest path is measured as it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Ingest(args) => ingest::run(args).await,
        Bench::Inference(args) => inference::run(args).await,
        Bench::Sockets(args) => sockets::run(args).await,
        Bench::Pubsub(args) => pubsub::run(args).await,
        Bench::SocketServer(args) => sockets::serve(args).await,
        Bench::SocketClients(args) => sockets::clients(args).await,
    }
}
