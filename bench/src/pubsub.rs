//! `nudge-bench pubsub`: the backbone between deciding processes and gateways, Redis
//! pub/sub beside NATS (both run on this machine), with the gateway's message size.
//!
//! One subscriber, one publishing connection with `--in-flight` messages outstanding,
//! rounds that alternate which system goes first. Redis is driven through redis-rs (the
//! client the cells use; every `PUBLISH` is answered); NATS through its text protocol on a
//! plain socket (`PUB` is not answered, so the publisher writes in batches and a `PING`
//! round trip closes each batch — how NATS clients publish). Latency is publish → the
//! subscriber read it, from µs timestamps carried in the payload.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter},
    net::TcpStream,
};

use crate::stats::{max, median, min, quantile};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rounds per system.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Messages per round.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Payload bytes (a rendered intervention is about 400).
    #[arg(long, default_value_t = 400)]
    size: usize,
    /// Messages outstanding at once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    #[arg(long, default_value = "127.0.0.1:4222")]
    nats: String,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn payload(size: usize) -> Vec<u8> {
    let mut p = vec![b'x'; size.max(8)];
    p[..8].copy_from_slice(&now_us().to_le_bytes());
    p
}

fn latency(payload: &[u8]) -> Option<u32> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some(now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32)
}

/// What one round measured: messages per second received, latencies (µs).
struct Round {
    per_s: f64,
    latencies: Vec<u32>,
}

async fn redis_round(args: &Args, channel: &str) -> anyhow::Result<Round> {
    let client = redis::Client::open(args.redis.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let conn = client.get_multiplexed_async_connection().await?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.messages as usize)));
    let receiver = {
        let (latencies, n) = (latencies.clone(), args.messages);
        tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            let mut got = 0;
            while got < n {
                let m = tokio::time::timeout(Duration::from_secs(10), messages.next()).await?.context("closed")?;
                if let Some(l) = latency(m.get_payload_bytes()) {
                    latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(l);
                }
                got += 1;
            }
            anyhow::Ok(Instant::now())
        })
    };
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..args.in_flight)
        .map(|_| {
            let (mut conn, sent, channel, size, n) =
                (conn.clone(), sent.clone(), channel.to_owned(), args.size, args.messages);
            tokio::spawn(async move {
                while sent.fetch_add(1, Ordering::Relaxed) < n {
                    redis::cmd("PUBLISH").arg(&channel).arg(payload(size)).query_async::<u64>(&mut conn).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for p in publishers {
        p.await??;
    }
    let done = receiver.await??;
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok(Round { per_s: args.messages as f64 / (done - started).as_secs_f64(), latencies })
}

async fn nats_connect(
    addr: &str,
) -> anyhow::Result<(BufReader<tokio::net::tcp::OwnedReadHalf>, BufWriter<tokio::net::tcp::OwnedWriteHalf>)> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to NATS at {addr}"))?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let (mut read, mut write) = (BufReader::new(read), BufWriter::new(write));
    let mut info = String::new();
    read.read_line(&mut info).await?;
    anyhow::ensure!(info.starts_with("INFO"), "not a NATS server: {info:?}");
    write.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n").await?;
    write.flush().await?;
    let mut pong = String::new();
    read.read_line(&mut pong).await?;
    anyhow::ensure!(pong.starts_with("PONG"), "NATS refused the connection: {pong:?}");
    Ok((read, write))
}

async fn nats_round(args: &Args, subject: &str) -> anyhow::Result<Round> {
    let (mut sub_read, mut sub_write) = nats_connect(&args.nats).await?;
    sub_write.write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes()).await?;
    sub_write.flush().await?;
    let mut line = String::new();
    sub_read.read_line(&mut line).await?;
    anyhow::ensure!(line.starts_with("PONG"), "subscribing: {line:?}");
    let n = args.messages;
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        let mut line = String::new();
        let mut body = Vec::new();
        while (latencies.len() as u64) < n {
            line.clear();
            tokio::time::timeout(Duration::from_secs(10), sub_read.read_line(&mut line)).await??;
            if line.starts_with("PING") {
                sub_write.write_all(b"PONG\r\n").await?;
                sub_write.flush().await?;
                continue;
            }
            let len: usize = line
                .strip_prefix("MSG ")
                .and_then(|rest| rest.split_whitespace().last())
                .and_then(|l| l.parse().ok())
                .with_context(|| format!("unexpected from NATS: {line:?}"))?;
            body.resize(len + 2, 0);
            sub_read.read_exact(&mut body).await?;
            latencies.push(latency(&body[..len]).unwrap_or(u32::MAX));
        }
        anyhow::Ok((Instant::now(), latencies))
    });
    let (mut pub_read, mut pub_write) = nats_connect(&args.nats).await?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut pong = String::new();
    while sent < n {
        // A batch of `in_flight` messages, then a PING: at most that many unconfirmed.
        let batch = (args.in_flight as u64).min(n - sent);
        for _ in 0..batch {
            let p = payload(args.size);
            pub_write.write_all(format!("PUB {subject} {}\r\n", p.len()).as_bytes()).await?;
            pub_write.write_all(&p).await?;
            pub_write.write_all(b"\r\n").await?;
        }
        pub_write.write_all(b"PING\r\n").await?;
        pub_write.flush().await?;
        pong.clear();
        pub_read.read_line(&mut pong).await?;
        anyhow::ensure!(pong.starts_with("PONG"), "publishing: {pong:?}");
        sent += batch;
    }
    let (done, latencies) = receiver.await??;
    Ok(Round { per_s: n as f64 / (done - started).as_secs_f64(), latencies })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let channel = format!("nudge-bench:pubsub:{}", std::process::id());
    let subject = format!("nudge_bench.pubsub.{}", std::process::id());
    let (mut redis_rates, mut nats_rates) = (Vec::new(), Vec::new());
    let (mut redis_lat, mut nats_lat) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for redis_first in order {
            if redis_first {
                let r = redis_round(&args, &channel).await?;
                redis_rates.push(r.per_s);
                redis_lat.extend(r.latencies);
            } else {
                let r = nats_round(&args, &subject).await?;
                nats_rates.push(r.per_s);
                nats_lat.extend(r.latencies);
            }
        }
    }
    println!(
        "\n### Pub/sub backbone: {} rounds × {} messages of {} bytes, {} in flight\n",
        args.rounds, args.messages, args.size, args.in_flight
    );
    println!("| system | messages/s, median (range) | latency p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, rates, lat) in
        [("Redis 7 pub/sub (redis-rs)", &redis_rates, &mut redis_lat), ("NATS (core)", &nats_rates, &mut nats_lat)]
    {
        let mut l: Vec<f64> = lat.iter().map(|&v| f64::from(v)).collect();
        l.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.0} ({:.0}–{:.0}) | {:.2} ms | {:.2} ms |",
            median(rates),
            min(rates),
            max(rates),
            quantile(&l, 0.5) / 1000.0,
            quantile(&l, 0.99) / 1000.0
        );
    }
    Ok(())
}
