-- The decision record: every scale the controller decided and every
-- evaluation a limit held back (a clamp, a stabilization window, the idle
-- period, stale samples, dry-run), with the inputs it used. Numbered 00010
-- to leave room for migrations written in parallel.

-- +goose Up
CREATE TABLE scaling_decisions (
    id BIGSERIAL PRIMARY KEY,
    namespace VARCHAR(253) NOT NULL,
    name VARCHAR(253) NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    from_replicas INT NOT NULL,
    to_replicas INT NOT NULL,
    action TEXT NOT NULL,
    rule TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    -- One of the rules package's limits, or '' when nothing held it back.
    limited_by TEXT NOT NULL DEFAULT '',
    dry_run BOOLEAN NOT NULL DEFAULT false,
    -- Per rule and threshold: the aggregate against the threshold, the
    -- window, the pods and samples it used and the newest sample's age.
    inputs JSONB NOT NULL DEFAULT '[]',
    -- For a wake from zero: the stages' times.
    wake JSONB
);

-- Pages are newest first per autoscaler, by (time, id).
CREATE INDEX idx_scaling_decisions_autoscaler_time ON scaling_decisions(namespace, name, time);
-- Retention deletes by age across autoscalers.
CREATE INDEX idx_scaling_decisions_time ON scaling_decisions(time);

-- +goose Down
DROP TABLE scaling_decisions;
