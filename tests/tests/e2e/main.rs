//! End-to-end tests: real controller and agent processes, real libvirtd, real
//! TCG guests, driven through the `kumo` CLI as a user would.

#![allow(clippy::unwrap_used)]

mod audit;
mod billing;
mod cloud_image;
mod ec2;
mod ec2_crash;
mod ec2_sdk;
mod fleet;
mod lifecycle;
mod metrics;
mod networks;
mod panel;
mod readme;
mod replicas;
mod resilience;
mod scenario;
mod seams;
mod stats;
mod storage;
mod tls;
