//! OCI JSON into oci-spec types, for the crates over this one (the Python binding, the
//! monitor). Deserializers are generic: each crate that calls `serde_json::from_slice::<Spec>`
//! compiles its own copy of every OCI type's deserializer (release builds share no generics
//! across crates), which made them the largest code in both binaries. These plain functions
//! keep one copy, the one `Container::create` uses (issue 6, installed size).

use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Process, Spec};

pub fn spec(json: &[u8]) -> serde_json::Result<Spec> {
    serde_json::from_slice(json)
}

pub fn process(json: &[u8]) -> serde_json::Result<Process> {
    serde_json::from_slice(json)
}

pub fn resources(json: &[u8]) -> serde_json::Result<LinuxResources> {
    serde_json::from_slice(json)
}

pub fn seccomp(json: &[u8]) -> serde_json::Result<LinuxSeccomp> {
    serde_json::from_slice(json)
}
