//! The engine's working state per GPU.
//!
//! Memory accounting keeps two views of each GPU and trusts the smaller:
//!
//! ```text
//!   requested view = capacity − Σ memory reserved by gpufleet placements on the GPU
//!   observed view  = free memory by telemetry − Σ memory of in-flight placements (shadow)
//! ```
//!
//! The observed view already subtracts every running process, gpufleet's or not, so only
//! placements the telemetry sample cannot show yet (in flight) are subtracted again. The
//! requested view guards against replicas that have not yet grown to their reservation (model
//! still loading): the minimum of the two never over-commits either way. A removal credits the
//! requested view at once and the observed view only once telemetry shows the memory free.

use crate::fleet::{ComputeCapability, GpuHealth};
use crate::{Error, Result};

/// Sentinel topology group of GPUs without NVLink: they form one PCIe domain per node.
pub(crate) const PCIE_DOMAIN: u32 = u32::MAX;

/// The most GPUs one node may have (GPU sets are 64-bit masks).
pub(crate) const MAX_GPUS_PER_NODE: usize = 64;

/// A set of interned GPU products; `None` inside means any product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ProductMask(Option<u64>);

impl ProductMask {
    pub(crate) const ANY: ProductMask = ProductMask(None);

    /// The mask of `names` among the interned `products`; unknown names match nothing.
    pub(crate) fn of(names: &[String], products: &[String]) -> ProductMask {
        if names.is_empty() {
            return ProductMask::ANY;
        }
        let mut bits = 0_u64;
        for name in names {
            if let Some(position) = products.iter().position(|product| product == name) {
                bits |= 1 << position;
            }
        }
        ProductMask(Some(bits))
    }

    pub(crate) fn allows(self, product: u16) -> bool {
        self.0.is_none_or(|bits| bits & (1 << product) != 0)
    }
}

/// Interns product names (at most 64 in one fleet).
pub(crate) fn intern_product(products: &mut Vec<String>, name: &str) -> Result<u16> {
    if let Some(position) = products.iter().position(|product| product == name) {
        return u16::try_from(position).map_err(|_| Error::TooManyProducts);
    }
    if products.len() >= 64 {
        return Err(Error::TooManyProducts);
    }
    products.push(name.to_owned());
    u16::try_from(products.len() - 1).map_err(|_| Error::TooManyProducts)
}

/// The hot, copyable part of a GPU's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GpuState {
    pub(crate) product: u16,
    pub(crate) health: GpuHealth,
    pub(crate) capability: Option<ComputeCapability>,
    pub(crate) topology_group: u32,
    pub(crate) numa_node: Option<u32>,
    pub(crate) capacity_mib: u64,
    /// Free memory by telemetry minus in-flight placements; `None` without telemetry.
    pub(crate) observed_free_mib: Option<u64>,
    pub(crate) allocated_milli: u32,
    pub(crate) allocated_mib: u64,
    /// Sum of the penalty components, cached for ordering.
    pub(crate) penalty: f64,
}

impl GpuState {
    pub(crate) fn usable(&self) -> bool {
        self.health != GpuHealth::Unhealthy
    }

    pub(crate) fn free_milli(&self) -> u32 {
        1000_u32.saturating_sub(self.allocated_milli)
    }

    pub(crate) fn requested_free_mib(&self) -> u64 {
        self.capacity_mib.saturating_sub(self.allocated_mib)
    }

    /// Free memory by both views, keeping `headroom_mib` free by telemetry.
    pub(crate) fn usable_free_mib(&self, headroom_mib: u64) -> u64 {
        let requested = self.requested_free_mib();
        match self.observed_free_mib {
            Some(observed) => requested.min(observed.saturating_sub(headroom_mib)),
            None => requested,
        }
    }

    /// The state after a new (in-flight) placement of `milli` and `memory_mib`.
    pub(crate) fn with_allocation(mut self, milli: u32, memory_mib: u64) -> GpuState {
        self.allocated_milli = self.allocated_milli.saturating_add(milli);
        self.allocated_mib = self.allocated_mib.saturating_add(memory_mib);
        self.observed_free_mib = self
            .observed_free_mib
            .map(|free| free.saturating_sub(memory_mib));
        self
    }
}

/// A healthy 80 GB GPU with `allocated_milli` taken (memory in proportion), in NVLink `group`:
/// the GPU unit tests of this crate build on.
#[cfg(test)]
pub(crate) fn test_gpu(allocated_milli: u32, group: u32) -> GpuState {
    GpuState {
        product: 0,
        health: GpuHealth::Healthy,
        capability: None,
        topology_group: group,
        numa_node: None,
        capacity_mib: 80_000,
        observed_free_mib: None,
        allocated_milli,
        allocated_mib: 80 * u64::from(allocated_milli),
        penalty: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_memory_below_the_requested_view_limits_usable_memory() {
        let mut state = test_gpu(0, 0);
        state.observed_free_mib = Some(10_000);
        assert_eq!(state.usable_free_mib(1_000), 9_000);
        assert_eq!(
            state.with_allocation(100, 4_000).usable_free_mib(1_000),
            5_000
        );
    }
}
