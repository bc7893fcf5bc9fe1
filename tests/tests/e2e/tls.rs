//! TLS end to end (issue 12): the controller, the agent and the CLI talk over
//! TLS with a CA from `kumo-api tls generate`; a real guest runs and its
//! console comes back through the controller from the agent's https
//! listener. An agent or a CLI trusting another CA refuses to talk.

use std::process::Command;
use std::time::Duration;

use kumo_tests::{bin, enabled, free_port, Options, Process, Stack};

#[test]
fn a_guest_runs_with_every_link_over_tls_and_other_cas_are_refused() {
    if !enabled() {
        return;
    }
    let mut s = Stack::start(Options { tls: true, ..Options::default() }).unwrap();
    assert!(s.endpoint.starts_with("https://"), "{}", s.endpoint);
    // The agent's own listener serves https only, with a certificate of the cloud CA.
    let agent_toml: toml::Table = std::fs::read_to_string(s.dir.path().join("agent.toml")).unwrap().parse().unwrap();
    let agent_listen = agent_toml["listen"].as_str().unwrap().to_owned();
    let http = s.http_client(Duration::from_secs(5)).unwrap();
    assert_eq!(http.get(format!("https://{agent_listen}/healthz")).send().unwrap().status(), 200);
    assert!(http.get(format!("http://{agent_listen}/healthz")).send().is_err(), "no plain HTTP on the agent");

    s.register_tiny_image().unwrap();
    let ran = s.kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--timeout", "180", "tls1"]).unwrap();
    let inst = if ran["instances"].is_array() { ran["instances"][0].clone() } else { ran.clone() };
    let id = inst["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned();
    s.track(&id);
    assert_eq!(s.instance(&id).unwrap()["state"], "running");
    // The console travels agent -> controller over https (agent_ca_file) -> CLI.
    s.wait_console(&id, &format!("KUMO-READY instance-id={id} hostname=tls1"), Duration::from_secs(180)).unwrap();

    // The EC2 API over TLS: the AWS CLI with --ca-bundle, boto3 with AWS_CA_BUNDLE (README).
    let venv = std::path::PathBuf::from(
        std::env::var("KUMO_EC2_VENV").expect("KUMO_EC2_VENV: a venv with boto3 and awscli (scripts/test.sh makes it)"),
    );
    let key = s.kumo_json(&["access-key", "create"]).unwrap();
    let ca = s.ca_cert.clone().unwrap();
    let aws_env = |cmd: &mut Command| {
        cmd.env("AWS_ACCESS_KEY_ID", key["access_key_id"].as_str().unwrap())
            .env("AWS_SECRET_ACCESS_KEY", key["secret_access_key"].as_str().unwrap())
            .env("AWS_DEFAULT_REGION", "kumo-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_CA_BUNDLE");
    };
    let aws = |extra: &[&str]| {
        let mut cmd = Command::new(venv.join("bin/aws"));
        cmd.args(["--endpoint-url", &format!("{}/", s.endpoint)]).args(extra).args(["ec2", "describe-instances"]);
        aws_env(&mut cmd);
        cmd.output().unwrap()
    };
    let out = aws(&["--ca-bundle", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id), "{}", String::from_utf8_lossy(&out.stdout));
    let out = aws(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSL validation failed"), "{out:?}");
    let mut py = Command::new(venv.join("bin/python"));
    py.args([
        "-c",
        "import boto3,os; r = boto3.client('ec2', endpoint_url=os.environ['AWS_URL']).describe_instances(); \
         print([i['InstanceId'] for res in r['Reservations'] for i in res['Instances']])",
    ])
    .env("AWS_URL", format!("{}/", s.endpoint));
    aws_env(&mut py);
    let out = py.env("AWS_CA_BUNDLE", &ca).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id), "{}", String::from_utf8_lossy(&out.stdout));

    // Another cloud's CA.
    let other = s.dir.path().join("other-tls");
    kumo_api::tls::generate(&other, "controller", &[]).unwrap();
    let other_ca = other.join("ca.pem");

    // The CLI trusting another CA refuses the controller with a clear line.
    let out = s.kumo(&["--ca-cert", other_ca.to_str().unwrap(), "host", "list"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("error: the controller at {}/v1/hosts", s.endpoint)), "{err}");
    assert!(err.contains("presented a certificate the CLI does not trust"), "{err}");
    assert!(err.contains("invalid peer certificate: UnknownIssuer"), "{err}");
    // And without any CA (public roots only) a fresh login is refused the same way.
    let out = Command::new(bin("kumo"))
        .args(["login", "--endpoint", &s.endpoint, "--username", "admin", "--password", "e2e-admin-pass"])
        .env("KUMO_CONFIG", s.dir.path().join("cli-no-ca.toml"))
        .env_remove("KUMO_CA_CERT")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not trust"), "{out:?}");
    assert!(!s.dir.path().join("cli-no-ca.toml").exists(), "nothing saved");
    // Plain HTTP on the controller's port gets no answer.
    let plain = s.endpoint.replacen("https://", "http://", 1);
    assert!(http.get(format!("{plain}/healthz")).send().is_err());

    // An agent that trusts another CA never enrols: it says why, and the
    // controller never hears of it.
    let state = s.dir.path().join("impostor-agent");
    let config = s.dir.path().join("impostor-agent.toml");
    let name = format!("{}-x", s.host_name);
    std::fs::write(
        &config,
        format!(
            "controller_url = '{}'\ncontroller_ca_file = '{}'\njoin_token = 'e2e-join'\nname = '{name}'\n\
             listen = '127.0.0.1:{}'\nlibvirt_uri = 'qemu:///system'\ndomain_type = 'qemu'\nstate_dir = '{}'\n\
             nft_table = '{}x'\n",
            s.endpoint,
            other_ca.display(),
            free_port().unwrap(),
            state.display(),
            s.nft_table
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("kumo-agent"));
    cmd.arg("--config").arg(&config);
    let log = s.dir.path().join("impostor-agent.log");
    let mut agent = Process::spawn(cmd, log.clone()).unwrap();
    s.wait_until(Duration::from_secs(30), "the agent to refuse the certificate", |_| {
        Ok(std::fs::read_to_string(&log)?.contains("invalid peer certificate: UnknownIssuer"))
    })
    .unwrap();
    agent.stop();
    let hosts = s.kumo_json(&["host", "list"]).unwrap();
    assert!(!hosts["items"].as_array().unwrap().iter().any(|h| h["name"] == name.as_str()), "{hosts}");
    assert!(!state.join("host.json").exists());

    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
}
