//! The api crate's integration tests, one binary of modules (one link on
//! slow machines): `cargo test -p kumo-api --test integration -- <module>::`.

mod common;

mod api;
mod attacks;
mod audit;
mod billing;
mod concurrency;
mod ec2;
mod ec2_vpc;
mod egress;
mod errors;
mod etag;
mod first_hour;
mod fuzz;
mod layering;
mod lifecycle;
mod metrics;
mod networks;
mod notices;
mod panel;
mod replicas;
mod scenario;
mod seams;
mod secrets;
mod stats;
mod storage;
mod tls;
