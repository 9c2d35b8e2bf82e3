//! `CapacityPlan`: a capacity-planning scenario the operator solves with the LP planner.
//!
//! The scenario is either inline (the same YAML `gpufleet plan run` reads, as an object) or a
//! key of a ConfigMap, so large scenarios can be shared and versioned. The operator writes a
//! result summary and conditions back to the status; the full plan lives in the dashboard.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a CapacityPlan.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gpufleet.io",
    version = "v1alpha1",
    kind = "CapacityPlan",
    plural = "capacityplans",
    shortname = "cplan",
    category = "gpufleet",
    namespaced,
    status = "CapacityPlanStatus",
    printcolumn = r#"{"name":"Objective","type":"string","jsonPath":".spec.objective"}"#,
    printcolumn = r#"{"name":"Solved","type":"string","jsonPath":".status.conditions[?(@.type==\"Solved\")].status"}"#,
    printcolumn = r#"{"name":"Cost $M","type":"number","jsonPath":".status.summary.totalCostMillionUsd"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","jsonPath":".status.summary.gpusPurchased"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CapacityPlanSpec {
    /// The planning scenario.
    pub scenario: ScenarioSource,
    /// Overrides the scenario's objective when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<PlanObjective>,
    /// Stop the solver after this many seconds and report the plan as not solved.
    #[serde(default = "default_time_limit")]
    #[schemars(range(min = 1, max = 3600))]
    pub time_limit_seconds: u32,
}

fn default_time_limit() -> u32 {
    60
}

/// Where the scenario comes from: exactly one of `inline` or `configMapRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.inline) != has(self.configMapRef)").message("spec.scenario: set exactly one of spec.scenario.inline or spec.scenario.configMapRef"))]
pub struct ScenarioSource {
    /// The scenario itself, in the format of `gpufleet plan validate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "inline_scenario_schema")]
    pub inline: Option<serde_json::Value>,
    /// A ConfigMap key holding the scenario as YAML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKey>,
}

/// The planner validates scenarios itself with field-level messages; the CRD only requires an
/// object so that the scenario format can grow without a CRD change.
fn inline_scenario_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Scenario in the format `gpufleet plan validate` reads.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A key of a ConfigMap in the CapacityPlan's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the ConfigMap.
    #[serde(default = "default_scenario_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_scenario_key() -> String {
    "scenario.yaml".to_owned()
}

/// What the planner optimises.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PlanObjective {
    /// Meet every demand and quality target at the least discounted cost.
    MinimizeCost,
    /// Maximise discounted value of served demand minus cost, within the budget.
    MaximizeValue,
}

/// Observed state of a CapacityPlan, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityPlanStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Solved` (true, or false with the reason: invalid scenario, infeasible, time limit).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Headline figures of the last solved plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<PlanSummary>,
}

/// Headline figures of a solved plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// Objective value as the solver reports it, in $M.
    pub objective_million_usd: f64,
    /// Total discounted cost (capex, rental, power), $M.
    pub total_cost_million_usd: f64,
    /// GPUs bought over the horizon, all types.
    pub gpus_purchased: u64,
    /// GPU-hours (thousands) spent on pre-training.
    pub pretraining_gpu_hours_thousands: f64,
    /// GPU-hours (thousands) spent on post-training (RL).
    pub posttraining_gpu_hours_thousands: f64,
    /// GPU-hours (thousands) spent serving queries (test-time compute).
    pub test_time_gpu_hours_thousands: f64,
    /// Constraint groups that bind at the optimum, most valuable first.
    #[serde(default)]
    pub binding_constraints: Vec<String>,
    /// When the plan was solved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solved_at: Option<Time>,
}
