//! The whole agent (sync loop, convergence, console server) against a fake
//! controller, on libvirt's test driver and real qemu-img.

mod fake_controller;
mod layering;
mod seams;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_controller::{desired, FakeController, JOIN_TOKEN};
use kumo_agent::hypervisor::{test_node_uri, Hypervisor, LibvirtHypervisor};
use kumo_agent::{Agent, AgentConfig, AgentError};
use kumo_wire::agent::{DesiredVolume, ObservedPower, SyncRequest};
use kumo_wire::api::ImageFileRole;
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{DesiredPower, InstanceId};
use tokio_util::sync::CancellationToken;

struct RunningAgent {
    url: String,
    state_dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    async fn start(fake: &FakeController, state_dir: &Path, libvirt_uri: &str, join_token: &str) -> Self {
        Self::start_with(fake, state_dir, libvirt_uri, join_token, |_| {}).await
    }

    async fn start_with(
        fake: &FakeController,
        state_dir: &Path,
        libvirt_uri: &str,
        join_token: &str,
        tweak: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let mut config = config_for(fake, state_dir, libvirt_uri, "127.0.0.1:0");
        config.join_token = kumo_agent::config::Secret(join_token.to_owned());
        tweak(&mut config);
        Self::start_config(config).await
    }

    /// Starts an agent with `config` and the settings every test here uses.
    async fn start_config(mut config: AgentConfig) -> Self {
        config.name = "host-a".to_owned();
        config.domain_type = kumo_agent::config::DomainType::Qemu;
        config.shutdown_timeout_secs = 1;
        config.disk_gib = Some(50);
        let state_dir = config.state_dir.clone();
        let scheme = config.listen_scheme();
        let agent = Agent::start(config).await.expect("agent starts");
        let url = format!("{scheme}://{}", agent.local_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agent.run(shutdown.clone()));
        Self { url, state_dir, shutdown, task }
    }

    fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.state_dir.join("instances").join(id.as_str())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("clean exit");
    }
}

fn id(n: u32) -> InstanceId {
    format!("i-{n:017x}").parse().expect("id")
}

fn power_of(report: &SyncRequest, id: &InstanceId) -> Option<(ObservedPower, u64)> {
    report.observed.iter().find(|o| &o.id == id).map(|o| (o.power, o.applied_generation))
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_launches_serves_the_console_and_deletes() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = RunningAgent::start(&fake, dir.path(), &test_node_uri(dir.path()).expect("node"), JOIN_TOKEN).await;
    let report = fake.wait_report("first sync", |_| true).await;
    assert!(report.observed.is_empty() && report.unmanaged_domains.is_empty());
    {
        let inner = fake.lock();
        let reg = &inner.registrations[0];
        assert_eq!(
            (reg.name.as_str(), reg.hypervisor.as_str(), reg.availability_zone.as_str()),
            ("host-a", "qemu", "zone-1")
        );
        assert_eq!((reg.capacity.vcpus, reg.capacity.memory_mib, reg.capacity.disk_gib), (4, 8192 - 512, 50));
        assert_eq!(reg.agent_url, agent.url);
    }
    let creds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("host.json")).expect("host.json")).expect("json");
    assert_eq!(creds["host_token"], "host-token-0");

    let image = fake.add_kernel_image(1);
    let a = id(1);
    fake.edit(|d| d.push(desired(&a, 1, DesiredPower::Running, &image)));
    fake.wait_report("running", |r| power_of(r, &a) == Some((ObservedPower::Running, 1))).await;
    assert!(agent.instance_dir(&a).join("disk.qcow2").exists());

    let http = reqwest::Client::new();
    let console = format!("{}/v1/instances/{a}/console", agent.url);
    std::fs::write(agent.instance_dir(&a).join("console.log"), "KUMO-READY\n").expect("log");
    let resp = http.get(&console).bearer_auth("agent-token-0").send().await.expect("console");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-kumo-truncated"], "false");
    assert_eq!(resp.text().await.expect("body"), "KUMO-READY\n");
    assert_eq!(http.get(&console).send().await.expect("console").status(), 401);
    assert_eq!(http.get(&console).bearer_auth("host-token-0").send().await.expect("console").status(), 401);

    fake.edit(|d| d[0] = desired(&a, 2, DesiredPower::Deleted, &image));
    fake.wait_report("absent", |r| power_of(r, &a) == Some((ObservedPower::Absent, 2))).await;
    fake.wait_report("deletion confirmed", |r| r.observed.is_empty()).await;
    assert!(!agent.instance_dir(&a).exists(), "disk and console log are gone");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_created_and_reported_and_unlisted_ones_are_swept() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = tempfile::tempdir().expect("tempdir");
    let uri = test_node_uri(dir.path()).expect("node");
    let agent = RunningAgent::start_with(&fake, dir.path(), &uri, JOIN_TOKEN, |c| {
        c.sweep_interval_secs = 1;
        c.shared_volume_dir = Some(shared.path().to_owned());
    })
    .await;
    let volume = |n: u32, backend| DesiredVolume {
        id: format!("vol-{n:017x}").parse().expect("id"),
        backend,
        generation: 1,
        applied_generation: 0,
        present: true,
        size_gib: 1,
        source: None,
        attach: None,
    };
    let (local, nfs) = (volume(1, VolumeBackendKind::Local), volume(2, VolumeBackendKind::Shared));
    fake.edit_volumes(|v| v.extend([local.clone(), nfs.clone()]));
    let report = fake
        .wait_report("volumes created", |r| {
            r.observed_volumes.len() == 2 && r.observed_volumes.iter().all(|o| o.applied_generation == 1)
        })
        .await;
    assert_eq!(report.volume_backends, [VolumeBackendKind::Local, VolumeBackendKind::Shared]);
    assert!(report.observed_volumes.iter().all(|o| o.error.is_none() && o.stored_bytes.is_some()), "{report:#?}");
    let local_file = dir.path().join("volumes").join(format!("{}.qcow2", local.id));
    let shared_file = shared.path().join("volumes").join(format!("{}.qcow2", nfs.id));
    assert!(local_file.exists() && shared_file.exists());

    // The controller forgets both (as after a lost delete): the local file is
    // swept; the shared one is left alone (other hosts work in that directory).
    fake.edit_volumes(Vec::clear);
    for _ in 0..100 {
        if !local_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!local_file.exists(), "the leaked local volume was swept");
    assert!(shared_file.exists());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_image_is_reported_then_retried_until_it_works() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = RunningAgent::start(&fake, dir.path(), &test_node_uri(dir.path()).expect("node"), JOIN_TOKEN).await;
    let image = fake.add_kernel_image(2);
    let good = fake.lock().images[&(image.id.clone(), ImageFileRole::Initrd)].clone();
    fake.lock().images.insert((image.id.clone(), ImageFileRole::Initrd), vec![b'x'; good.len()]);
    let a = id(2);
    fake.edit(|d| d.push(desired(&a, 1, DesiredPower::Running, &image)));
    let report = fake.wait_report("error", |r| r.observed.iter().any(|o| o.error.is_some())).await;
    let obs = &report.observed[0];
    assert_eq!((obs.failed_generation, obs.applied_generation), (Some(1), 0));
    let message = obs.error.as_deref().unwrap_or_default();
    assert!(
        message.starts_with(&format!("image {} initrd: checksum mismatch: expected sha256 ", image.id)),
        "{message}"
    );

    fake.lock().images.insert((image.id.clone(), ImageFileRole::Initrd), good);
    let report = fake.wait_report("retried", |r| power_of(r, &a) == Some((ObservedPower::Running, 1))).await;
    assert_eq!(report.observed[0].error, None);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rides_out_an_outage_and_never_sends_the_join_token_after_a_401() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = RunningAgent::start(&fake, dir.path(), &test_node_uri(dir.path()).expect("node"), JOIN_TOKEN).await;
    let image = fake.add_kernel_image(3);
    let a = id(3);
    fake.edit(|d| d.push(desired(&a, 1, DesiredPower::Running, &image)));
    fake.wait_report("running", |r| power_of(r, &a) == Some((ObservedPower::Running, 1))).await;

    fake.lock().down = true;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let health: serde_json::Value =
        reqwest::get(format!("{}/healthz", agent.url)).await.expect("healthz").json().await.expect("json");
    let last_error = health["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("the controller answered 503"), "{health}");
    let reports_before = fake.lock().reports.len();
    fake.lock().down = false;
    fake.wait_report("back", |r| power_of(r, &a) == Some((ObservedPower::Running, 1))).await;
    fake.wait_report("after outage", |_| fake.lock().reports.len() > reports_before).await;

    // Issue 12: a 401 to an enrolled host is the operator's to see; the agent
    // never answers it by sending the join token (to whoever answered).
    fake.lock().host_token = Some("rotated-away".into());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health: serde_json::Value =
            reqwest::get(format!("{}/healthz", agent.url)).await.expect("healthz").json().await.expect("json");
        let err = health["last_error"].as_str().unwrap_or_default();
        if err.contains("the controller refuses this host's token") {
            assert!(err.contains("not enrolling again with the join token") && err.contains("host.json"), "{err}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error shown: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.lock().registrations.len(), 1, "the join token was sent only once, to enrol");
    let creds = std::fs::read_to_string(dir.path().join("host.json")).expect("host.json");
    assert!(creds.contains("host-token-0"), "the credentials are kept for the operator: {creds}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_join_token_is_retried_and_shown_in_healthz() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = RunningAgent::start(&fake, dir.path(), &test_node_uri(dir.path()).expect("node"), "wrong").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health: serde_json::Value =
            reqwest::get(format!("{}/healthz", agent.url)).await.expect("healthz").json().await.expect("json");
        if let Some(err) = health["last_error"].as_str() {
            assert!(
                err.contains("registration failed: the controller rejected the credentials: invalid join token"),
                "{err}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error shown: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.lock().registrations.is_empty());
    assert!(!dir.path().join("host.json").exists());
    agent.stop().await;
}

/// The only test on the shared `test:///default` driver, whose domains outlive
/// an agent within this process: that is what an agent restart looks like.
#[tokio::test(flavor = "multi_thread")]
async fn adopts_running_domains_reports_strangers_sweeps_leaks_and_self_heals() {
    // Holding a connection keeps the shared driver's state alive between agents.
    let host = LibvirtHypervisor::new("test:///default");
    host.list_domains().await.expect("connect");
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = fake.add_kernel_image(4);
    let (mine, stranger, leaked) = (id(4), id(5), id(6));

    // What a previous agent left: a running domain, a domain the controller
    // forgot, and the files of an instance whose creation failed halfway.
    let before = RunningAgent::start(&fake, dir.path(), "test:///default", JOIN_TOKEN).await;
    let mut d = desired(&mine, 3, DesiredPower::Running, &image);
    fake.edit(|list| {
        list.push(d.clone());
        list.push(desired(&stranger, 1, DesiredPower::Stopped, &image));
    });
    fake.wait_report("previous life", |r| {
        power_of(r, &mine) == Some((ObservedPower::Running, 3))
            && power_of(r, &stranger) == Some((ObservedPower::Shutoff, 1))
    })
    .await;
    before.stop().await;
    assert_eq!(
        host.domain(&format!("kumo-{mine}")).await.expect("lookup").map(|d| d.power),
        Some(ObservedPower::Running)
    );
    std::fs::create_dir_all(dir.path().join("instances").join(leaked.as_str())).expect("mkdir");
    std::fs::write(dir.path().join("instances").join(leaked.as_str()).join("console.log"), "x").expect("log");
    d.applied_generation = 3;
    fake.edit(|list| *list = vec![d.clone()]);
    let saved_images = std::mem::take(&mut fake.lock().images);
    std::fs::remove_dir_all(dir.path().join("images")).expect("clear the image cache");

    // The new agent adopts without redoing anything (the image is gone, so any redo would fail).
    let agent = RunningAgent::start(&fake, dir.path(), "test:///default", JOIN_TOKEN).await;
    let n = fake.lock().reports.len();
    let report = fake.wait_report("adopted", |r| fake.lock().reports.len() > n && !r.observed.is_empty()).await;
    assert_eq!(power_of(&report, &mine), Some((ObservedPower::Running, 3)));
    assert_eq!(report.observed[0].error, None);
    assert_eq!(report.unmanaged_domains, vec![format!("kumo-{stranger}"), "test".to_owned()]);
    fake.wait_report("swept", |_| !agent.instance_dir(&leaked).exists()).await;
    let n = fake.lock().reports.len();
    let later = fake.wait_report("a later report", |_| fake.lock().reports.len() > n + 1).await;
    assert_eq!(later.observed[0].error, None, "nothing was redone");
    assert!(host.domain(&format!("kumo-{stranger}")).await.expect("lookup").is_some(), "strangers are never destroyed");

    // Someone removes the domain behind the agent's back: it is rebuilt.
    fake.lock().images = saved_images;
    host.destroy(&format!("kumo-{mine}")).await.expect("destroy");
    host.undefine(&format!("kumo-{mine}")).await.expect("undefine");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while host.domain(&format!("kumo-{mine}")).await.expect("lookup").map(|d| d.power) != Some(ObservedPower::Running) {
        assert!(tokio::time::Instant::now() < deadline, "domain was not rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fake.lock().registrations.len(), 1, "the saved host credentials were reused");
    agent.stop().await;
    assert!(host.domain(&format!("kumo-{mine}")).await.expect("lookup").is_some(), "left running on shutdown");
    for name in [format!("kumo-{mine}"), format!("kumo-{stranger}")] {
        let _ = host.destroy(&name).await;
        host.undefine(&name).await.expect("cleanup");
    }
}

fn config_for(fake: &FakeController, state_dir: &Path, libvirt_uri: &str, listen: &str) -> AgentConfig {
    let env = [
        ("KUMO_AGENT_CONTROLLER_URL", fake.url()),
        ("KUMO_AGENT_JOIN_TOKEN", JOIN_TOKEN.to_owned()),
        ("KUMO_AGENT_LISTEN", listen.to_owned()),
        ("KUMO_AGENT_LIBVIRT_URI", libvirt_uri.to_owned()),
        ("KUMO_AGENT_STATE_DIR", state_dir.display().to_string()),
        ("KUMO_AGENT_SYNC_WAIT_MS", "300".to_owned()),
    ];
    AgentConfig::load(None, env.map(|(k, v)| (k.to_owned(), v))).expect("config")
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_errors_name_what_is_wrong() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let uri = test_node_uri(dir.path()).expect("node");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = Agent::start(config_for(&fake, dir.path(), &uri, &addr)).await.expect_err("port taken");
    assert_eq!(err.to_string(), format!("could not listen on {addr}"));

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").expect("file");
    let err = Agent::start(config_for(&fake, &file, &uri, "127.0.0.1:0")).await.expect_err("not a dir");
    assert_eq!(err.to_string(), format!("could not create the state directory {}", file.display()));

    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    std::fs::write(state.join("host.json"), "garbage").expect("write");
    let err = Agent::start(config_for(&fake, &state, &uri, "127.0.0.1:0")).await.expect_err("corrupt");
    assert!(err.to_string().contains("are corrupt (delete the file to register again)"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_libvirt_is_shown_and_nothing_is_reported() {
    let fake = FakeController::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_for(&fake, dir.path(), "test:///nonexistent/node.xml", "127.0.0.1:0");
    let agent = Agent::start(config).await.expect("starts anyway");
    let url = format!("http://{}/healthz", agent.local_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let health: serde_json::Value = reqwest::get(&url).await.expect("healthz").json().await.expect("json");
        if let Some(err) = health["last_error"].as_str() {
            assert!(
                err.starts_with("cannot observe the host; not syncing: could not connect to libvirt at test:///nonexistent/node.xml"),
                "{err}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no error shown: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.lock().reports.is_empty(), "no report without an observation");
    shutdown.cancel();
    task.await.expect("join").expect("clean exit");
}
