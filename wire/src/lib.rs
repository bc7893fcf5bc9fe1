//! Kumo's domain vocabulary, shared by the controller, the compute agent and the CLI.
//!
//! This crate knows nothing of HTTP servers, databases or libvirt: it holds ids,
//! lifecycle states and the serde shapes of the native API and of the
//! controller-agent protocol. The `utoipa` derives only describe shapes for the
//! OpenAPI document.

pub mod agent;
pub mod api;
pub mod billing;
pub mod error;
pub mod events;
pub mod ids;
pub mod inventory;
pub mod lifecycle;
pub mod network;
pub mod stats;
pub mod storage;
pub mod time;

pub use error::ErrorBody;
pub use ids::*;
pub use lifecycle::{DesiredPower, IllegalTransition, InstanceState, LifecycleEvent};
pub use time::Timestamp;
