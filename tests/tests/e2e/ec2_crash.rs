//! Idempotency that survives a controller crash: the controller is made to
//! abort (the test-only fault points of `kumo_api::faults`, armed with
//! `KUMO_TEST_FAULT_POINT`) between claiming a `ClientToken` and committing
//! what it creates, and after committing but before answering; a retry with
//! the same token through the restarted controller then gets exactly one
//! resource: a clean new one in the first case, the committed one in the
//! second, never an empty reservation nor a second resource. Driven with the
//! AWS SDK for Rust, retries off so the test decides when to retry.

use std::os::unix::process::ExitStatusExt;

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::Client;
use kumo_tests::{enabled, Options, Stack};

fn client(endpoint: &str, id: &str, secret: &str) -> Client {
    Client::from_conf(crate::ec2_sdk::config(endpoint, id, secret).retry_config(RetryConfig::disabled()).build())
}

/// Ids of every instance (`what` = "instance") or volume of the project, deleted ones too.
fn ids(s: &Stack, what: &str) -> Vec<String> {
    let list = s.kumo_json(&[what, "list", "--all"]).unwrap();
    let mut ids: Vec<String> =
        list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// Arms `point`, runs `call` (which must fail: the controller aborts), checks
/// that the controller died of SIGABRT, and starts it again unarmed.
fn crash_at<T: std::fmt::Debug, E>(
    s: &mut Stack,
    rt: &tokio::runtime::Runtime,
    point: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) {
    s.respawn_api_with(&[("KUMO_TEST_FAULT_POINT", point)]).unwrap();
    let answer = rt.block_on(call);
    assert!(
        answer.is_err(),
        "the call answered although the controller should have aborted at {point}: {:?}",
        answer.ok()
    );
    let status = s.api.child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc_sigabrt()),
        "the controller did not abort at {point}: {status:?}\n{}",
        s.logs()
    );
    s.respawn_api_with(&[]).unwrap();
}

const fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn a_client_token_retry_after_a_controller_crash_gets_exactly_one_resource_on_sqlite() {
    if enabled() {
        crash_and_retry(Options::default());
    }
}

#[test]
fn a_client_token_retry_after_a_controller_crash_gets_exactly_one_resource_on_postgres() {
    if !enabled() {
        return;
    }
    let base = std::env::var("KUMO_TEST_POSTGRES_URL").expect("scripts/test.sh starts PostgreSQL");
    let name = format!("kumo_e2e_{}", &kumo_wire::HostId::generate().as_str()[5..]);
    let status = std::process::Command::new("psql")
        .args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .unwrap();
    assert!(status.success());
    let (prefix, _) = base.rsplit_once('/').unwrap();
    crash_and_retry(Options { database_url: Some(format!("{prefix}/{name}")), ..Options::default() });
}

fn crash_and_retry(opts: Options) {
    let mut s = Stack::start(opts).unwrap();
    s.register_tiny_image().unwrap();
    let key = s.kumo_json(&["access-key", "create"]).unwrap();
    let (id, secret) =
        (key["access_key_id"].as_str().unwrap().to_owned(), key["secret_access_key"].as_str().unwrap().to_owned());
    let ec2 = client(&format!("{}/", s.endpoint), &id, &secret);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let zone = rt.block_on(ec2.describe_availability_zones().send()).unwrap().availability_zones()[0]
        .zone_name()
        .unwrap()
        .to_owned();

    // CreateVolume, killed with the token claimed but nothing committed: the
    // retry creates the one volume, a second retry answers the same one.
    let create = |token: &str| ec2.create_volume().availability_zone(&zone).size(1).client_token(token).send();
    crash_at(&mut s, &rt, "ec2.CreateVolume.token_claimed", create("vol-crash-1"));
    assert_eq!(ids(&s, "volume"), Vec::<String>::new(), "an uncommitted CreateVolume left a volume");
    let first = rt.block_on(create("vol-crash-1")).unwrap().volume_id().unwrap().to_owned();
    let again = rt.block_on(create("vol-crash-1")).unwrap().volume_id().unwrap().to_owned();
    assert_eq!(first, again);
    assert_eq!(ids(&s, "volume"), [first.as_str()]);

    // Killed after the commit, before the answer: the retry answers the committed volume.
    crash_at(&mut s, &rt, "ec2.CreateVolume.committed", create("vol-crash-2"));
    let after_crash = ids(&s, "volume");
    assert_eq!(after_crash.len(), 2, "the committed volume should exist once: {after_crash:?}");
    let committed = after_crash.iter().find(|v| **v != first).unwrap().clone();
    let retried = rt.block_on(create("vol-crash-2")).unwrap().volume_id().unwrap().to_owned();
    assert_eq!(retried, committed);
    assert_eq!(ids(&s, "volume").len(), 2);

    // RunInstances: the host is disabled so no guest boots (the launches end
    // in `error`, unplaced); the reservations are what is checked.
    s.kumo_ok(&["host", "disable", &s.host_name.clone()]).unwrap();
    let image = rt
        .block_on(
            ec2.describe_images()
                .filters(aws_sdk_ec2::types::Filter::builder().name("name").values("tiny").build())
                .send(),
        )
        .unwrap()
        .images()[0]
        .image_id()
        .unwrap()
        .to_owned();
    let run = |token: &str| {
        ec2.run_instances()
            .image_id(&image)
            .instance_type("mini".into())
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .send()
    };
    let reserved = |out: aws_sdk_ec2::operation::run_instances::RunInstancesOutput| -> Vec<String> {
        out.instances().iter().map(|i| i.instance_id().unwrap().to_owned()).collect()
    };
    crash_at(&mut s, &rt, "ec2.RunInstances.token_claimed", run("run-crash-1"));
    assert_eq!(ids(&s, "instance"), Vec::<String>::new(), "an uncommitted RunInstances left an instance");
    let first = reserved(rt.block_on(run("run-crash-1")).unwrap());
    assert_eq!(first.len(), 1, "the retry must launch exactly one instance, not an empty reservation");
    assert_eq!(reserved(rt.block_on(run("run-crash-1")).unwrap()), first);
    assert_eq!(ids(&s, "instance"), first);

    crash_at(&mut s, &rt, "ec2.RunInstances.committed", run("run-crash-2"));
    let after_crash = ids(&s, "instance");
    assert_eq!(after_crash.len(), 2, "the committed launch should exist once: {after_crash:?}");
    let committed: Vec<String> = after_crash.into_iter().filter(|i| *i != first[0]).collect();
    let retried = reserved(rt.block_on(run("run-crash-2")).unwrap());
    assert_eq!(retried, committed, "the retry must answer the committed reservation");
    assert_eq!(ids(&s, "instance").len(), 2);
    // The same token with other parameters is a mismatch, also after the crash.
    let other = rt.block_on(
        ec2.run_instances()
            .image_id(&image)
            .instance_type("small".into())
            .min_count(1)
            .max_count(1)
            .client_token("run-crash-2")
            .send(),
    );
    let err = other.unwrap_err();
    assert_eq!(aws_sdk_ec2::error::ProvideErrorMetadata::code(&err), Some("IdempotentParameterMismatch"), "{err:?}");
    for i in ids(&s, "instance") {
        s.track(&i);
    }
}
