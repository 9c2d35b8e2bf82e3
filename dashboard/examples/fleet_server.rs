//! Serves the dashboard over a synthetic fleet of any size, for load and page benchmarks
//! without the agent's simulation (which `gpufleet dashboard --simulate --nodes N` runs).
//!
//! ```sh
//! cargo run --release -p gpufleet-dashboard --example fleet_server -- 1250 127.0.0.1:18081
//! wrk -t2 -c8 -d15s --latency -H 'Accept-Encoding: gzip' http://127.0.0.1:18081/api/v1/fleet
//! node dashboard/bench/fleet_page.mjs 'http://127.0.0.1:18081/#fleet' 10000
//! ```
//!
//! The benchmark figures of issue #6 come from `dashboard/bench/fleet.sh`, which measures the
//! real binary's `gpufleet dashboard --simulate` the same way.
//!
//! NODES nodes of eight H100s each, readings moving every tick (2 s), one GPU in 97 Degraded.

use std::sync::Arc;
use std::time::Duration;

use gpufleet_api::InferenceDeployment;
use gpufleet_api::gpu_node::{GpuDevice, GpuHealth, GpuNodeStatus, GpuTelemetry, HealthState};
use gpufleet_dashboard::store::memory::MemoryStore;
use gpufleet_dashboard::{Application, FleetFeed, NodeReading, Settings};

struct SyntheticFleet {
    nodes: usize,
    tick: u64,
}

impl FleetFeed for SyntheticFleet {
    fn read(&mut self) -> Vec<NodeReading> {
        self.tick += 1;
        let tick = self.tick;
        (0..self.nodes)
            .map(|node| {
                let gpus = (0..8_u32)
                    .map(|index| {
                        let seed = u64::try_from(node).unwrap_or(0) * 8 + u64::from(index);
                        let used = (seed * 7_919 + tick * 1_013) % 80_000;
                        GpuDevice {
                            index,
                            uuid: format!("GPU-{seed:012}"),
                            product: "NVIDIA-H100-80GB-HBM3".to_owned(),
                            memory_total_mib: 81_559,
                            compute_capability: Some("9.0".to_owned()),
                            telemetry: GpuTelemetry {
                                memory_used_mib: Some(used),
                                memory_free_mib: Some(81_559 - used),
                                utilization_percent: u32::try_from((seed * 37 + tick * 11) % 101)
                                    .ok(),
                                temperature_celsius: u32::try_from(35 + (seed + tick) % 50).ok(),
                                power_watts: Some(350.0),
                                power_limit_watts: Some(700.0),
                                ..GpuTelemetry::default()
                            },
                            health: GpuHealth {
                                state: if seed % 97 == 0 {
                                    HealthState::Degraded
                                } else {
                                    HealthState::Healthy
                                },
                                ..GpuHealth::default()
                            },
                            ..GpuDevice::default()
                        }
                    })
                    .collect();
                NodeReading {
                    name: format!("node-{node:05}"),
                    labels: Default::default(),
                    ready: true,
                    status: GpuNodeStatus {
                        gpus,
                        ..GpuNodeStatus::default()
                    },
                }
            })
            .collect()
    }

    fn deployments(&mut self) -> Vec<InferenceDeployment> {
        Vec::new()
    }
}

fn main() -> anyhow::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let nodes: usize = arguments.next().map_or(Ok(1_250), |text| text.parse())?;
    let bind = arguments
        .next()
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned())
        .parse()?;
    gpufleet_dashboard::startup::block_on(async move {
        let settings = Settings {
            bind,
            tick: Duration::from_secs(2),
            ..Settings::default()
        };
        let feed = Box::new(SyntheticFleet { nodes, tick: 0 });
        let app =
            Application::build(settings, Arc::new(MemoryStore::default()), Some(feed)).await?;
        println!("http://{}/ ({} GPUs)", app.address(), nodes * 8);
        app.run_until_stopped().await?;
        anyhow::Ok(())
    })
}
