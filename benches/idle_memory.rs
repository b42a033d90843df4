//! `idle_memory`: what idle callers cost a running sidecar. Opens `--streams` GetWorkItems
//! streams and `--waiters` WaitForInstanceCompletion calls on pending instances, and
//! reports the sidecar's resident memory (`VmRSS` of `/proc/<pid>/status`) before and
//! after each step, so the README's "Limits" can say how many bytes one waiter and one
//! stream hold. A figure, not a test; Linux only.
//!
//! ```sh
//! cargo bench --bench idle_memory -- --addr http://127.0.0.1:4001 --sidecar-pid PID
//! ```
//!
//! Run it against a fresh sidecar (release build, empty database): the instances it
//! starts stay PENDING, because its streams' work-item filters accept no orchestration.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use durabletask_sidecar::proto as pb;
use pb::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

type Client = TaskHubSidecarServiceClient<Channel>;

#[derive(Debug, Parser)]
struct Args {
    /// Sidecar gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:4001")]
    addr: String,

    /// PID of the sidecar process (its `/proc/<pid>/status` is read).
    #[arg(long)]
    sidecar_pid: u32,

    /// Idle WaitForInstanceCompletion calls to open.
    #[arg(long, default_value_t = 10_000)]
    waiters: usize,

    /// Idle GetWorkItems streams to open.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,

    /// Size of each instance's input (a JSON string), in bytes: shows whether a waiter's
    /// cost grows with the instance it waits for.
    #[arg(long, default_value_t = 0)]
    input_bytes: usize,

    /// HTTP/2 connections the calls are spread over (a server limits concurrent
    /// streams per connection).
    #[arg(long, default_value_t = 100)]
    connections: usize,

    /// `cargo bench` passes `--bench` to every bench target; accepted and ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is --sidecar-pid right?)"))?;
    let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) else {
        bail!("no VmRSS in /proc/{pid}/status");
    };
    line.split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()
        .context("non-numeric VmRSS")
}

/// RSS once it has stopped moving: the calls just opened are registered on the server
/// side some time after the client sent them (each waiter first reads its instance), and
/// nothing reports that moment. So: at least 5 s, then three readings a second apart
/// within 0.5% of each other.
async fn settled_rss(pid: u32) -> Result<u64> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut readings = vec![rss_kib(pid)?];
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        readings.push(rss_kib(pid)?);
        let last3 = &readings[readings.len().saturating_sub(3)..];
        let (lo, hi) = (last3.iter().min(), last3.iter().max());
        if let (3, Some(&lo), Some(&hi)) = (last3.len(), lo, hi) {
            if (hi - lo) * 200 <= hi {
                return Ok(hi);
            }
        }
    }
    readings.last().copied().context("no reading")
}

fn per_item_bytes(before: u64, after: u64, n: usize) -> f64 {
    (after as f64 - before as f64) * 1024.0 / n.max(1) as f64
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(Client::connect(args.addr.clone()).await?);
    }
    let pick = |i: usize| clients[i % clients.len()].clone();

    let base = settled_rss(args.sidecar_pid).await?;
    println!("baseline                      RSS {:>9} KiB", base);

    // Streams whose filters accept only an orchestration nobody starts: they stay idle.
    let mut streams = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let request = pb::GetWorkItemsRequest {
            work_item_filters: Some(pb::WorkItemFilters {
                orchestrations: vec![pb::OrchestrationFilter {
                    name: "IdleMemoryNone".into(),
                    versions: Vec::new(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        streams.push(pick(i).get_work_items(request).await?.into_inner());
    }
    let with_streams = settled_rss(args.sidecar_pid).await?;
    println!(
        "+ {:>6} idle streams        RSS {:>9} KiB  {:>8.0} bytes per stream",
        args.streams,
        with_streams,
        per_item_bytes(base, with_streams, args.streams)
    );

    let ids: Vec<String> = (0..args.waiters)
        .map(|i| format!("idle-memory-{i}"))
        .collect();
    let input = (args.input_bytes > 0).then(|| format!("\"{}\"", "x".repeat(args.input_bytes)));
    let mut starts = JoinSet::new();
    for (i, chunk) in ids.chunks(100).enumerate() {
        let (mut c, chunk, input) = (pick(i), chunk.to_vec(), input.clone());
        starts.spawn(async move {
            for id in chunk {
                c.start_instance(pb::CreateInstanceRequest {
                    instance_id: id,
                    name: "IdleMemory".into(),
                    input: input.clone(),
                    ..Default::default()
                })
                .await?;
            }
            Ok::<_, tonic::Status>(())
        });
    }
    while let Some(r) = starts.join_next().await {
        r??;
    }
    let with_instances = settled_rss(args.sidecar_pid).await?;
    println!(
        "+ {:>6} pending instances   RSS {:>9} KiB  {:>8.0} bytes per instance",
        args.waiters,
        with_instances,
        per_item_bytes(with_streams, with_instances, args.waiters)
    );

    let mut waiters = JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let (mut c, id) = (pick(i), id.clone());
        waiters.spawn(async move {
            c.wait_for_instance_completion(pb::GetInstanceRequest {
                instance_id: id,
                get_inputs_and_outputs: false,
            })
            .await
        });
    }
    let with_waiters = settled_rss(args.sidecar_pid).await?;
    println!(
        "+ {:>6} idle waiters        RSS {:>9} KiB  {:>8.0} bytes per waiter",
        args.waiters,
        with_waiters,
        per_item_bytes(with_instances, with_waiters, args.waiters)
    );
    if let Some(done) = waiters.try_join_next() {
        bail!("a waiter returned early: {done:?}");
    }
    waiters.abort_all();
    drop(streams);
    Ok(())
}
