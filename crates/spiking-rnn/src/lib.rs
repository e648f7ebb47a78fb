//! SpikingJelly's spiking recurrent networks in Rust.
//!
//! * [`surrogate`]: Heaviside spike functions with every surrogate gradient of SpikingJelly.
//! * [`cell`]: one time step of the SpikingLSTM / SpikingGRU / SpikingVanillaRNN cells, forward and
//!   backward side by side.
//! * [`rnn`]: stacked, bidirectional, dropout wrappers over whole sequences, variable-length batches,
//!   explicit backward-through-time.
//! * [`linear`], [`loss`], [`optim`]: what a classifier needs (Linear, softmax + MSE / cross-entropy,
//!   Adam identical to `torch.optim.Adam`, SGD).
//! * [`classifier`]: the tutorial's network (RNN → last valid step → Linear → softmax).
//! * [`alloc`]: a global allocator that aligns large buffers to cache lines (for speed only).
//!
//! Parameters of a whole model live in one flat `Vec<f32>` ([`params::ParamLayout`]): layers hold
//! offsets into it, gradients use a buffer of the same shape, and the optimiser is one loop.
//! Names and shapes follow SpikingJelly's `state_dict` (see [`params::ParamSpec`]).

pub mod alloc;
pub mod cell;
pub mod classifier;
pub mod linalg;
pub mod linear;
pub mod loss;
pub mod optim;
pub mod params;
pub mod rnn;
pub mod surrogate;

pub use alloc::CacheLineAligned;
pub use cell::CellKind;
pub use classifier::{ClassifierConfig, LossKind, Readout, SeqClassifier, Workspace};
pub use params::{ParamLayout, ParamSpec};
pub use rnn::{Batch, Input, RnnCache, RnnConfig, SpikingRnn, States};
pub use surrogate::{Surrogate, SurrogateKind};

/// Everything that can go wrong in the library; every variant carries a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("parameters: {0}")]
    Params(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape(msg.into()))
}
