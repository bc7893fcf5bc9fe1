//! `kumo-bench`: prints the foundation's performance figures.
//!
//! ```text
//! kumo-bench scheduler [--postgres URL]   place 10,000 instances onto 1,000 simulated hosts, then time /metrics' render
//! kumo-bench api-reads                    GET /v1/instances (100 instances) at concurrency 1 and 32, idle RSS
//! kumo-bench ec2                          EC2 API: RunInstances latency; DescribeInstances (100, 1,000 instances)
//!                                         at concurrency 1 and 32 with per-request controller CPU time
//! kumo-bench launch [--burst N]           API call -> guest marker, beside the same guest started by libvirt;
//!                                         the control plane's share (API accepted -> libvirt asked to start),
//!                                         one at a time and with N (default 50) launches at once
//! kumo-bench moto [--count N]             DescribeInstances with N (default 100) instances at concurrency 1 and 32,
//!                                         Kumo beside moto's server (installed in a venv at run time), and the ratio
//! ```
//! `moto` installs `moto[server]` ([`MOTO_VERSION`], or `KUMO_BENCH_MOTO_VERSION`) with pip into
//! `KUMO_BENCH_MOTO_VENV` (default `~/.cache/kumo-bench/moto-venv`) the first time, and runs its
//! server on loopback only.
//! Build with `cargo build --release --workspace --bins` and run with
//! `KUMO_BIN_DIR=target/release` so the processes it starts are release builds.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kumo_api::auth::TokenKeys;
use kumo_api::config::ControllerConfig;
use kumo_api::db::hosts::Registration;
use kumo_api::db::instances::{self, InstanceRecord};
use kumo_api::db::Db;
use kumo_api::state::{AppState, HostNotifier};
use kumo_tests::{bin, free_port, Options, Process, Stack};
use kumo_wire::agent::HostCapacity;
use kumo_wire::api::{ImageKind, Visibility};
use kumo_wire::{DesiredPower, InstanceId, InstanceState, Timestamp};
use serde_json::{json, Value};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("scheduler") => {
            let url = args.iter().position(|a| a == "--postgres").and_then(|i| args.get(i + 1)).cloned();
            rt.block_on(scheduler(url))
        }
        Some("api-reads") => rt.block_on(api_reads()),
        Some("launch") => {
            let burst =
                args.iter().position(|a| a == "--burst").and_then(|i| args.get(i + 1)).map_or(Ok(50), |n| n.parse())?;
            launch(burst)
        }
        Some("ec2") => rt.block_on(ec2_bench()),
        Some("moto") => {
            let count = args
                .iter()
                .position(|a| a == "--count")
                .and_then(|i| args.get(i + 1))
                .map_or(Ok(100), |n| n.parse())?;
            rt.block_on(moto_compare(count))
        }
        _ => bail!(
            "usage: kumo-bench scheduler [--postgres URL] | api-reads | ec2 | launch [--burst N] | moto [--count N]"
        ),
    }
}

// ------------------------------------------------------------------ scheduler

/// Marks the start of a phase of a benchmark. It does nothing, but it is a function
/// callgrind can cut its counts at: `valgrind --tool=callgrind --dump-before='*kumo_bench*phase*'
/// kumo-bench scheduler` writes one part per phase (the set-up, the placements, the checks),
/// each with every thread's instructions, the database's worker threads included.
#[inline(never)]
fn phase(name: &str) {
    std::hint::black_box(name);
}

async fn scheduler(postgres: Option<String>) -> Result<()> {
    const HOSTS: usize = 1_000;
    const INSTANCES: usize = 10_000;
    let dir = tempfile::tempdir()?;
    let mut created = None;
    let url = match &postgres {
        Some(base) => {
            let name = format!("kumo_bench_{}", &InstanceId::generate().as_str()[2..]);
            created = Some((base.clone(), name.clone()));
            let status =
                Command::new("psql").args([base.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")]).status()?;
            if !status.success() {
                bail!("cannot create database {name}");
            }
            let (prefix, _) = base.rsplit_once('/').context("postgres URL without database")?;
            format!("{prefix}/{name}")
        }
        None => format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display()),
    };
    let config = ControllerConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(url.clone()),
        host_timeout_secs: 24 * 3600,
        ..ControllerConfig::default()
    };
    let db = Db::connect(&url, 8).await?;
    let boot = kumo_api::bootstrap::bootstrap(&db, &config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let project = db.find_project("admin").await?.context("admin project")?;
    let image = db.insert_image(&project.id, "bench", ImageKind::Kernel, None, Visibility::Public).await?;
    for i in 0..HOSTS {
        db.register_host(&Registration {
            name: &format!("host-{i:04}"),
            token_hash: &format!("{i:064}"),
            agent_token: "x",
            agent_url: "http://127.0.0.1:9",
            hypervisor: "qemu",
            availability_zone: "zone-1",
            capacity: HostCapacity { vcpus: 32, memory_mib: 131_072, disk_gib: 4_000 },
        })
        .await?;
    }
    let now = Timestamp::now();
    for chunk in 0..(INSTANCES / 500) {
        let mut tx = db.begin_write().await?;
        for n in 0..500 {
            let created = now.plus_millis((chunk * 500 + n) as i64);
            let rec = InstanceRecord {
                id: InstanceId::generate(),
                project_id: project.id.clone(),
                name: format!("b{}", chunk * 500 + n),
                flavor_name: "small".into(),
                vcpus: 1,
                memory_mib: 1024,
                disk_gib: 10,
                image_id: image.id.clone(),
                key_pair_name: None,
                ssh_public_key: None,
                user_data: None,
                config_drive: false,
                metadata_options: Default::default(),
                host_id: None,
                required_host_id: None,
                host_name: None,
                state: InstanceState::Pending,
                state_reason: None,
                state_deadline: Some(now.plus_millis(3_600_000)),
                desired: DesiredPower::Running,
                generation: 1,
                applied_generation: 0,
                reboot_generation: None,
                placement: None,
                created_by: "bench".into(),
                created_at: created,
                updated_at: created,
                launched_at: None,
                deleted_at: None,
            };
            instances::insert(&mut tx, &rec).await?;
        }
        tx.commit().await?;
    }
    let guards = Arc::new(kumo_api::guards::Guards::new(&config));
    let sealer = Arc::new(kumo_api::sealing::Sealer::open(&config.data_dir, true)?);
    let state = AppState {
        db: db.clone(),
        config: Arc::new(config),
        keys: Arc::new(TokenKeys::from_secret(b"bench", 60)),
        images: kumo_api::image_store::ImageFiles::directory(dir.path().join("images"))?,
        join_token: Arc::new(boot.join_check),
        sealer,
        hosts: Arc::new(HostNotifier::default()),
        scheduler_wake: Arc::new(tokio::sync::Notify::new()),
        http: reqwest::Client::new(),
        guards,
        metrics: Arc::new(kumo_api::metrics::Metrics::new()),
    };
    phase("schedule");
    let cpu_before = cpu_ticks(std::process::id())?;
    let start = Instant::now();
    let mut placed = 0;
    loop {
        let n = kumo_api::scheduler::schedule_pending(&state, 500).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        if n == 0 {
            break;
        }
        placed += n;
    }
    let wall = start.elapsed();
    let cpu_ms = (cpu_ticks(std::process::id())? - cpu_before) * 10;
    phase("check");
    let hosts = db.list_hosts().await?;
    let used: u64 = hosts.iter().map(|h| u64::from(h.host.used_vcpus)).sum();
    let busiest = hosts.iter().map(|h| h.host.instances).max().unwrap_or(0);
    let backend = if postgres.is_some() { "postgres" } else { "sqlite" };
    println!(
        "scheduler[{backend}]: placed {placed} instances on {HOSTS} hosts in {:.2} s ({:.0} placements/s, {:.0} us each; \
         {cpu_ms} ms of this process's CPU); vCPUs claimed {used}; most instances on one host {busiest}",
        wall.as_secs_f64(),
        placed as f64 / wall.as_secs_f64(),
        wall.as_micros() as f64 / placed.max(1) as f64
    );
    if placed != INSTANCES || used != INSTANCES as u64 {
        bail!("expected {INSTANCES} placements");
    }
    // `GET /metrics`' work (one GROUP BY, the host list, encoding), in process.
    let mut scrapes = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let started = Instant::now();
        bytes = state.metrics.render(&state).await.map_err(|e| anyhow::anyhow!("{e}"))?.len();
        scrapes.push(started.elapsed());
    }
    scrapes.sort();
    println!(
        "metrics[{backend}]: render with {INSTANCES} instances and {HOSTS} hosts: p50 {:.1} ms, max {:.1} ms, {bytes} bytes",
        percentile(&scrapes, 0.5).as_secs_f64() * 1000.0,
        scrapes[scrapes.len() - 1].as_secs_f64() * 1000.0
    );
    drop(state);
    db.pool().close().await;
    if let Some((base, name)) = created {
        Command::new("psql")
            .args([base.as_str(), "-q", "-c", &format!("DROP DATABASE {name} WITH (FORCE)")])
            .status()?;
    }
    Ok(())
}

// ------------------------------------------------------------------ api reads

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn load(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    pid: u32,
    concurrency: usize,
    total: usize,
) -> Result<()> {
    let per_task = total / concurrency;
    let cpu_before = cpu_ticks(pid)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                let resp = client.get(&url).bearer_auth(&token).send().await?;
                if !resp.status().is_success() {
                    bail!("status {}", resp.status());
                }
                let body = resp.bytes().await?;
                if body.len() < 1000 {
                    bail!("short body");
                }
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = start.elapsed();
    let cpu_ms = (cpu_ticks(pid)? - cpu_before) as f64 * 10.0;
    all.sort();
    println!(
        "api-reads: GET /v1/instances (100 instances), concurrency {concurrency:>2}: {:>6.0} req/s, p50 {:.2} ms, p99 {:.2} ms, \
         controller CPU {:.3} ms/request ({} requests)",
        all.len() as f64 / wall.as_secs_f64(),
        percentile(&all, 0.50).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0,
        cpu_ms / all.len() as f64,
        all.len()
    );
    Ok(())
}

async fn api_reads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "listen = '127.0.0.1:{port}'\ndata_dir = '{}'\nadmin_password = 'bench-pass'\njoin_token = 'bench-join'\n",
            dir.path().join("data").display()
        ) + &std::env::var("KUMO_BENCH_DATABASE_URL").map(|u| format!("database_url = '{u}'\n")).unwrap_or_default(),
    )?;
    let mut cmd = Command::new(bin("kumo-api"));
    cmd.arg("--config").arg(&config).env("KUMO_LOG", "warn");
    let api = spawn(cmd, &dir.path().join("api.log"))?;
    let client = reqwest::Client::new();
    wait_up(&client, &endpoint).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(api.child.id())?;

    let token = client
        .post(format!("{endpoint}/v1/auth/tokens"))
        .json(&json!({"username": "admin", "password": "bench-pass"}))
        .send()
        .await?
        .json::<Value>()
        .await?["token"]
        .as_str()
        .context("token")?
        .to_owned();
    let reg: Value = client
        .post(format!("{endpoint}/agent/v1/register"))
        .json(&json!({"join_token": "bench-join", "name": "bench-host", "agent_url": "http://127.0.0.1:9",
            "capacity": {"vcpus": 64, "memory_mib": 262144, "disk_gib": 10000}, "hypervisor": "qemu", "availability_zone": "z"}))
        .send()
        .await?
        .json()
        .await?;
    let host_token = reg["host_token"].as_str().context("host token")?.to_owned();
    let img: Value = client
        .post(format!("{endpoint}/v1/images"))
        .bearer_auth(&token)
        .json(&json!({"name": "tiny", "kind": "kernel", "visibility": "public"}))
        .send()
        .await?
        .json()
        .await?;
    let image_id = img["id"].as_str().context("image id")?;
    for role in ["kernel", "initrd"] {
        client
            .put(format!("{endpoint}/v1/images/{image_id}/files/{role}"))
            .bearer_auth(&token)
            .body("bytes")
            .send()
            .await?;
    }
    let run = client
        .post(format!("{endpoint}/v1/instances"))
        .bearer_auth(&token)
        .json(&json!({"name": "web", "flavor": "mini", "count": 100}))
        .send()
        .await?;
    if !run.status().is_success() {
        bail!("run: {}", run.text().await?);
    }
    // Play the agent: confirm every instance running.
    let capacity = json!({"vcpus": 64, "memory_mib": 262144, "disk_gib": 10000});
    for _ in 0..50 {
        let desired: Value = client
            .post(format!("{endpoint}/agent/v1/sync"))
            .bearer_auth(&host_token)
            .json(&json!({"observed": [], "unmanaged_domains": [], "capacity": capacity, "known_revision": null, "wait_ms": 0}))
            .send()
            .await?
            .json()
            .await?;
        let list = desired["instances"].as_array().cloned().unwrap_or_default();
        if list.len() == 100 {
            let observed: Vec<Value> = list
                .iter()
                .map(|d| {
                    json!({"id": d["id"], "power": "running", "applied_generation": d["generation"],
                    "error": null, "failed_generation": null, "observed_at": Timestamp::now().to_string()})
                })
                .collect();
            client
                .post(format!("{endpoint}/agent/v1/sync"))
                .bearer_auth(&host_token)
                .json(&json!({"observed": observed, "unmanaged_domains": [], "capacity": capacity, "known_revision": null, "wait_ms": 0}))
                .send()
                .await?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("{endpoint}/v1/instances?limit=100");
    let page: Value = client.get(&url).bearer_auth(&token).send().await?.json().await?;
    let running = page["items"].as_array().map_or(0, |a| a.iter().filter(|i| i["state"] == "running").count());
    println!("api-reads: {running} of 100 instances running; page size {} bytes", page.to_string().len());
    let pid = api.child.id();
    load(&client, &url, &token, pid, 1, 2_000).await?;
    load(&client, &url, &token, pid, 32, 10_000).await?;
    let after_rss = rss_kib(api.child.id())?;
    println!("memory: idle controller RSS {} MiB at start, {} MiB after the load", idle_rss / 1024, after_rss / 1024);
    Ok(())
}

fn spawn(cmd: Command, log: &Path) -> Result<Process> {
    let mut cmd = cmd;
    let out = std::fs::File::create(log)?;
    cmd.stdout(out.try_clone()?).stderr(out);
    Ok(Process { child: cmd.spawn()?, log: log.to_owned() })
}

async fn wait_up(client: &reqwest::Client, endpoint: &str) -> Result<()> {
    for _ in 0..200 {
        if client.get(format!("{endpoint}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("controller did not start")
}

// ------------------------------------------------------------------ ec2

/// Signs EC2 Query requests with SigV4, as boto3 does.
#[derive(Clone)]
struct Ec2Signer {
    url: String,
    key: String,
    secret: String,
    /// The credential scope's region (`kumo-1` for Kumo; moto wants a real AWS region).
    region: String,
}

impl Ec2Signer {
    fn request(&self, client: &reqwest::Client, params: &[(&str, &str)]) -> Result<reqwest::RequestBuilder> {
        use kumo_api::ec2::sigv4;
        let mut all = vec![("Version", "2016-11-15")];
        all.extend_from_slice(params);
        let body = serde_urlencoded::to_string(&all)?;
        let amz_date = sigv4::format_amz_date(Timestamp::now().millis() / 1000);
        let host = self.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("host", host.parse()?);
        headers.insert("x-amz-date", amz_date.parse()?);
        headers.insert("content-type", "application/x-www-form-urlencoded; charset=utf-8".parse()?);
        // Like boto3: a fresh signed invocation id, so no two calls share a signature.
        let invocation = kumo_wire::InstanceId::generate().as_str().to_owned();
        headers.insert("amz-sdk-invocation-id", invocation.parse()?);
        let signed =
            ["amz-sdk-invocation-id".to_owned(), "content-type".to_owned(), "host".to_owned(), "x-amz-date".to_owned()];
        let cred = sigv4::Credential {
            access_key_id: self.key.clone(),
            date: amz_date[..8].to_owned(),
            region: self.region.clone(),
            service: "ec2".into(),
        };
        let req = sigv4::Request { method: "POST", path: "/", query: "", headers: &headers, body: body.as_bytes() };
        let auth = sigv4::sign(&req, &cred, &self.secret, &signed, &amz_date);
        Ok(client
            .post(&self.url)
            .header("amz-sdk-invocation-id", invocation)
            .header("x-amz-date", amz_date)
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .header("authorization", auth)
            .body(body))
    }

    async fn call(&self, client: &reqwest::Client, params: &[(&str, &str)]) -> Result<String> {
        let resp = self.request(client, params)?.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{params:?}: {status} {text}");
        }
        Ok(text)
    }
}

/// User plus system CPU time of a process, in clock ticks (100 a second on Linux).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Times `total` DescribeInstances calls at `concurrency`, prints the figures under `label`
/// (with `pid`'s CPU time per request) and returns the requests per second.
async fn describe_load(
    client: &reqwest::Client,
    signer: &Ec2Signer,
    label: &str,
    pid: u32,
    n: usize,
    concurrency: usize,
    total: usize,
) -> Result<f64> {
    let per_task = total / concurrency;
    let cpu_before = cpu_ticks(pid)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, signer) = (client.clone(), signer.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                let body = signer.call(&client, &[("Action", "DescribeInstances"), ("MaxResults", "1000")]).await?;
                if body.len() < 1000 {
                    bail!("short body");
                }
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = start.elapsed();
    let cpu_ms = (cpu_ticks(pid)? - cpu_before) as f64 * 10.0;
    all.sort();
    let rate = all.len() as f64 / wall.as_secs_f64();
    println!(
        "{label}: DescribeInstances ({n} instances), concurrency {concurrency:>2}: {rate:>6.1} req/s, p50 {:.1} ms, \
         p99 {:.1} ms, server CPU {:.2} ms/request ({} requests)",
        percentile(&all, 0.50).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0,
        cpu_ms / all.len() as f64,
        all.len()
    );
    Ok(rate)
}

/// A controller with an EC2 access key, a public image and a /20 subnet to launch into.
struct Ec2Stack {
    api: Process,
    signer: Ec2Signer,
    image_id: String,
    subnet: String,
    _dir: tempfile::TempDir,
}

async fn ec2_stack(client: &reqwest::Client) -> Result<Ec2Stack> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "listen = '127.0.0.1:{port}'\ndata_dir = '{}'\nadmin_password = 'bench-pass'\njoin_token = 'bench-join'\n",
            dir.path().join("data").display()
        ) + &std::env::var("KUMO_BENCH_DATABASE_URL").map(|u| format!("database_url = '{u}'\n")).unwrap_or_default(),
    )?;
    let mut cmd = Command::new(bin("kumo-api"));
    cmd.arg("--config").arg(&config).env("KUMO_LOG", "warn");
    let api = spawn(cmd, &dir.path().join("api.log"))?;
    wait_up(&client, &endpoint).await?;
    let token = client
        .post(format!("{endpoint}/v1/auth/tokens"))
        .json(&json!({"username": "admin", "password": "bench-pass"}))
        .send()
        .await?
        .json::<Value>()
        .await?["token"]
        .as_str()
        .context("token")?
        .to_owned();
    client
        .put(format!("{endpoint}/v1/quotas/defaults"))
        .bearer_auth(&token)
        .json(&json!({"instances": 100_000, "vcpus": 100_000, "ram_mib": 100_000_000}))
        .send()
        .await?
        .error_for_status()?;
    client
        .post(format!("{endpoint}/agent/v1/register"))
        .json(&json!({"join_token": "bench-join", "name": "bench-host", "agent_url": "http://127.0.0.1:9",
            "capacity": {"vcpus": 1024, "memory_mib": 1_048_576, "disk_gib": 100_000}, "hypervisor": "qemu", "availability_zone": "zone-1"}))
        .send()
        .await?
        .error_for_status()?;
    let img: Value = client
        .post(format!("{endpoint}/v1/images"))
        .bearer_auth(&token)
        .json(&json!({"name": "tiny", "kind": "kernel", "visibility": "public"}))
        .send()
        .await?
        .json()
        .await?;
    let image_id = img["id"].as_str().context("image id")?.to_owned();
    for role in ["kernel", "initrd"] {
        client
            .put(format!("{endpoint}/v1/images/{image_id}/files/{role}"))
            .bearer_auth(&token)
            .body("bytes")
            .send()
            .await?;
    }
    // The default /24 holds about 250 instances: launch into a /20.
    let net: Value = client
        .post(format!("{endpoint}/v1/networks"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench", "cidr": "10.64.0.0/20"}))
        .send()
        .await?
        .json()
        .await?;
    let subnet = format!("subnet-{}", net["id"].as_str().context("network id")?.trim_start_matches("net-"));
    let key: Value = client.post(format!("{endpoint}/v1/access-keys")).bearer_auth(&token).send().await?.json().await?;
    let signer = Ec2Signer {
        url: format!("{endpoint}/"),
        key: key["access_key_id"].as_str().context("key")?.into(),
        secret: key["secret_access_key"].as_str().context("secret")?.into(),
        region: "kumo-1".into(),
    };

    Ok(Ec2Stack { api, signer, image_id, subnet, _dir: dir })
}

async fn ec2_bench() -> Result<()> {
    let client = reqwest::Client::new();
    let Ec2Stack { api, signer, image_id, subnet, _dir } = ec2_stack(&client).await?;
    let pid = api.child.id();
    // RunInstances latency: one instance per call, each with its own client token.
    let mut lat = Vec::new();
    for n in 0..100 {
        let token = format!("bench-{n}");
        let t = Instant::now();
        signer
            .call(
                &client,
                &[
                    ("Action", "RunInstances"),
                    ("ImageId", &image_id),
                    ("InstanceType", "mini"),
                    ("MinCount", "1"),
                    ("MaxCount", "1"),
                    ("ClientToken", &token),
                    ("SubnetId", &subnet),
                ],
            )
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "ec2: RunInstances (1 instance, ClientToken), sequential: p50 {:.1} ms, p99 {:.1} ms ({} calls)",
        percentile(&lat, 0.50).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        lat.len()
    );
    describe_load(&client, &signer, "ec2", pid, 100, 1, 300).await?;
    describe_load(&client, &signer, "ec2", pid, 100, 32, 1_600).await?;
    for n in 0..9 {
        let token = format!("bulk-{n}");
        signer
            .call(
                &client,
                &[
                    ("Action", "RunInstances"),
                    ("ImageId", &image_id),
                    ("InstanceType", "mini"),
                    ("MinCount", "100"),
                    ("MaxCount", "100"),
                    ("ClientToken", &token),
                    ("SubnetId", &subnet),
                ],
            )
            .await?;
    }
    describe_load(&client, &signer, "ec2", pid, 1_000, 1, 40).await?;
    describe_load(&client, &signer, "ec2", pid, 1_000, 32, 320).await?;
    Ok(())
}

// ------------------------------------------------------------------ moto

/// The moto release `kumo-bench moto` installs (`KUMO_BENCH_MOTO_VERSION` overrides it).
const MOTO_VERSION: &str = "5.2.5";

/// A venv with moto's server, made (with pip) the first time.
fn moto_venv() -> Result<std::path::PathBuf> {
    let venv = match std::env::var_os("KUMO_BENCH_MOTO_VENV") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set (or set KUMO_BENCH_MOTO_VENV)")?;
            std::path::PathBuf::from(home).join(".cache/kumo-bench/moto-venv")
        }
    };
    if venv.join("bin/moto_server").exists() {
        return Ok(venv);
    }
    let version = std::env::var("KUMO_BENCH_MOTO_VERSION").unwrap_or_else(|_| MOTO_VERSION.into());
    println!("moto: installing moto[server]=={version} into {}", venv.display());
    let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().context("python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv {} failed (is python3-venv installed?)", venv.display());
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", &format!("moto[server]=={version}")])
        .status()
        .context("pip install moto")?;
    if !status.success() {
        bail!("pip install moto[server]=={version} failed");
    }
    Ok(venv)
}

/// The text of the first `<tag>` element of `xml`.
fn first_element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + end])
}

/// DescribeInstances with `count` instances, Kumo beside moto's server, on this machine.
async fn moto_compare(count: usize) -> Result<()> {
    let venv = moto_venv()?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut cmd = Command::new(venv.join("bin/moto_server"));
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let moto = spawn(cmd, &dir.path().join("moto.log"))?;
    let client = reqwest::Client::new();
    let moto_url = format!("http://127.0.0.1:{port}/");
    let mut up = false;
    for _ in 0..300 {
        if client.get(format!("{moto_url}moto-api/")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        bail!("moto's server did not start (see {})", dir.path().join("moto.log").display());
    }
    let moto_signer =
        Ec2Signer { url: moto_url, key: "testing".into(), secret: "testing".into(), region: "us-east-1".into() };
    let images = moto_signer.call(&client, &[("Action", "DescribeImages"), ("Owner.1", "amazon")]).await?;
    let ami = first_element(&images, "imageId").context("moto lists no image")?.to_owned();
    let n = count.to_string();
    moto_signer
        .call(
            &client,
            &[
                ("Action", "RunInstances"),
                ("ImageId", &ami),
                ("InstanceType", "t2.micro"),
                ("MinCount", &n),
                ("MaxCount", &n),
            ],
        )
        .await?;

    let kumo = ec2_stack(&client).await?;
    kumo.signer
        .call(
            &client,
            &[
                ("Action", "RunInstances"),
                ("ImageId", &kumo.image_id),
                ("InstanceType", "mini"),
                ("MinCount", &n),
                ("MaxCount", &n),
                ("SubnetId", &kumo.subnet),
            ],
        )
        .await?;
    let (kumo_pid, moto_pid) = (kumo.api.child.id(), moto.child.id());
    let mut ratios = Vec::new();
    for (concurrency, kumo_calls, moto_calls) in [(1, 300, 20), (32, 1_600, 64)] {
        let k = describe_load(&client, &kumo.signer, "kumo", kumo_pid, count, concurrency, kumo_calls).await?;
        let m = describe_load(&client, &moto_signer, "moto", moto_pid, count, concurrency, moto_calls).await?;
        ratios.push((concurrency, k / m));
    }
    for (concurrency, ratio) in ratios {
        println!("moto: DescribeInstances ({count} instances), concurrency {concurrency:>2}: Kumo answers {ratio:.1}x the requests per second of moto");
    }
    Ok(())
}

// ------------------------------------------------------------------ launch

fn wait_marker(log: &Path, marker: &str, start: Instant, timeout: Duration) -> Result<Duration> {
    while start.elapsed() < timeout {
        if std::fs::read_to_string(log).is_ok_and(|s| s.contains(marker)) {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("no '{marker}' in {} after {timeout:?}", log.display())
}

fn virsh(args: &[&str]) -> Result<String> {
    let out = Command::new("virsh").arg("-c").arg("qemu:///system").args(args).output()?;
    if !out.status.success() {
        bail!("virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The control plane's share of each launch: from the controller accepting the call
/// (`created_at`) to the agent asking libvirt to start the domain (its "starting domain" log line).
fn control_plane_shares(agent_log: &Path, launched: &[(String, Timestamp)]) -> Result<Vec<Option<i64>>> {
    let log = std::fs::read_to_string(agent_log).unwrap_or_default();
    let mut asked: std::collections::HashMap<String, Timestamp> = std::collections::HashMap::new();
    for line in log.lines().map(strip_ansi).filter(|l| l.contains("starting domain")) {
        let (Some(at), Some(id)) = (line.split_whitespace().next(), line.split("instance=").nth(1)) else { continue };
        let id = id.split_whitespace().next().unwrap_or_default().to_owned();
        if let Some(at) = Timestamp::parse_rfc3339(at) {
            asked.entry(id).or_insert(at);
        }
    }
    Ok(launched.iter().map(|(id, created)| asked.get(id).map(|at| at.millis() - created.millis())).collect())
}

/// `line` without terminal colour sequences (`ESC [ ... m`), as the agent's log holds them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A domain `kumo-bench` defined itself: destroyed and undefined when dropped, whatever happened.
struct DirectDomain(String);

impl Drop for DirectDomain {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
        let _ = virsh(&["undefine", &self.0]);
    }
}

/// Removes every `<interface …>…</interface>` element: the direct domain runs without a NIC, since
/// the Kumo network's bridge goes away with the last instance on it (and the guest prints its
/// ready marker before it looks at its network, so the comparison is unchanged).
fn without_interfaces(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(a) = rest.find("<interface ") {
        let Some(b) = rest[a..].find("</interface>") else { break };
        let line_start = rest[..a].rfind('\n').map_or(a, |i| i + 1);
        let keep_to = if rest[line_start..a].trim().is_empty() { line_start } else { a };
        out.push_str(&rest[..keep_to]);
        rest = &rest[a + b + "</interface>".len()..];
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
    out.push_str(rest);
    out
}

fn api_token(http: &reqwest::blocking::Client, endpoint: &str) -> Result<String> {
    Ok(http
        .post(format!("{endpoint}/v1/auth/tokens"))
        .json(&json!({"username": "admin", "password": "e2e-admin-pass"}))
        .send()?
        .json::<Value>()?["token"]
        .as_str()
        .context("token")?
        .to_owned())
}

/// Launches one instance; its id and the time the controller accepted it.
fn launch_one(
    http: &reqwest::blocking::Client,
    endpoint: &str,
    token: &str,
    name: &str,
) -> Result<(String, Timestamp)> {
    let resp = http
        .post(format!("{endpoint}/v1/instances"))
        .bearer_auth(token)
        .json(&json!({"name": name, "flavor": "mini"}))
        .send()?;
    let status = resp.status();
    let body: Value = resp.json()?;
    if !status.is_success() {
        bail!("launch {name}: {status} {body}");
    }
    let inst = &body["instances"][0];
    let id = inst["id"].as_str().context("id")?.to_owned();
    let created = inst["created_at"].as_str().and_then(Timestamp::parse_rfc3339).context("created_at")?;
    Ok((id, created))
}

fn ms_percentiles(v: &mut [i64]) -> (i64, i64, i64) {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn launch(burst: usize) -> Result<()> {
    const RUNS: usize = 3;
    let mut s = Stack::start(Options::default())?;
    s.register_tiny_image()?;
    let http = reqwest::blocking::Client::new();
    let token = api_token(&http, &s.endpoint)?;
    let agent_log = s.dir.path().join("agent.log");
    let mut kumo_times = Vec::new();
    let mut launched = Vec::new();
    let mut last_id = String::new();
    for n in 0..=RUNS {
        let start = Instant::now();
        let (id, created) = launch_one(&http, &s.endpoint, &token, &format!("bench{n}"))?;
        s.track(&id);
        launched.push((id.clone(), created));
        let log = s.agent_state.join("instances").join(&id).join("console.log");
        let t = wait_marker(&log, &format!("KUMO-READY instance-id={id}"), start, Duration::from_secs(120))?;
        if n == 0 {
            println!("launch: first launch (cold image cache) API call -> marker {:.2} s", t.as_secs_f64());
        } else {
            kumo_times.push(t);
        }
        if !last_id.is_empty() {
            s.kumo_ok(&["instance", "delete", "--wait", &last_id])?;
        }
        last_id = id;
    }
    let shares = control_plane_shares(&agent_log, &launched)?;
    let mut warm: Vec<i64> = shares
        .iter()
        .skip(1)
        .map(|s| s.context("no 'starting domain' line in the agent's log"))
        .collect::<Result<_>>()?;
    let (p50, _, max) = ms_percentiles(&mut warm);
    println!(
        "launch: control plane share (API accepted -> libvirt asked to start the domain), one at a time: \
         first {} ms; warm p50 {p50} ms, max {max} ms ({RUNS} launches)",
        shares[0].map_or("?".into(), |v| v.to_string())
    );
    let agent_rss = rss_kib(s.agent.as_ref().context("agent")?.child.id())?;
    let api_rss = rss_kib(s.api.child.id())?;

    // The same guest, defined and started directly through libvirt.
    let xml = virsh(&["dumpxml", &format!("kumo-{last_id}")])?;
    s.kumo_ok(&["instance", "delete", "--wait", &last_id])?;
    let dir = s.dir.path().join("direct");
    std::fs::create_dir_all(&dir)?;
    let mut direct_times = Vec::new();
    for n in 0..RUNS {
        let name = format!("kumo-bench-direct-{n}");
        let disk = dir.join(format!("{name}.qcow2"));
        let console = dir.join(format!("{name}.log"));
        let status = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&disk).arg("1G").status()?;
        if !status.success() {
            bail!("qemu-img create failed");
        }
        let mut doc = without_interfaces(&xml);
        doc = replace_between(&doc, "<name>", "</name>", &name);
        doc = remove_between(&doc, "<uuid>", "</uuid>\n");
        doc = replace_attr_paths(&doc, "console.log", &console.to_string_lossy());
        doc = replace_attr_paths(&doc, "disk.qcow2", &disk.to_string_lossy());
        let file = dir.join(format!("{name}.xml"));
        std::fs::write(&file, doc)?;
        virsh(&["define", &file.to_string_lossy()])?;
        let _domain = DirectDomain(name.clone());
        let start = Instant::now();
        virsh(&["start", &name])?;
        direct_times.push(wait_marker(&console, "KUMO-READY", start, Duration::from_secs(120))?);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let k = median(&mut kumo_times);
    let d = median(&mut direct_times);
    println!(
        "launch: API call -> guest marker {:.2} s (median of {RUNS}, warm cache); libvirt define+start -> marker {:.2} s; \
         ratio {:.2}; Kumo adds {:.0} ms",
        k.as_secs_f64(),
        d.as_secs_f64(),
        k.as_secs_f64() / d.as_secs_f64(),
        (k.as_secs_f64() - d.as_secs_f64()) * 1000.0
    );
    println!("memory: agent RSS {} MiB, controller RSS {} MiB (after the launches)", agent_rss / 1024, api_rss / 1024);

    // `burst` launches at once, each its own API call: the control plane's share under load.
    if burst > 0 {
        let results: Vec<Result<(String, Timestamp)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..burst)
                .map(|n| {
                    let (http, endpoint, token) = (&http, s.endpoint.as_str(), token.as_str());
                    scope.spawn(move || launch_one(http, endpoint, token, &format!("burst{n}")))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("launch thread panicked"))))
                .collect()
        });
        let mut burst_ids = Vec::new();
        for r in &results {
            if let Ok((id, created)) = r {
                s.track(id);
                burst_ids.push((id.clone(), *created));
            }
        }
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.context("burst launch"));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let shares = loop {
            let shares = control_plane_shares(&agent_log, &burst_ids)?;
            if shares.iter().all(Option::is_some) {
                break shares;
            }
            if Instant::now() > deadline {
                bail!("{} of {burst} launches never reached libvirt", shares.iter().filter(|s| s.is_none()).count());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut shares: Vec<i64> = shares.into_iter().flatten().collect();
        let (p50, p99, max) = ms_percentiles(&mut shares);
        println!(
            "launch: control plane share with {burst} launches at once (API accepted -> libvirt asked to start): \
             p50 {p50} ms, p99 {p99} ms, max {max} ms"
        );
        for (id, _) in &burst_ids {
            s.kumo_ok(&["instance", "delete", id])?;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        for (id, _) in &burst_ids {
            while Instant::now() < deadline {
                let inst: Value =
                    http.get(format!("{}/v1/instances/{id}", s.endpoint)).bearer_auth(&token).send()?.json()?;
                if inst["state"] == "deleted" {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    if std::env::var("KUMO_BENCH_LOGS").is_ok() {
        println!("{}", s.logs());
    }
    Ok(())
}

fn replace_between(doc: &str, open: &str, close: &str, with: &str) -> String {
    match (doc.find(open), doc.find(close)) {
        (Some(a), Some(b)) if a < b => format!("{}{open}{with}{}", &doc[..a], &doc[b..]),
        _ => doc.to_owned(),
    }
}

fn remove_between(doc: &str, open: &str, close: &str) -> String {
    match (doc.find(open), doc.find(close)) {
        (Some(a), Some(b)) if a < b => format!("{}{}", &doc[..a], &doc[b + close.len()..]),
        _ => doc.to_owned(),
    }
}

/// Replaces every quoted path that ends in `suffix` by `with`.
fn replace_attr_paths(doc: &str, suffix: &str, with: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(end) = rest.find(&format!("{suffix}'")) {
        let start = rest[..end].rfind('\'').map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        out.push_str(with);
        rest = &rest[end + suffix.len()..];
    }
    out.push_str(rest);
    out
}
