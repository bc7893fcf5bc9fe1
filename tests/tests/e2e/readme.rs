//! The README's "Using it" section, run top to bottom against a real stack
//! (controller, agent, libvirt, TCG guests) with the real `kumo` binary, the
//! way a newcomer follows it (issue 20).
//!
//! Every `sh` block of the section is read from README.md; comments are
//! dropped, `a; b` runs `a` then `b`, and a few words are filled in:
//! - `~/.ssh/id_ed25519.pub`: a key the test makes with `ssh-keygen`;
//! - `disk.qcow2`: an empty qcow2 image the test makes with `qemu-img`;
//! - `<ip>`: the floating IP the `kumo fip allocate` before it printed;
//! - `<rule-id>`: the id of the last rule of the group the `kumo sg show` before it printed.
//!
//! Skipped, with the reason:
//! - `aws ...`: the AWS CLI writes its keys under the user's home and talks
//!   to port 8774; the EC2 API is covered against this same stack shape by
//!   `e2e/ec2.rs` (boto3 and the AWS CLI with their own config);
//! - nothing else: every `kumo` command of the section runs, and must exit 0.

use std::path::Path;
use std::process::Command;

use kumo_tests::{enabled, Options, Stack};

/// The `sh` blocks of the README's "Using it" section, in order.
fn using_it_blocks(readme: &str) -> Vec<String> {
    let start = readme.find("## Using it").expect("README has a 'Using it' section");
    let rest = &readme[start + 3..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// The commands of one block: comments dropped, `;` separating commands.
fn commands(block: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in block.lines() {
        let code = match line.find(" #") {
            Some(i) => &line[..i],
            None => line,
        };
        for cmd in code.split("; ") {
            let words: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
            if !words.is_empty() && !words[0].starts_with('#') {
                out.push(words);
            }
        }
    }
    out
}

#[test]
fn the_readme_commands_parse_into_a_session() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let blocks = using_it_blocks(&readme);
    assert!(blocks.len() >= 5, "{blocks:#?}");
    let all: Vec<Vec<String>> = blocks.iter().flat_map(|b| commands(b)).collect();
    assert!(all.iter().all(|c| c[0] == "kumo" || c[0] == "aws"), "only kumo and aws commands: {all:#?}");
    // No placeholder the test cannot fill in.
    for c in &all {
        for w in c.iter().filter(|w| w.starts_with('<')) {
            assert!(["<ip>", "<rule-id>"].contains(&w.as_str()), "unknown placeholder {w} in {c:?}");
        }
    }
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn readme_walkthrough(opts: Options) {
    let mut s = Stack::start(opts).unwrap();
    s.register_tiny_image().unwrap();
    let work = s.dir.path().join("readme");
    std::fs::create_dir_all(work.join(".ssh")).unwrap();
    let key = work.join(".ssh/id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "readme", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success(), "ssh-keygen failed");
    let disk = work.join("disk.qcow2");
    let made = Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&disk).arg("64M").status().unwrap();
    assert!(made.success(), "qemu-img create failed");

    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let mut ip: Option<String> = None;
    let mut rule: Option<String> = None;
    let mut ran = 0;
    for block in using_it_blocks(&readme) {
        for words in commands(&block) {
            if words[0] == "aws" {
                eprintln!("skipped (see the module comment): {}", words.join(" "));
                continue;
            }
            let args: Vec<String> = words[1..]
                .iter()
                .map(|w| match w.as_str() {
                    "~/.ssh/id_ed25519.pub" => key.with_extension("pub").display().to_string(),
                    "disk.qcow2" => disk.display().to_string(),
                    "<ip>" => ip.clone().expect("an address was allocated before <ip>"),
                    "<rule-id>" => rule.clone().expect("a group was shown before <rule-id>"),
                    other => other.to_owned(),
                })
                .collect();
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            eprintln!("$ kumo {}", argv.join(" "));
            let out = s.kumo(&argv).unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "README command `kumo {}` failed:\n{stderr}\n{stdout}", argv.join(" "));
            ran += 1;
            // Track the instances for the stack's clean-up, and pick up what later lines name.
            match argv.as_slice() {
                ["instance", "run", ..] => {
                    let name = argv.last().unwrap();
                    let shown = s.kumo_json(&["instance", "show", name]).unwrap();
                    let id = shown["id"].as_str().unwrap().to_owned();
                    s.track(&id);
                    assert_eq!(shown["state"], "running", "{name} after --wait: {shown}");
                }
                ["instance", "console", name] => {
                    assert!(stdout.contains(&format!("hostname={name}")) && stdout.contains("KUMO-READY"), "{stdout}");
                }
                ["fip", "allocate", ..] => {
                    let list = s.kumo_json(&["fip", "list"]).unwrap();
                    ip = list["items"][0]["address"].as_str().map(str::to_owned);
                }
                ["sg", "show", group] => {
                    let shown = s.kumo_json(&["sg", "show", group]).unwrap();
                    let rules = shown["rules"].as_array().unwrap();
                    if *group == "default" {
                        // The README's claim: members reach each other and nothing else gets in.
                        // (Outbound: AWS's default egress rule.)
                        let inbound: Vec<_> = rules.iter().filter(|r| r["direction"] == "ingress").collect();
                        assert_eq!(inbound.len(), 1, "{shown}");
                        assert_eq!(
                            (inbound[0]["protocol"].as_str(), inbound[0]["source_group"].as_str()),
                            (Some("any"), Some("default"))
                        );
                        assert!(inbound[0]["cidr"].is_null(), "{shown}");
                        assert!(rules.iter().any(|r| r["direction"] == "egress" && r["cidr"] == "0.0.0.0/0"));
                    }
                    rule = rules.last().and_then(|r| r["id"].as_str()).map(str::to_owned);
                }
                ["volume", "attach", ..] => {
                    let v = s.kumo_json(&["volume", "show", "data"]).unwrap();
                    assert_eq!(v["state"], "in-use", "{v}");
                }
                ["billing", "usage"] => {
                    assert!(stdout.contains("OPEN HOURS:"), "the open hours are shown: {stdout}");
                    assert!(stdout.contains("web1 (i-"), "resources by name: {stdout}");
                }
                ["flavor", "list"] => assert!(stdout.contains("PRICE/HOUR") && stdout.contains("2 JPY"), "{stdout}"),
                _ => {}
            }
        }
    }
    assert!(ran >= 40, "only {ran} commands ran");
    let left = s.kumo_json(&["instance", "list"]).unwrap();
    assert_eq!(left["items"], serde_json::json!([]), "the clean-up block deleted everything: {left}");
}

#[test]
fn readme_walkthrough_runs_top_to_bottom() {
    if enabled() {
        readme_walkthrough(Options::default());
    }
}
