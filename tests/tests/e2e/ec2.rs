//! The EC2-compatible API driven by boto3 (`tests/ec2/test_ec2.py`) and the
//! AWS CLI (`tests/ec2/test_awscli.sh`), installed from PyPI into the venv
//! named by `KUMO_EC2_VENV` (scripts/test.sh creates it), against a real
//! controller, agent, libvirtd and TCG guests.

use std::path::{Path, PathBuf};
use std::process::Command;

use kumo_tests::{enabled, Options, Stack};
use serde_json::{json, Value};

fn venv() -> PathBuf {
    PathBuf::from(
        std::env::var("KUMO_EC2_VENV").expect("KUMO_EC2_VENV: a venv with boto3 and awscli (scripts/test.sh makes it)"),
    )
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A project with a member and that member's access key (id, secret), through the native API.
fn other_project_key(s: &Stack) -> (String, String) {
    let http = reqwest::blocking::Client::new();
    let post = |path: &str, token: Option<&str>, body: Value| -> Value {
        let mut req = http.post(format!("{}{path}", s.endpoint)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().unwrap()
    };
    let admin = post("/v1/auth/tokens", None, json!({"username": "admin", "password": "e2e-admin-pass"}));
    let admin = admin["token"].as_str().unwrap().to_owned();
    post("/v1/projects", Some(&admin), json!({"name": "rival"}));
    post("/v1/users", Some(&admin), json!({"name": "rival-user", "password": "rival-password-1", "project": "rival"}));
    let member = post("/v1/auth/tokens", None, json!({"username": "rival-user", "password": "rival-password-1"}));
    let key = post("/v1/access-keys", Some(member["token"].as_str().unwrap()), json!({}));
    (key["access_key_id"].as_str().unwrap().into(), key["secret_access_key"].as_str().unwrap().into())
}

#[test]
fn boto3_and_the_aws_cli_drive_kumo() {
    if !enabled() {
        return;
    }
    let mut s = Stack::start(Options::default()).unwrap();
    s.register_tiny_image().unwrap();
    s.kumo_ok(&["network", "create", "public", "--cidr", "203.0.113.0/28", "--external"]).unwrap();
    let key = s.kumo_json(&["access-key", "create"]).unwrap();
    let (id, secret) =
        (key["access_key_id"].as_str().unwrap().to_owned(), key["secret_access_key"].as_str().unwrap().to_owned());
    let listed = s.kumo_ok(&["access-key", "list"]).unwrap();
    assert!(listed.contains(&id) && !listed.contains(&secret), "{listed}");
    let (other_id, other_secret) = other_project_key(&s);
    let env = |cmd: &mut Command| {
        cmd.env("KUMO_EC2_VENV", venv())
            .env("KUMO_EC2_ENDPOINT", format!("{}/", s.endpoint))
            .env("KUMO_EC2_REGION", "kumo-1")
            .env("KUMO_EC2_KEY_ID", &id)
            .env("KUMO_EC2_SECRET", &secret)
            .env("KUMO_EC2_OTHER_KEY_ID", &other_id)
            .env("KUMO_EC2_OTHER_SECRET", &other_secret);
    };
    let mut cli = Command::new("bash");
    cli.arg(repo_file("ec2/test_awscli.sh"));
    env(&mut cli);
    let cli_out = cli.output().unwrap();
    let mut py = Command::new(venv().join("bin/python"));
    py.arg(repo_file("ec2/test_ec2.py"));
    env(&mut py);
    let py_out = if cli_out.status.success() { Some(py.output().unwrap()) } else { None };

    // Whatever happened, this test's domains are cleaned up by the stack.
    let all = s.kumo_json(&["instance", "list"]).unwrap();
    for inst in all["items"].as_array().unwrap() {
        s.track(inst["id"].as_str().unwrap());
    }
    assert!(
        cli_out.status.success(),
        "AWS CLI part failed:\n{}{}",
        String::from_utf8_lossy(&cli_out.stdout),
        String::from_utf8_lossy(&cli_out.stderr)
    );
    let py_out = py_out.unwrap();
    assert!(
        py_out.status.success(),
        "boto3 part failed:\n{}{}",
        String::from_utf8_lossy(&py_out.stdout),
        String::from_utf8_lossy(&py_out.stderr)
    );

    // Revoked: the key stops working at once.
    s.kumo_ok(&["access-key", "delete", &id]).unwrap();
    let mut cli = Command::new(venv().join("bin/aws"));
    cli.args(["--endpoint-url", &format!("{}/", s.endpoint), "ec2", "describe-regions"])
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("AWS_DEFAULT_REGION", "kumo-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    let out = cli.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AuthFailure"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Terraform's AWS provider, replayed from its source (`tests/ec2/test_terraform_replay.py`
/// names the provider functions and commits): apply, a refresh that must read back every
/// field unchanged, destroy, nothing left.
#[test]
fn terraform_provider_call_sequence_replayed() {
    if !enabled() {
        return;
    }
    let mut s = Stack::start(Options::default()).unwrap();
    s.register_tiny_image().unwrap();
    s.kumo_ok(&["network", "create", "public", "--cidr", "203.0.113.0/28", "--external"]).unwrap();
    let key = s.kumo_json(&["access-key", "create"]).unwrap();
    let mut py = Command::new(venv().join("bin/python"));
    py.arg(repo_file("ec2/test_terraform_replay.py"))
        .env("KUMO_EC2_ENDPOINT", format!("{}/", s.endpoint))
        .env("KUMO_EC2_REGION", "kumo-1")
        .env("KUMO_EC2_KEY_ID", key["access_key_id"].as_str().unwrap())
        .env("KUMO_EC2_SECRET", key["secret_access_key"].as_str().unwrap())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    let out = py.output().unwrap();
    let all = s.kumo_json(&["instance", "list", "--all"]).unwrap();
    for inst in all["items"].as_array().unwrap() {
        s.track(inst["id"].as_str().unwrap());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Terraform replay failed:\n{text}");
    assert!(text.contains("provider calls, actions:"), "{text}");
    for line in text.lines().filter(|l| l.contains("SKIPPED") || l.contains("provider calls")) {
        eprintln!("{line}");
    }
}

/// `localhost : ok=… changed=N …` of a playbook's recap.
fn changed_of(recap: &str) -> Option<u32> {
    recap
        .lines()
        .filter(|l| l.starts_with("localhost"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("changed=")?.parse().ok()))
}

/// What a project still has, as boto3 sees it: live instances, volumes, key
/// pairs, non-default groups, addresses.
const LEFT_OVER: &str = r#"
import boto3, json, os
ec2 = boto3.client("ec2", endpoint_url=os.environ["AWS_URL"], region_name=os.environ["AWS_REGION"])
live = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] != "terminated"]
print(json.dumps({
    "instances": live,
    "volumes": [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]],
    "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
    "groups": [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"],
    "addresses": [a["PublicIp"] for a in ec2.describe_addresses()["Addresses"]],
}))
"#;

#[test]
fn ansible_amazon_aws_creates_converges_and_removes() {
    if !enabled() {
        return;
    }
    if !venv().join("bin/ansible-playbook").exists() {
        panic!("ansible-playbook is missing from {}: scripts/test.sh installs ansible", venv().display());
    }
    let mut s = Stack::start(Options::default()).unwrap();
    let image = s.register_tiny_image().unwrap();
    let image = image["id"].as_str().unwrap().to_owned();
    s.kumo_ok(&["network", "create", "public", "--cidr", "203.0.113.0/28", "--external"]).unwrap();
    let key = s.kumo_json(&["access-key", "create"]).unwrap();
    let zones = Command::new(venv().join("bin/python"))
        .args(["-c", "import boto3,os; print(boto3.client('ec2', endpoint_url=os.environ['AWS_URL'], region_name=os.environ['AWS_REGION']).describe_availability_zones()['AvailabilityZones'][0]['ZoneName'])"])
        .env("AWS_URL", format!("{}/", s.endpoint))
        .env("AWS_REGION", "kumo-1")
        .env("AWS_ACCESS_KEY_ID", key["access_key_id"].as_str().unwrap())
        .env("AWS_SECRET_ACCESS_KEY", key["secret_access_key"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(zones.status.success(), "{}", String::from_utf8_lossy(&zones.stderr));
    let zone = String::from_utf8_lossy(&zones.stdout).trim().to_owned();
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("{}/", s.endpoint);
    let env = |cmd: &mut Command| {
        cmd.env("AWS_URL", &endpoint)
            .env("AWS_REGION", "kumo-1")
            .env("AWS_ACCESS_KEY_ID", key["access_key_id"].as_str().unwrap())
            .env("AWS_SECRET_ACCESS_KEY", key["secret_access_key"].as_str().unwrap())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env(
                "KUMO_PUBLIC_KEY",
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl e2e@kumo",
            )
            .env("HOME", home.path())
            .env("ANSIBLE_LOCAL_TEMP", home.path().join("tmp"))
            .env("ANSIBLE_PYTHON_INTERPRETER", venv().join("bin/python"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("PATH", format!("{}:{}", venv().join("bin").display(), std::env::var("PATH").unwrap_or_default()));
    };
    let play = |state: &str| {
        let mut cmd = Command::new(venv().join("bin/ansible-playbook"));
        cmd.arg(repo_file("ec2/ansible/lifecycle.yml")).args([
            "-i",
            "localhost,",
            "-e",
            &format!("kumo_state={state} kumo_image={image} kumo_zone={zone}"),
        ]);
        env(&mut cmd);
        let out = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let first = play("present");
    let second = if first.0 { Some(play("present")) } else { None };
    let third = play("absent");
    let all = s.kumo_json(&["instance", "list", "--all"]).unwrap();
    for inst in all["items"].as_array().unwrap() {
        s.track(inst["id"].as_str().unwrap());
    }
    assert!(first.0, "the first run failed:\n{}", first.1);
    assert!(changed_of(&first.1).is_some_and(|n| n >= 5), "the first run changes things:\n{}", first.1);
    let second = second.unwrap();
    assert!(second.0, "the second run failed:\n{}", second.1);
    assert_eq!(changed_of(&second.1), Some(0), "the second run must change nothing:\n{}", second.1);
    assert!(third.0, "the removal failed:\n{}", third.1);
    let mut left = Command::new(venv().join("bin/python"));
    left.args(["-c", LEFT_OVER]);
    env(&mut left);
    let out = left.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        left,
        json!({"instances": [], "volumes": [], "key_pairs": [], "groups": [], "addresses": []}),
        "removal leaves nothing"
    );
}
