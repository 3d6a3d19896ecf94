//! Sampan's low-level runtime: an OCI runtime-spec bundle in, an isolated process out.

pub mod cgroups;
pub mod error;
pub mod seccomp;

pub use error::{Error, Result};
