//! Ingest: events/s with p50/p99 request latency, each beside a peer measured in the same
//! round under the same load:
//!
//! 1. the ingest path (authorisation, parsing, validation, rate limit, event-id dedup in
//!    Redis, hand-off to a sink that takes everything at once) against a trivial axum
//!    handler that only reads the body, with batches and with single events;
//! 2. ingest end to end into the broker (every record acknowledged before the 202) against a
//!    bare rdkafka producer writing the same records to the same broker.
//!
//! Rounds alternate the pair's order; figures are the median over rounds with the range.

use std::{sync::Arc, time::Duration};

use crate::{
    load::{self, Outcome, Target},
    stats::{max, median, min},
    targets,
};
use bytes::Bytes;
use hyper::{StatusCode, header::HeaderValue};
use nudge_contracts::Topic;
use nudge_data_plane_ingest::sink::KafkaSink;
use nudge_platform_kafka::KafkaConfig;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds (each measures every pair once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent connections (and bare-producer tasks).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Events per batched request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, env = "NUDGE_BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Only the ingest path against the trivial handler (no broker).
    #[arg(long, conflicts_with = "broker_only")]
    no_broker: bool,
    /// Only ingest end to end against the bare producer (to iterate on the producer side).
    #[arg(long)]
    broker_only: bool,
}

/// Shoppers the load's events come from.
const SHOPPERS: usize = 5000;

pub(crate) fn shopper(worker: usize, seq: u64, i: usize) -> String {
    format!("shp_{}", (worker * 7919 + seq as usize * 31 + i) % SHOPPERS)
}

pub(crate) fn event_id(run: &str, worker: usize, seq: u64, i: usize) -> String {
    format!("{run}-{worker}-{seq}-{i}")
}

/// Request bodies with event ids unique to `run`, so dedup sees every event as new.
fn bodies(run: String, batch: usize) -> load::BodyFn {
    Arc::new(move |worker, seq| {
        let mut s = String::with_capacity(16 + batch * 96);
        s.push_str(r#"{"events":["#);
        for i in 0..batch {
            if i > 0 {
                s.push(',');
            }
            s.push_str(r#"{"event_id":""#);
            s.push_str(&event_id(&run, worker, seq, i));
            s.push_str(r#"","type":"page_view","shopper_id":""#);
            s.push_str(&shopper(worker, seq, i));
            s.push_str(r#""}"#);
        }
        s.push_str("]}");
        Bytes::from(s)
    })
}

/// Request `seq` carries the events of shoppers `seq * batch ..`: `SHOPPERS / batch`
/// requests give every shopper of the load its data key before anything is measured.
fn every_shopper(run: String, batch: usize) -> load::BodyFn {
    Arc::new(move |_, seq| {
        let events: Vec<String> = (0..batch)
            .map(|i| {
                format!(
                    r#"{{"event_id":"{run}-{seq}-{i}","type":"page_view","shopper_id":"shp_{}"}}"#,
                    (seq as usize * batch + i) % SHOPPERS
                )
            })
            .collect();
        Bytes::from(format!(r#"{{"events":[{}]}}"#, events.join(",")))
    })
}

/// One row of the report: every round's outcome of one measurement.
struct Series {
    name: String,
    rounds: Vec<Outcome>,
}

impl Series {
    fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), rounds: Vec::new() }
    }

    fn rates(&self) -> Vec<f64> {
        self.rounds.iter().map(Outcome::events_per_second).collect()
    }

    fn print(&mut self) {
        if self.rounds.is_empty() {
            return;
        }
        let rates = self.rates();
        let rps: Vec<f64> = self.rounds.iter().map(Outcome::requests_per_second).collect();
        let p50: Vec<f64> = self.rounds.iter_mut().map(|o| o.latency_ms(0.5)).collect();
        let p99: Vec<f64> = self.rounds.iter_mut().map(|o| o.latency_ms(0.99)).collect();
        let failures: u64 = self.rounds.iter().map(|o| o.failures).sum();
        let cpu: Vec<f64> = self.rounds.iter().map(Outcome::cpu_us_per_event).collect();
        let busy: Vec<f64> = self.rounds.iter().map(Outcome::busy_cores).collect();
        println!(
            "| {} | {:.0} ({:.0}–{:.0}) | {:.0} | {:.2} | {:.2} | {} | {:.2} | {:.2} |",
            self.name,
            median(&rates),
            min(&rates),
            max(&rates),
            median(&rps),
            median(&p50),
            median(&p99),
            failures,
            median(&cpu),
            median(&busy)
        );
    }
}

impl Series {
    /// One row of the CPU breakdown: µs per event for each measured process.
    fn print_cpu(&self) {
        if self.rounds.is_empty() {
            return;
        }
        let per_round: Vec<Vec<f64>> = self.rounds.iter().map(Outcome::cpu_us_per_event_by_process).collect();
        let processes = per_round.first().map_or(0, Vec::len);
        let cells: Vec<String> = (0..processes)
            .map(|i| format!("{:.2}", median(&per_round.iter().map(|r| r[i]).collect::<Vec<_>>())))
            .collect();
        println!("| {} | {} |", self.name, cells.join(" | "));
    }
}

/// The median of per-round ratios `a / b`, with their range.
fn ratio(a: &Series, b: &Series) -> String {
    let r: Vec<f64> = a.rates().iter().zip(b.rates()).map(|(x, y)| x / y).collect();
    format!("{:.0} % ({:.0}–{:.0} %)", median(&r) * 100.0, min(&r) * 100.0, max(&r) * 100.0)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    let redis_client = redis::Client::open(args.redis_url.as_str())?;
    let redis = redis::aio::ConnectionManager::new(redis_client.clone()).await?;
    let prefix = format!("nudge-bench:{}:", std::process::id());

    // The broker out of the loop.
    // The vault whose keys wrap the data keys ingest seals events with.
    let vault = targets::Vault::start().await?;
    let (ingest_addr, store) = targets::ingest(Arc::new(targets::NullSink), redis.clone(), &vault, &prefix).await?;
    let trivial_addr = targets::trivial().await?;
    let auth = headers(&store)?;

    let mut ingest_batched = Series::new(format!("ingest path, batches of {} (broker out of the loop)", args.batch));
    let mut trivial_batched = Series::new(format!("trivial axum handler, batches of {}", args.batch));
    let mut ingest_single = Series::new("ingest path, single events (broker out of the loop)");
    let mut trivial_single = Series::new("trivial axum handler, single events");
    let mut e2e = Series::new(format!("ingest end to end into the broker, batches of {}", args.batch));
    let mut bare = Series::new(format!("bare rdkafka producer, batches of {}", args.batch));

    let broker = if args.no_broker { None } else { Some(targets::Broker::start().await?) };
    let mut e2e_target = None;
    let mut kafka = KafkaConfig::default();
    if let Some(b) = &broker {
        kafka.brokers = b.bootstrap.clone();
        kafka.prefix = prefix.replace(':', ".");
        nudge_platform_kafka::ensure_topics(&kafka, &[Topic::EventsRaw]).await?;
        let sink = KafkaSink::new(
            &kafka,
            "bench-ingest",
            kafka.topics().name(Topic::EventsRaw),
            Duration::from_secs(5),
            1_000_000,
        )?;
        let (addr, e2e_store) =
            targets::ingest(Arc::new(sink), redis.clone(), &vault, &format!("{prefix}e2e:")).await?;
        e2e_target = Some((addr, headers(&e2e_store)?));
    }

    // With --broker-only the ingest path and the trivial handler are not measured: no
    // check, keys or warm-up for them.
    let local = !args.broker_only;
    if local {
        load::check(&target(ingest_addr, &auth, "check-i".into(), args.batch)).await?;
        load::check(&target(trivial_addr, &auth, "check-t".into(), args.batch)).await?;
    }
    if let Some((addr, h)) = &e2e_target {
        load::check(&target(*addr, h, "check-e".into(), args.batch)).await?;
    }

    // Every shopper's data key made and cached (a vault call each, as for a shopper a cell
    // sees for the first time), then a short warm-up, none of it reported.
    let keys_for = |addr, auth: &Headers, run: &str| {
        let mut t = target(addr, auth, run.into(), args.batch);
        t.body = every_shopper(run.into(), args.batch);
        t
    };
    if local {
        load::send_each(&keys_for(ingest_addr, &auth, "keys-i"), SHOPPERS.div_ceil(args.batch) as u64).await?;
    }
    if let Some((addr, h)) = &e2e_target {
        load::send_each(&keys_for(*addr, h, "keys-e"), SHOPPERS.div_ceil(args.batch) as u64).await?;
    }
    if local {
        let warm = Duration::from_millis(500);
        load::run(&target(ingest_addr, &auth, "warm-i".into(), args.batch), args.connections, warm).await?;
        load::run(&target(trivial_addr, &auth, "warm-t".into(), args.batch), args.connections, warm).await?;
    }

    // CPU time of every process on the path: this one, Redis, the vault, the broker.
    let mut others =
        vec![("Redis", crate::cpu::redis_pid(&redis_client, &mut redis.clone()).await), ("vault", vault.pid())];
    if let Some(b) = &broker {
        others.push(("broker", b.pid()));
    }
    let meter = crate::cpu::Meter::new(others)?;

    let rounds = args.rounds;
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        // Alternate which of a pair goes first.
        let first = round % 2 == 0;
        let pairs = [
            (&mut ingest_batched, ingest_addr, &mut trivial_batched, trivial_addr, args.batch, "b"),
            (&mut ingest_single, ingest_addr, &mut trivial_single, trivial_addr, 1, "s"),
        ];
        for (a, a_addr, b, b_addr, batch, kind) in pairs.into_iter().filter(|_| local) {
            let ta = target(a_addr, &auth, format!("i{kind}{round}"), batch);
            let tb = target(b_addr, &auth, format!("t{kind}{round}"), batch);
            if first {
                a.rounds.push(metered(&meter, &a.name, load::run(&ta, args.connections, duration)).await?);
                b.rounds.push(metered(&meter, &b.name, load::run(&tb, args.connections, duration)).await?);
            } else {
                b.rounds.push(metered(&meter, &b.name, load::run(&tb, args.connections, duration)).await?);
                a.rounds.push(metered(&meter, &a.name, load::run(&ta, args.connections, duration)).await?);
            }
        }
        if let Some((addr, h)) = &e2e_target {
            let t = target(*addr, h, format!("e{round}"), args.batch);
            if first {
                e2e.rounds.push(metered(&meter, &e2e.name, load::run(&t, args.connections, duration)).await?);
                bare.rounds.push(
                    metered(&meter, &bare.name, targets::bare_producer(&kafka, args.connections, args.batch, duration))
                        .await?,
                );
            } else {
                bare.rounds.push(
                    metered(&meter, &bare.name, targets::bare_producer(&kafka, args.connections, args.batch, duration))
                        .await?,
                );
                e2e.rounds.push(metered(&meter, &e2e.name, load::run(&t, args.connections, duration)).await?);
            }
        }
    }

    println!(
        "\n{} rounds of {} s, {} connections, on {} CPUs\n",
        rounds,
        args.seconds,
        args.connections,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "| measurement | events/s median (range) | requests/s | p50 ms | p99 ms | failed requests | CPU µs per event | busy cores |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for s in [&mut ingest_batched, &mut trivial_batched, &mut ingest_single, &mut trivial_single] {
        s.print();
    }
    if broker.is_some() {
        e2e.print();
        bare.print();
    }
    println!();
    println!("CPU µs per event by process (median over rounds; \"bench\" is the load tool and the servers):\n");
    let names = meter.names();
    println!("| measurement | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for s in [&ingest_batched, &trivial_batched, &ingest_single, &trivial_single] {
        s.print_cpu();
    }
    if broker.is_some() {
        e2e.print_cpu();
        bare.print_cpu();
    }
    println!();
    if !args.broker_only {
        println!("- ingest path / trivial handler, batched: {}", ratio(&ingest_batched, &trivial_batched));
        println!("- ingest path / trivial handler, single events: {}", ratio(&ingest_single, &trivial_single));
    }
    if broker.is_some() {
        println!("- ingest end to end / bare producer: {}", ratio(&e2e, &bare));
    }
    forget(redis, &prefix).await
}

/// `run`'s outcome with the CPU time the measured processes spent meanwhile.
async fn metered(
    meter: &crate::cpu::Meter,
    name: &str,
    run: impl std::future::Future<Output = anyhow::Result<Outcome>>,
) -> anyhow::Result<Outcome> {
    // On standard error, so a profiler can be started on the phase it is after.
    eprintln!("  measuring: {name}");
    let before = meter.by_process();
    let mut outcome = run.await?;
    // A process that ended meanwhile reads 0: it counts nothing rather than less than nothing.
    outcome.cpu_by_process =
        meter.by_process().iter().zip(before).map(|(after, before)| (after - before).max(0.0)).collect();
    outcome.cpu_seconds = outcome.cpu_by_process.iter().sum();
    Ok(outcome)
}

/// Deletes the run's dedup keys, so benchmarks do not fill Redis for a day.
async fn forget(mut redis: redis::aio::ConnectionManager, prefix: &str) -> anyhow::Result<()> {
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut redis).await?;
    if !keys.is_empty() {
        redis::cmd("UNLINK").arg(keys).query_async::<()>(&mut redis).await?;
    }
    Ok(())
}

type Headers = Vec<(&'static str, HeaderValue)>;

fn headers(store: &targets::Store) -> anyhow::Result<Headers> {
    Ok(vec![
        ("authorization", HeaderValue::from_str(&format!("Bearer {}", store.key))?),
        ("origin", HeaderValue::from_static(targets::ORIGIN)),
    ])
}

fn target(addr: std::net::SocketAddr, headers: &Headers, run: String, batch: usize) -> Target {
    Target {
        addr,
        path: "/v1/events",
        headers: headers.clone(),
        body: bodies(run, batch),
        events_per_request: batch as u64,
        expect: StatusCode::ACCEPTED,
    }
}
