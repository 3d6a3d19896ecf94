//! Sampan's low-level runtime: an OCI runtime-spec bundle in, an isolated process out.

pub mod caps;
pub mod cgroups;
mod clone;
pub mod container;
pub mod error;
mod hooks;
mod init;
pub mod mountopts;
pub mod ocijson;
pub mod overlay;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod seccomp;
pub mod state;
mod sync;
mod sys;

pub use container::{list, run, Container, CreateOptions, ExecOptions};
pub use error::{Error, Result};
pub use state::Status;
