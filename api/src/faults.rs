//! Fault injection for crash tests, **test-only**: the environment variable
//! `KUMO_TEST_FAULT_POINT` names one point (see [`point`]'s callers); when the
//! controller reaches it, it aborts on the spot (no unwinding, no commit, no
//! answer), as a controller killed there would. Unset, as in every
//! deployment, each point is one comparison against a value read once.
//!
//! Points (`<Action>` is the EC2 action, e.g. `RunInstances`):
//! - `ec2.<Action>.token_claimed`: inside the write transaction, right after
//!   the client token row is inserted and before the resources are committed;
//! - `ec2.<Action>.committed`: after the commit, before the answer is sent.

use std::sync::OnceLock;

/// The environment variable naming the fault point.
pub const FAULT_POINT_VAR: &str = "KUMO_TEST_FAULT_POINT";

fn armed() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT.get_or_init(|| std::env::var(FAULT_POINT_VAR).ok().filter(|v| !v.is_empty())).as_deref()
}

/// Aborts the process if `name` is the armed fault point.
pub fn point(name: impl AsRef<str>) {
    if let Some(armed) = armed() {
        if armed == name.as_ref() {
            eprintln!("{FAULT_POINT_VAR}: aborting at fault point {armed}");
            std::process::abort();
        }
    }
}
