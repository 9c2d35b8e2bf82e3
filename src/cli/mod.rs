//! Subcommands of the `gpufleet` binary, one module each.

pub(crate) mod agent;
pub(crate) mod crds;
pub(crate) mod plan;
pub(crate) mod simulate;
