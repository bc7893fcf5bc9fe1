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
