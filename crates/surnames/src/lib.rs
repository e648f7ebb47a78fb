//! The `surnames` tool as a library: everything the binary does, so tests can call it directly.
pub mod bench;
pub mod conformance;
pub mod fsutil;
pub mod npy;
pub mod plots;
