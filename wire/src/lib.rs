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

#[cfg(test)]
mod names_tests {
    //! The `as_str` names come from `strum` (`IntoStaticStr`): they must be the
    //! serde names the API and the database use, for every variant.
    use serde::Serialize;
    use strum::VariantArray;

    fn check<T: VariantArray + Serialize + Copy + std::fmt::Debug>(as_str: fn(T) -> &'static str) {
        assert!(!T::VARIANTS.is_empty());
        for v in T::VARIANTS {
            let serde = serde_json::to_value(v).expect("serializes");
            assert_eq!(serde.as_str(), Some(as_str(*v)), "{v:?}");
        }
    }

    #[test]
    fn every_as_str_is_the_serde_name() {
        check(inventory::DifferenceKind::as_str);
        check(network::Protocol::as_str);
        check(network::Direction::as_str);
        check(network::Switch::as_str);
        check(network::HttpTokens::as_str);
        check(storage::VolumeBackendKind::as_str);
        check(storage::VolumeState::as_str);
        check(storage::SnapshotKind::as_str);
        check(storage::SnapshotState::as_str);
        check(storage::QuotaResource::as_str);
        check(agent::QuarantineKind::as_str);
        check(lifecycle::InstanceState::as_str);
        check(lifecycle::DesiredPower::as_str);
        check(api::Role::as_str);
        check(api::ImageKind::as_str);
        check(api::DiskFormat::as_str);
        check(api::ImageFileRole::as_str);
        check(api::Visibility::as_str);
    }

    use super::{agent, api, inventory, lifecycle, network, storage};
}
