//! Kumo storage.
