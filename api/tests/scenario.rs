//! A seeded, reproducible scenario through the native API, as three projects
//! and an admin, with a fake agent converging after every step (the fast
//! API-level variant; no libvirt, no host networking). The model (what each
//! project expects to exist) is kept apart from the driver (HTTP calls).
//!
//! On failure it prints the seed and the steps so far; rerun one seed with
//! `KUMO_SCENARIO_SEED=<n>` (and `KUMO_SCENARIO_STEPS=<n>` for a longer run).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent};
use kumo_wire::agent::HostCapacity;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The most instances alive at once (the fake host's vCPUs).
const MAX_LIVE: usize = 8;

const BIG: HostCapacity = HostCapacity { vcpus: 256, memory_mib: 1 << 20, disk_gib: 100_000 };

/// One step the engine takes.
#[derive(Debug, Clone)]
enum Op {
    NetCreate {
        p: usize,
        name: String,
        cidr: String,
    },
    NetDelete {
        p: usize,
        name: String,
    },
    KeyCreate {
        p: usize,
        name: String,
    },
    KeyDelete {
        p: usize,
        name: String,
    },
    VolCreate {
        p: usize,
        name: String,
    },
    VolDelete {
        p: usize,
        id: String,
    },
    Run {
        p: usize,
        name: String,
        count: u32,
    },
    Stop {
        p: usize,
        id: String,
    },
    Start {
        p: usize,
        id: String,
    },
    Delete {
        p: usize,
        id: String,
    },
    /// A request that must be refused with `status` and change nothing.
    Bad {
        p: usize,
        what: &'static str,
        method: Method,
        path: String,
        body: Option<Value>,
        status: StatusCode,
    },
}

/// What one project expects to exist.
#[derive(Debug, Default, Clone)]
struct Project {
    networks: BTreeSet<String>,
    keys: BTreeSet<String>,
    volumes: BTreeSet<String>,
    running: BTreeSet<String>,
    stopped: BTreeSet<String>,
    next: u32,
}

/// The model: three projects.
#[derive(Debug, Default)]
struct Model {
    projects: Vec<Project>,
}

impl Model {
    fn pick<'a>(rng: &mut StdRng, set: &'a BTreeSet<String>) -> Option<&'a String> {
        (!set.is_empty()).then(|| set.iter().nth(rng.gen_range(0..set.len())).unwrap())
    }

    /// A random step that is legal in the model (or a bad request).
    fn next_op(&mut self, rng: &mut StdRng, others: &[Vec<String>]) -> Op {
        let op = self.any_op(rng, others);
        // The fake host offers 8 vCPUs (2 x 4 overcommit): launches stay within it.
        let live: usize = self.projects.iter().map(|p| p.running.len() + p.stopped.len()).sum();
        match op {
            Op::Run { p, name, count } if live + count as usize > MAX_LIVE => {
                Op::KeyCreate { p, name: format!("k{name}") }
            }
            op => op,
        }
    }

    fn any_op(&mut self, rng: &mut StdRng, others: &[Vec<String>]) -> Op {
        let p = rng.gen_range(0..self.projects.len());
        let proj = &mut self.projects[p];
        proj.next += 1;
        let n = proj.next;
        match rng.gen_range(0..12) {
            0 => Op::NetCreate { p, name: format!("n{n}"), cidr: format!("10.{}.{}.0/24", 100 + p, n % 250) },
            1 => match Self::pick(rng, &proj.networks) {
                Some(name) => Op::NetDelete { p, name: name.clone() },
                None => Op::KeyCreate { p, name: format!("k{n}") },
            },
            2 => Op::KeyCreate { p, name: format!("k{n}") },
            3 => match Self::pick(rng, &proj.keys) {
                Some(name) => Op::KeyDelete { p, name: name.clone() },
                None => Op::VolCreate { p, name: format!("v{n}") },
            },
            4 => Op::VolCreate { p, name: format!("v{n}") },
            5 => match Self::pick(rng, &proj.volumes) {
                Some(id) => Op::VolDelete { p, id: id.clone() },
                None => Op::Run { p, name: format!("w{n}"), count: 1 },
            },
            6 => Op::Run { p, name: format!("w{n}"), count: rng.gen_range(1..=2) },
            7 => match Self::pick(rng, &proj.running) {
                Some(id) => Op::Stop { p, id: id.clone() },
                None => Op::Run { p, name: format!("w{n}"), count: 1 },
            },
            8 => match Self::pick(rng, &proj.stopped) {
                Some(id) => Op::Start { p, id: id.clone() },
                None => Op::KeyCreate { p, name: format!("k{n}") },
            },
            9 => {
                let all: BTreeSet<String> = proj.running.union(&proj.stopped).cloned().collect();
                match Self::pick(rng, &all) {
                    Some(id) => Op::Delete { p, id: id.clone() },
                    None => Op::VolCreate { p, name: format!("v{n}") },
                }
            }
            _ => self.bad(rng, p, others),
        }
    }

    fn bad(&self, rng: &mut StdRng, p: usize, others: &[Vec<String>]) -> Op {
        let foreign: Vec<&String> =
            others.iter().enumerate().filter(|(i, _)| *i != p).flat_map(|(_, ids)| ids).collect();
        match rng.gen_range(0..6) {
            0 => Op::Bad {
                p,
                what: "a /30 network",
                method: Method::POST,
                path: "/v1/networks".into(),
                body: Some(json!({"name": "tiny", "cidr": "10.200.0.0/30"})),
                status: StatusCode::UNPROCESSABLE_ENTITY,
            },
            1 => Op::Bad {
                p,
                what: "an unknown flavor",
                method: Method::POST,
                path: "/v1/instances".into(),
                body: Some(json!({"name": "x", "flavor": "gigantic"})),
                status: StatusCode::UNPROCESSABLE_ENTITY,
            },
            2 => Op::Bad {
                p,
                what: "a member's audit",
                method: Method::GET,
                path: "/v1/admin/audit?fresh=false".into(),
                body: None,
                status: StatusCode::FORBIDDEN,
            },
            3 => Op::Bad {
                p,
                what: "a missing key pair",
                method: Method::DELETE,
                path: "/v1/keypairs/nobody".into(),
                body: None,
                status: StatusCode::NOT_FOUND,
            },
            4 if !foreign.is_empty() => {
                let id = foreign[rng.gen_range(0..foreign.len())];
                let path =
                    if id.starts_with("vol-") { format!("/v1/volumes/{id}") } else { format!("/v1/instances/{id}") };
                Op::Bad {
                    p,
                    what: "another project's resource",
                    method: Method::GET,
                    path,
                    body: None,
                    status: StatusCode::NOT_FOUND,
                }
            }
            _ => Op::Bad {
                p,
                what: "a body that is not JSON's shape",
                method: Method::POST,
                path: "/v1/volumes".into(),
                body: Some(json!({"size_gib": "ten"})),
                status: StatusCode::UNPROCESSABLE_ENTITY,
            },
        }
    }
}

/// Drives the native API and applies each accepted step to the model.
struct Driver<'a> {
    c: &'a Cloud,
    agent: FakeAgent,
    tokens: Vec<String>,
}

impl Driver<'_> {
    async fn apply(&self, model: &mut Model, op: &Op) -> Result<(), String> {
        let expect = |(s, b): (StatusCode, Value), ok: bool| -> Result<Value, String> {
            if s.is_success() == ok {
                Ok(b)
            } else {
                Err(format!("{s}: {b}"))
            }
        };
        match op {
            Op::NetCreate { p, name, cidr } => {
                expect(self.c.post("/v1/networks", &self.tokens[*p], json!({"name": name, "cidr": cidr})).await, true)?;
                model.projects[*p].networks.insert(name.clone());
            }
            Op::NetDelete { p, name } => {
                expect(self.c.delete(&format!("/v1/networks/{name}"), &self.tokens[*p]).await, true)?;
                model.projects[*p].networks.remove(name);
            }
            Op::KeyCreate { p, name } => {
                expect(self.c.post("/v1/keypairs", &self.tokens[*p], json!({"name": name})).await, true)?;
                model.projects[*p].keys.insert(name.clone());
            }
            Op::KeyDelete { p, name } => {
                expect(self.c.delete(&format!("/v1/keypairs/{name}"), &self.tokens[*p]).await, true)?;
                model.projects[*p].keys.remove(name);
            }
            Op::VolCreate { p, name } => {
                let b = expect(
                    self.c.post("/v1/volumes", &self.tokens[*p], json!({"name": name, "size_gib": 1})).await,
                    true,
                )?;
                model.projects[*p].volumes.insert(b["id"].as_str().unwrap().to_owned());
            }
            Op::VolDelete { p, id } => {
                expect(self.c.delete(&format!("/v1/volumes/{id}"), &self.tokens[*p]).await, true)?;
                model.projects[*p].volumes.remove(id);
            }
            Op::Run { p, name, count } => {
                let body = json!({"name": name, "flavor": "mini", "count": count});
                let b = expect(self.c.post("/v1/instances", &self.tokens[*p], body).await, true)?;
                for i in b["instances"].as_array().unwrap() {
                    model.projects[*p].running.insert(i["id"].as_str().unwrap().to_owned());
                }
            }
            Op::Stop { p, id } | Op::Start { p, id } => {
                let action = if matches!(op, Op::Stop { .. }) { "stop" } else { "start" };
                let path = format!("/v1/instances/{id}/actions");
                expect(self.c.post(&path, &self.tokens[*p], json!({"action": action})).await, true)?;
                let proj = &mut model.projects[*p];
                if action == "stop" {
                    proj.running.remove(id);
                    proj.stopped.insert(id.clone());
                } else {
                    proj.stopped.remove(id);
                    proj.running.insert(id.clone());
                }
            }
            Op::Delete { p, id } => {
                expect(self.c.delete(&format!("/v1/instances/{id}"), &self.tokens[*p]).await, true)?;
                model.projects[*p].running.remove(id);
                model.projects[*p].stopped.remove(id);
            }
            Op::Bad { p, what, method, path, body, status } => {
                let (s, b) = self.c.call(method.clone(), path, Some(&self.tokens[*p]), body.clone()).await;
                if s != *status || b["message"].as_str().unwrap_or_default().is_empty() {
                    return Err(format!("{what}: expected {status} with a message, got {s}: {b}"));
                }
            }
        }
        Ok(())
    }

    /// Lets the scheduler and the fake agent settle every instance and volume.
    async fn converge(&self) {
        for _ in 0..3 {
            self.agent.converge(self.c).await;
            self.agent.converge_storage(self.c, None).await;
        }
    }

    /// Every project's reads show exactly its model: its own resources, settled.
    async fn check(&self, model: &Model) -> Result<(), String> {
        for (p, proj) in model.projects.iter().enumerate() {
            let t = &self.tokens[p];
            let list = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
            let (_, b) = self.c.get("/v1/instances?limit=1000", t).await;
            let mut running = BTreeSet::new();
            let mut stopped = BTreeSet::new();
            for i in list(&b) {
                let (id, state) = (i["id"].as_str().unwrap().to_owned(), i["state"].as_str().unwrap());
                match state {
                    "running" => drop(running.insert(id)),
                    "stopped" => drop(stopped.insert(id)),
                    "deleted" => {}
                    "error" if i["state_reason"].as_str().is_some_and(|r| !r.is_empty()) => {
                        return Err(format!("project {p}: instance {id} in error: {}", i["state_reason"]));
                    }
                    other => return Err(format!("project {p}: instance {id} still {other} after convergence: {i}")),
                }
            }
            if (running.clone(), stopped.clone()) != (proj.running.clone(), proj.stopped.clone()) {
                return Err(format!(
                    "project {p}: instances {running:?}/{stopped:?}, model {:?}/{:?}",
                    proj.running, proj.stopped
                ));
            }
            let (_, b) = self.c.get("/v1/networks", t).await;
            let nets: BTreeSet<String> =
                list(&b).iter().map(|n| n["name"].as_str().unwrap().to_owned()).filter(|n| n != "default").collect();
            if nets != proj.networks {
                return Err(format!("project {p}: networks {nets:?}, model {:?}", proj.networks));
            }
            let (_, b) = self.c.get("/v1/keypairs", t).await;
            let keys: BTreeSet<String> = list(&b).iter().map(|k| k["name"].as_str().unwrap().to_owned()).collect();
            if keys != proj.keys {
                return Err(format!("project {p}: key pairs {keys:?}, model {:?}", proj.keys));
            }
            let (_, b) = self.c.get("/v1/volumes", t).await;
            let vols: BTreeSet<String> = list(&b)
                .iter()
                .filter(|v| v["state"] != "deleted")
                .map(|v| v["id"].as_str().unwrap().to_owned())
                .collect();
            if vols != proj.volumes {
                return Err(format!("project {p}: volumes {vols:?}, model {:?}", proj.volumes));
            }
        }
        Ok(())
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("KUMO_SCENARIO_SEED") {
        Ok(s) => vec![s.parse().expect("KUMO_SCENARIO_SEED must be a number")],
        Err(_) => vec![1, 2],
    }
}

fn steps() -> usize {
    std::env::var("KUMO_SCENARIO_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

#[tokio::test]
async fn seeded_scenarios_keep_every_project_s_view_equal_to_its_model() {
    for backend in backends() {
        for seed in seeds() {
            let c = cloud(backend, |_| {}).await;
            c.kernel_image("tiny").await;
            let mut tokens = Vec::new();
            for name in ["alpha", "beta", "gamma"] {
                tokens.push(c.tenant(name).await);
                let body = json!({"instances": -1, "vcpus": -1, "ram_mib": -1, "volumes": -1, "volume_gib": -1});
                let (s, b) =
                    c.call(Method::PUT, &format!("/v1/projects/{name}/quotas"), Some(&c.admin), Some(body)).await;
                assert!(s.is_success(), "{b}");
            }
            let agent = FakeAgent::register(&c, "host-a", BIG).await;
            let driver = Driver { c: &c, agent, tokens };
            let mut model = Model { projects: vec![Project::default(); 3] };
            let mut rng = StdRng::seed_from_u64(seed);
            let mut done: Vec<String> = Vec::new();
            for step in 0..steps() {
                let ids: Vec<Vec<String>> = model
                    .projects
                    .iter()
                    .map(|p| p.volumes.iter().chain(&p.running).chain(&p.stopped).cloned().collect())
                    .collect();
                let op = model.next_op(&mut rng, &ids);
                done.push(format!("{step}: {op:?}"));
                let result = match driver.apply(&mut model, &op).await {
                    // The scheduler works in the background: give it (and the
                    // agent) a bounded number of rounds to settle everything.
                    Ok(()) => {
                        let mut last = Ok(());
                        for _ in 0..100 {
                            driver.converge().await;
                            last = driver.check(&model).await;
                            if last.is_ok() {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        last
                    }
                    Err(e) => Err(format!("refused: {e}")),
                };
                if let Err(e) = result {
                    panic!(
                        "scenario failed on {backend}, seed {seed} (rerun: KUMO_SCENARIO_SEED={seed}) at step {step}: {e}\nsteps:\n{}",
                        done.join("\n")
                    );
                }
            }
        }
    }
}
