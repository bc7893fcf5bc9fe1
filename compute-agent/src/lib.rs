//! The Kumo compute agent.
