//! login, logout and what happens without a token.

use crate::fake::{PASSWORD, TOKEN, USER};
use crate::{mode, Env};

#[test]
fn login_saves_the_token_0600_and_later_commands_use_it() {
    let env = Env::new();
    let out = env.kumo_with_stdin(
        &["login", "--endpoint", &env.fake.endpoint, "--username", USER, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let stdout = out.ok();
    assert!(
        stdout.starts_with("Logged in as alice (project prj-00000000000000001, role member); token valid until 20"),
        "{stdout}"
    );

    let config = std::fs::read_to_string(env.config_path()).expect("config written");
    assert!(config.contains(&format!("endpoint = \"{}\"", env.fake.endpoint)), "{config}");
    assert!(config.contains(&format!("token = \"{TOKEN}\"")), "{config}");
    assert!(config.contains("username = \"alice\""), "{config}");
    assert!(config.contains("expires_at = \""), "{config}");
    assert_eq!(mode(&env.config_path()), 0o600);

    // The saved endpoint and token are used without flags.
    env.kumo(&["instance", "list"]).ok();

    env.kumo(&["logout"]).ok();
    assert_eq!(env.kumo(&["instance", "list"]).failed(), "error: not logged in (run kumo login)");
}

#[test]
fn wrong_password_is_the_servers_message_on_one_line() {
    let env = Env::new();
    let out = env.kumo(&["login", "--endpoint", &env.fake.endpoint, "-u", USER, "--password", "nope"]);
    assert_eq!(out.failed(), "error: wrong user name or password (unauthorized)");
    assert!(!env.config_path().exists(), "a failed login wrote the config");
}

#[test]
fn expired_token_means_not_logged_in() {
    let env = Env::new();
    let config = format!(
        "endpoint = \"{}\"\ntoken = \"{TOKEN}\"\nexpires_at = \"2001-01-01T00:00:00Z\"\nusername = \"alice\"\n",
        env.fake.endpoint
    );
    std::fs::write(env.config_path(), config).expect("write");
    assert_eq!(env.kumo(&["image", "list"]).failed(), "error: not logged in (run kumo login)");
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    // Instances are named by name or id (issue 20), so a usage error is a bad flag or a missing argument.
    let out = env.kumo(&["instance", "show", "web1", "--no-such-flag"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    let out = env.kumo(&["instance", "show"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
}
