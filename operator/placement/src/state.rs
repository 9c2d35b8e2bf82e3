//! The engine's working state per node and GPU, and the fragmentation measure.
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
use crate::request::GpuRequest;
use crate::strategy::WorkloadMix;
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

/// The workload mix with interned products and normalised weights.
#[derive(Debug, Clone)]
pub(crate) struct CompiledMix {
    pub(crate) entries: Vec<CompiledMixEntry>,
    pub(crate) headroom_mib: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledMixEntry {
    pub(crate) request: GpuRequest,
    pub(crate) products: ProductMask,
    pub(crate) probability: f64,
}

impl CompiledMix {
    pub(crate) fn new(mix: &WorkloadMix, products: &[String], headroom_mib: u64) -> Result<Self> {
        mix.validate()?;
        let total: f64 = mix.entries.iter().map(|entry| entry.weight).sum();
        Ok(CompiledMix {
            entries: mix
                .entries
                .iter()
                .map(|entry| CompiledMixEntry {
                    request: entry.gpu,
                    products: ProductMask::of(&entry.allowed_products, products),
                    probability: entry.weight / total,
                })
                .collect(),
            headroom_mib,
        })
    }

    /// Expected fragmentation of a node, in thousandths of a GPU: for each request type of the
    /// mix, the free GPU share that type could not use, weighted by the type's probability.
    /// GPUs in `changed` are taken as carrying an extra placement of `milli` and `memory[i]`.
    pub(crate) fn fragmentation(&self, gpus: &[GpuState], change: &Change<'_>) -> f64 {
        self.entries
            .iter()
            .map(|entry| entry.probability * self.fragment_for(gpus, change, entry) as f64)
            .sum()
    }

    fn fragment_for(
        &self,
        gpus: &[GpuState],
        change: &Change<'_>,
        entry: &CompiledMixEntry,
    ) -> u64 {
        let headroom = self.headroom_mib;
        match entry.request {
            GpuRequest::Fraction { milli, .. } => {
                let mut fragment = 0_u64;
                for position in 0..gpus.len() {
                    let gpu = change.apply(gpus, position);
                    let free = gpu.free_milli();
                    if !gpu.usable() || free == 0 {
                        continue;
                    }
                    let fits = entry.products.allows(gpu.product)
                        && free >= milli
                        && gpu.usable_free_mib(headroom)
                            >= entry.request.memory_need_mib(gpu.capacity_mib);
                    if !fits {
                        fragment += u64::from(free);
                    }
                }
                fragment
            }
            GpuRequest::Whole { count, .. } => {
                // A GPU's free share is usable by this type only if the GPU is entirely free
                // and enough entirely free GPUs share its NVLink group.
                let mut fully_free = 0_u64;
                for position in 0..gpus.len() {
                    let gpu = change.apply(gpus, position);
                    if gpu.usable()
                        && gpu.allocated_milli == 0
                        && entry.products.allows(gpu.product)
                        && gpu.usable_free_mib(headroom)
                            >= entry.request.memory_need_mib(gpu.capacity_mib)
                    {
                        fully_free |= 1 << position;
                    }
                }
                let mut fragment = 0_u64;
                for position in 0..gpus.len() {
                    let gpu = change.apply(gpus, position);
                    if !gpu.usable() {
                        continue;
                    }
                    let free = u64::from(gpu.free_milli());
                    if free == 0 {
                        continue;
                    }
                    let usable = fully_free & (1 << position) != 0 && {
                        let group = gpu.topology_group;
                        let peers = (0..gpus.len())
                            .filter(|&other| {
                                fully_free & (1 << other) != 0
                                    && gpus[other].topology_group == group
                            })
                            .count();
                        peers >= count as usize
                    };
                    if !usable {
                        fragment += free;
                    }
                }
                fragment
            }
        }
    }
}

/// A hypothetical extra placement on some GPUs of a node, to score a candidate without
/// copying the node.
pub(crate) struct Change<'a> {
    pub(crate) mask: u64,
    pub(crate) milli: u32,
    /// Memory per GPU position (only positions in `mask` are read).
    pub(crate) memory_mib: &'a [u64],
}

impl Change<'_> {
    pub(crate) const NONE: Change<'static> = Change {
        mask: 0,
        milli: 0,
        memory_mib: &[],
    };

    fn apply(&self, gpus: &[GpuState], position: usize) -> GpuState {
        let gpu = gpus[position];
        if self.mask & (1 << position) != 0 {
            gpu.with_allocation(self.milli, self.memory_mib[position])
        } else {
            gpu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::MemoryNeed;
    use crate::strategy::MixEntry;

    fn gpu(allocated_milli: u32, group: u32) -> GpuState {
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

    fn mix(entries: Vec<(GpuRequest, f64)>) -> Result<CompiledMix> {
        let mix = WorkloadMix {
            entries: entries
                .into_iter()
                .map(|(gpu, weight)| MixEntry {
                    gpu,
                    allowed_products: Vec::new(),
                    weight,
                })
                .collect(),
        };
        CompiledMix::new(&mix, &["P".to_owned()], 0)
    }

    #[test]
    fn half_used_gpu_is_a_fragment_for_whole_gpu_requests_only() -> Result<()> {
        let whole = GpuRequest::Whole {
            count: 1,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let half = GpuRequest::Fraction {
            milli: 500,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let gpus = [gpu(500, 0), gpu(0, 0)];
        assert_eq!(
            mix(vec![(whole, 1.0)])?.fragmentation(&gpus, &Change::NONE),
            500.0
        );
        assert_eq!(
            mix(vec![(half, 1.0)])?.fragmentation(&gpus, &Change::NONE),
            0.0
        );
        // Equal weights: the expectation is the mean.
        assert_eq!(
            mix(vec![(whole, 1.0), (half, 1.0)])?.fragmentation(&gpus, &Change::NONE),
            250.0
        );
        Ok(())
    }

    #[test]
    fn free_gpus_split_across_nvlink_groups_are_fragments_for_two_gpu_requests() -> Result<()> {
        let pair = GpuRequest::Whole {
            count: 2,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let split = [gpu(0, 0), gpu(1000, 0), gpu(0, 1), gpu(1000, 1)];
        let together = [gpu(0, 0), gpu(0, 0), gpu(1000, 1), gpu(1000, 1)];
        let mix = mix(vec![(pair, 1.0)])?;
        assert_eq!(mix.fragmentation(&split, &Change::NONE), 2000.0);
        assert_eq!(mix.fragmentation(&together, &Change::NONE), 0.0);
        Ok(())
    }

    #[test]
    fn a_change_is_scored_as_if_placed() -> Result<()> {
        let quarter = GpuRequest::Fraction {
            milli: 250,
            memory: MemoryNeed::ShareOfCapacity,
        };
        let mix = mix(vec![(quarter, 1.0)])?;
        let gpus = [gpu(800, 0)];
        let memory = [16_000];
        let change = Change {
            mask: 1,
            milli: 100,
            memory_mib: &memory,
        };
        // 200 free fits nothing of 250: all fragment; after +100, 100 free is fragment.
        assert_eq!(mix.fragmentation(&gpus, &Change::NONE), 200.0);
        assert_eq!(mix.fragmentation(&gpus, &change), 100.0);
        Ok(())
    }

    #[test]
    fn observed_memory_below_the_requested_view_limits_usable_memory() {
        let mut state = gpu(0, 0);
        state.observed_free_mib = Some(10_000);
        assert_eq!(state.usable_free_mib(1_000), 9_000);
        assert_eq!(
            state.with_allocation(100, 4_000).usable_free_mib(1_000),
            5_000
        );
    }
}
