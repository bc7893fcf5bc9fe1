//! NoCloud config drive (filled in below).
