//! A closed-loop HTTP/1.1 load generator: `connections` workers, each sending one request at
//! a time over its own kept-alive connection until the time is up, recording every latency.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header::HeaderValue};
use hyper_util::rt::TokioIo;

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub requests: u64,
    pub events: u64,
    /// Answers other than the expected status, and broken connections.
    pub failures: u64,
    pub seconds: f64,
    /// Per request, in microseconds.
    pub latencies_us: Vec<u32>,
    /// CPU seconds the measured processes used meanwhile (see [`crate::cpu`]); 0 unless
    /// measured.
    pub cpu_seconds: f64,
    /// The same per measured process, in the order of [`crate::cpu::Meter::names`].
    pub cpu_by_process: Vec<f64>,
}

impl Outcome {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// CPU microseconds per accepted event, all measured processes together.
    pub fn cpu_us_per_event(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.events as f64
    }

    /// CPU microseconds per accepted event, per measured process.
    pub fn cpu_us_per_event_by_process(&self) -> Vec<f64> {
        self.cpu_by_process.iter().map(|s| s * 1e6 / self.events as f64).collect()
    }

    /// Cores kept busy on average.
    pub fn busy_cores(&self) -> f64 {
        self.cpu_seconds / self.seconds
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn latency_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    fn merge(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.events += other.events;
        self.failures += other.failures;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// Makes the body of request `seq` of worker `worker`.
pub type BodyFn = Arc<dyn Fn(usize, u64) -> Bytes + Send + Sync>;

/// One kind of request, sent to one server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub headers: Vec<(&'static str, HeaderValue)>,
    pub body: BodyFn,
    pub events_per_request: u64,
    pub expect: StatusCode,
}

/// Sends one request and fails with the answer unless it is the expected one, so a
/// misconfigured run stops before it measures anything.
pub async fn check(target: &Target) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(target.addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::post(target.path)
        .header(hyper::header::HOST, "bench")
        .header(hyper::header::CONTENT_TYPE, "application/json");
    for (name, value) in &target.headers {
        request = request.header(*name, value.clone());
    }
    let response = sender.send_request(request.body(Full::new((target.body)(usize::MAX, 0)))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status == target.expect, "{} answered {status}: {}", target.addr, String::from_utf8_lossy(&body));
    Ok(())
}

/// Sends requests `0..requests` of one worker one after the other, each of which must get
/// the expected answer.
pub async fn send_each(target: &Target, requests: u64) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(target.addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    for seq in 0..requests {
        let mut request = Request::post(target.path)
            .header(hyper::header::HOST, "bench")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in &target.headers {
            request = request.header(*name, value.clone());
        }
        sender.ready().await?;
        let response = sender.send_request(request.body(Full::new((target.body)(0, seq)))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status == target.expect,
            "{} answered {status}: {}",
            target.addr,
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Sends requests to `target` from `connections` workers for `duration`.
pub async fn run(target: &Target, connections: usize, duration: Duration) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(connections);
    for worker in 0..connections {
        let target = target.clone();
        workers.push(tokio::spawn(async move { drive(&target, worker, deadline).await }));
    }
    let mut total = Outcome::default();
    for w in workers {
        total.merge(w.await??);
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

async fn drive(target: &Target, worker: usize, deadline: Instant) -> anyhow::Result<Outcome> {
    let stream = tokio::net::TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut out = Outcome::default();
    let mut seq = 0u64;
    while Instant::now() < deadline {
        let mut request = Request::post(target.path)
            .header(hyper::header::HOST, "bench")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in &target.headers {
            request = request.header(*name, value.clone());
        }
        let request = request.body(Full::new((target.body)(worker, seq)))?;
        seq += 1;
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        // Read the whole answer, as a client does, before the next request.
        response.into_body().collect().await?;
        let took = sent.elapsed();
        out.requests += 1;
        if status == target.expect {
            out.events += target.events_per_request;
        } else {
            out.failures += 1;
        }
        out.latencies_us.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }
    Ok(out)
}
