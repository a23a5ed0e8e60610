-- Rows PostgreSQL refuses, or that fail the sink's checks, land here instead
-- of blocking the rows beside them; and every filter GET /proxy/logs offers
-- has an index that yields rows newest first, so no filter scans the table.

-- +goose Up
CREATE TABLE proxy_logs_rejected (
    id BIGSERIAL PRIMARY KEY,
    rejected_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    -- A short, stable cause (the label of nemesis_proxy_logs_rows_rejected_total).
    reason TEXT NOT NULL,
    -- The check's message, or PostgreSQL's error with its SQLSTATE.
    error TEXT NOT NULL,
    -- The row as the sink held it; json, not jsonb, so any text fits.
    row_data JSON NOT NULL
);
CREATE INDEX idx_proxy_logs_rejected_rejected_at ON proxy_logs_rejected(rejected_at);

CREATE INDEX idx_proxy_logs_status_timestamp ON proxy_logs(response_status, timestamp);
CREATE INDEX idx_proxy_logs_method_timestamp ON proxy_logs(http_method, timestamp);
CREATE INDEX idx_proxy_logs_client_ip_timestamp ON proxy_logs(client_ip, timestamp);
CREATE INDEX idx_proxy_logs_route_timestamp ON proxy_logs(route, timestamp);
CREATE INDEX idx_proxy_logs_latency ON proxy_logs(latency_ms);

-- +goose Down
DROP INDEX idx_proxy_logs_latency;
DROP INDEX idx_proxy_logs_route_timestamp;
DROP INDEX idx_proxy_logs_client_ip_timestamp;
DROP INDEX idx_proxy_logs_method_timestamp;
DROP INDEX idx_proxy_logs_status_timestamp;
DROP TABLE proxy_logs_rejected;
