//! The names data set of PyTorch's "classifying names with a character-level RNN" tutorial, as
//! used by SpikingJelly's Spiking LSTM surname example: alphabet, normalisation, loading,
//! checksum verification, train/test splits, download and cache resolution.
//!
//! The behaviour mirrors the Python tutorial (spec §4.1–§4.4) except where the spec asks the
//! Rust port to be deterministic (categories sorted alphabetically).

mod alphabet;
mod checksum;
mod download;
mod error;
mod load;
mod resolve;
mod split;

pub use alphabet::{
    encode, letter_index, lowercase_index, normalise, Normalised, ALPHABET, N_LETTERS,
};
pub use checksum::{sha256_hex, verify_dir, ChecksumMismatch, OFFICIAL_SHA256};
pub use download::{download_and_unpack, unpack_archive, OFFICIAL_URL};
pub use error::DataError;
pub use load::{load_dir, load_dir_with_report, Dataset, DroppedChar, MAX_NAME_LETTERS};
pub use resolve::{default_cache_dir, resolve, resolve_source, DataSource, Resolved, ENV_VAR};
pub use split::{
    carve_validation, counts_table, dedup_split, format_counts_table, tutorial_split,
    CategoryCounts, Split, ValidationPick,
};
