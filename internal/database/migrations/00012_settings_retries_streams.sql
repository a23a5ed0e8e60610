-- Retries of requests that never reached a pod, their budget, and the
-- stream idle timeout (docs/protocols.md). Rows written before have the
-- defaults settings.Defaults names.

-- +goose Up
ALTER TABLE loadbalancer_settings
    ADD COLUMN retry_attempts INT NOT NULL DEFAULT 2 CHECK (retry_attempts BETWEEN 0 AND 10),
    ADD COLUMN retry_budget_percent INT NOT NULL DEFAULT 20 CHECK (retry_budget_percent BETWEEN 1 AND 100),
    ADD COLUMN stream_idle_timeout_seconds INT NOT NULL DEFAULT 300 CHECK (stream_idle_timeout_seconds BETWEEN 1 AND 3600);

-- +goose Down
ALTER TABLE loadbalancer_settings
    DROP COLUMN retry_attempts,
    DROP COLUMN retry_budget_percent,
    DROP COLUMN stream_idle_timeout_seconds;
