//! The billing crate's integration tests, one binary of modules (one link on
//! slow machines): `cargo test -p kumo-billing --test integration -- <module>::`.

mod common;

mod properties;
mod worked_examples;
