//! A model repository on disk, in Triton's layout.
pub mod config;
pub use config::{ConfigError, ModelConfig, Platform, TensorConfig, VersionChoice};
