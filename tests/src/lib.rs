//! Helpers for the end-to-end tests: spawn the binaries, wait for states.
