//! EC2-compatible instance metadata service (filled in below).
