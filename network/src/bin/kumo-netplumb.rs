//! Placeholder; replaced by the VLAN guest test's plumbing tool.
fn main() {}
