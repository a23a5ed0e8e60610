-- The activator's own 503s (status 503, no upstream, no response flag:
-- console/reports.go says why these are they), indexed apart so a report
-- counts a period's rejected held requests without reading its other rows.
-- They are few, so the index is small and cheap to maintain.

-- +goose Up
CREATE INDEX idx_proxy_logs_activator_rejects ON proxy_logs(timestamp) INCLUDE (environment, route)
    WHERE response_status = 503 AND upstream_host = '' AND response_flags = '';

-- +goose Down
DROP INDEX idx_proxy_logs_activator_rejects;
