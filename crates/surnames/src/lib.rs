//! The `surnames` tool as a library: everything the binary does, so tests can call it directly.
//!
//! * data: [`datasets`] (on top of the `surnames-data` crate)
//! * model files: [`config`], [`checkpoint`]
//! * training: [`train`]; using a model: [`evaluate`]
//! * output: [`plots`], [`npy`], [`fsutil`] (atomic writes)
//! * the subcommands: [`commands`], plus [`bench`] and [`conformance`]
pub mod bench;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod conformance;
pub mod datasets;
pub mod evaluate;
pub mod fsutil;
pub mod npy;
pub mod plots;
pub mod train;
