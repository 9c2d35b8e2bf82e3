-- gpufleet dashboard history: telemetry time series, fleet events, placement decisions and
-- planner runs. Every table has a natural key so a replayed write changes nothing.

-- One row per GPU and instant (raw, resolution_ms = 0) or per GPU and bucket once rolled up
-- (resolution_ms = bucket width, samples = raw samples behind the row).
CREATE TABLE gpu_samples (
    at                  timestamptz NOT NULL,
    gpu_uuid            text        NOT NULL,
    resolution_ms       bigint      NOT NULL DEFAULT 0,
    node                text        NOT NULL,
    gpu_index           integer     NOT NULL,
    memory_used_mib     real,
    memory_total_mib    real,
    utilization_percent real,
    temperature_celsius real,
    power_watts         real,
    health              smallint    NOT NULL DEFAULT 0,
    samples             integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (gpu_uuid, at, resolution_ms)
);
CREATE INDEX gpu_samples_node_at ON gpu_samples (node, at);
CREATE INDEX gpu_samples_at ON gpu_samples USING brin (at);

CREATE TABLE fleet_events (
    id          text        PRIMARY KEY,
    at          timestamptz NOT NULL,
    severity    text        NOT NULL,
    reason      text        NOT NULL,
    object_kind text        NOT NULL,
    object_name text        NOT NULL,
    gpu_uuid    text,
    message     text        NOT NULL
);
CREATE INDEX fleet_events_at ON fleet_events (at DESC);

CREATE TABLE placement_decisions (
    id          text        PRIMARY KEY,
    at          timestamptz NOT NULL,
    deployment  text        NOT NULL,
    replica     text        NOT NULL,
    outcome     text        NOT NULL,
    node        text,
    gpu_uuids   text[]      NOT NULL DEFAULT '{}',
    score_total double precision,
    detail      jsonb       NOT NULL,
    message     text        NOT NULL
);
CREATE INDEX placement_decisions_deployment_at ON placement_decisions (deployment, at DESC);
CREATE INDEX placement_decisions_at ON placement_decisions (at DESC);

CREATE TABLE planner_runs (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL,
    scenario    text        NOT NULL,
    parameters  jsonb       NOT NULL,
    duration_ms bigint      NOT NULL,
    result      jsonb       NOT NULL,
    csv         text        NOT NULL
);
