//! The Kumo controller.
