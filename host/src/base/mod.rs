//! The lowest layer: small types every other layer shares. It imports
//! nothing from the crate.
//!
//! - [`digest`]: [`digest::Digest`], a sha256 parsed and printed (`sha256:HEX`) in one place.
//! - [`cache_dir`]: the file names under `--cache-dir` and the rule for its folders.

pub mod cache_dir;
pub mod digest;
