-- proxy_logs keeps the seed's columns and gains what operators filter on.
-- Batch markers make a retried COPY whose first outcome was unknown a no-op.

-- +goose Up
ALTER TABLE proxy_logs
    ADD COLUMN environment VARCHAR(50) NOT NULL DEFAULT '',
    ADD COLUMN route TEXT NOT NULL DEFAULT '',
    ADD COLUMN upstream_host TEXT NOT NULL DEFAULT '',
    ADD COLUMN response_flags TEXT NOT NULL DEFAULT '',
    ADD COLUMN request_id TEXT NOT NULL DEFAULT '',
    ADD COLUMN bytes_received BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN bytes_sent BIGINT NOT NULL DEFAULT 0;

-- Pages are newest first by (timestamp, id): the seed's timestamp index and
-- this one give rows in timestamp order, and ties are few enough to sort.
CREATE INDEX idx_proxy_logs_environment_timestamp ON proxy_logs(environment, timestamp);
-- Prefix matches (LIKE 'p%') whatever the database's collation.
CREATE INDEX idx_proxy_logs_target_url_prefix ON proxy_logs(target_url text_pattern_ops);

CREATE TABLE proxy_log_batches (
    id UUID PRIMARY KEY,
    written_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);
CREATE INDEX idx_proxy_log_batches_written_at ON proxy_log_batches(written_at);

-- +goose Down
DROP TABLE proxy_log_batches;
DROP INDEX idx_proxy_logs_target_url_prefix;
DROP INDEX idx_proxy_logs_environment_timestamp;
ALTER TABLE proxy_logs
    DROP COLUMN environment, DROP COLUMN route, DROP COLUMN upstream_host, DROP COLUMN response_flags,
    DROP COLUMN request_id, DROP COLUMN bytes_received, DROP COLUMN bytes_sent;
