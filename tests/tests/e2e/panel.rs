//! The control panel in a real headless Chromium against a real controller,
//! agent and TCG guest: `web-ui/tests/browser/panel.test.mjs` (playwright-core
//! driving Debian's `/usr/bin/chromium`) logs in, launches an instance and
//! watches it run without reloading, reads its console, stops it, finds it on
//! the billing page, logs out; a member is refused admin pages and another
//! project's instance; a form without its CSRF token is refused. Screenshots
//! land in `target/panel-screenshots/`.

use std::path::PathBuf;
use std::process::Command;

use kumo_tests::{enabled, Options, Stack};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn the_panel_in_a_real_browser() {
    if !enabled() {
        return;
    }
    let browser_dir = workspace().join("web-ui/tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first (scripts/test.sh does)",
        browser_dir.display()
    );
    let mut s = Stack::start(Options {
        controller_extra: "billing_hour_secs = 2\nbilling_close_grace_secs = 0\nbilling_close_interval_secs = 1\n"
            .into(),
        agent_extra: "stats_interval_secs = 2\n".into(),
        ..Options::default()
    })
    .unwrap();
    s.register_tiny_image().unwrap();
    s.kumo_ok(&["project", "create", "panel-tenant"]).unwrap();
    s.kumo_ok(&["user", "create", "panel-member", "--project", "panel-tenant", "--password", "member-pass-1"]).unwrap();

    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let shots = target.join("panel-screenshots");
    let out = Command::new("node")
        .arg(browser_dir.join("panel.test.mjs"))
        .current_dir(&browser_dir)
        .env("KUMO_URL", &s.endpoint)
        .env("KUMO_ADMIN_USER", "admin")
        .env("KUMO_ADMIN_PASSWORD", "e2e-admin-pass")
        .env("KUMO_MEMBER_USER", "panel-member")
        .env("KUMO_MEMBER_PASSWORD", "member-pass-1")
        .env("KUMO_IMAGE", "tiny")
        .env("KUMO_SCREENSHOTS", &shots)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for id in stdout.lines().filter_map(|l| l.strip_prefix("INSTANCE ")) {
        s.track(id.trim());
    }
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "the browser scenario failed ({}):\n{stdout}\n{stderr}", out.status);
    for name in [
        "dashboard",
        "launch-error",
        "instance",
        "instance-graphs",
        "instances",
        "instances-ja",
        "billing",
        "admin-hosts",
        "member-admin-403",
    ] {
        assert!(shots.join(format!("{name}.png")).is_file(), "no screenshot {name}.png in {}", shots.display());
    }
}
