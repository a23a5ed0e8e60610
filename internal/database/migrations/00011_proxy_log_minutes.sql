-- Per-minute rollups of proxy_logs by environment and route, kept up to date
-- by a statement trigger in the writing transaction (COPY included), so
-- the console's traffic figures and reports read minutes, not rows.
-- latency_buckets counts latency_ms in [0,10), [10,25), [25,50), [50,100),
-- [100,250), [250,500), [500,1000), [1000,2500), [2500,∞): the edges of
-- console/summary.go. Numbered 00011 to leave room for migrations written
-- in parallel.

-- +goose Up
CREATE TABLE proxy_log_minutes (
    minute TIMESTAMP NOT NULL,
    environment VARCHAR(50) NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    latency_buckets BIGINT[] NOT NULL,
    PRIMARY KEY (minute, environment, route)
);
CREATE INDEX idx_proxy_log_minutes_route_minute ON proxy_log_minutes(route, minute);

-- +goose StatementBegin
CREATE FUNCTION proxy_log_minutes_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- In key order: writers adding to the same minutes lock them in the
    -- same order and cannot deadlock.
    INSERT INTO proxy_log_minutes AS m (minute, environment, route, requests, errors, latency_buckets)
    SELECT date_trunc('minute', timestamp), environment, route, count(*),
        count(*) FILTER (WHERE response_status >= 500),
        ARRAY[count(*) FILTER (WHERE latency_ms < 10),
              count(*) FILTER (WHERE latency_ms >= 10 AND latency_ms < 25),
              count(*) FILTER (WHERE latency_ms >= 25 AND latency_ms < 50),
              count(*) FILTER (WHERE latency_ms >= 50 AND latency_ms < 100),
              count(*) FILTER (WHERE latency_ms >= 100 AND latency_ms < 250),
              count(*) FILTER (WHERE latency_ms >= 250 AND latency_ms < 500),
              count(*) FILTER (WHERE latency_ms >= 500 AND latency_ms < 1000),
              count(*) FILTER (WHERE latency_ms >= 1000 AND latency_ms < 2500),
              count(*) FILTER (WHERE latency_ms >= 2500)]
    FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (minute, environment, route) DO UPDATE SET
        requests = m.requests + EXCLUDED.requests,
        errors = m.errors + EXCLUDED.errors,
        latency_buckets = ARRAY(SELECT a + b FROM unnest(m.latency_buckets, EXCLUDED.latency_buckets) AS t(a, b));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER proxy_log_minutes AFTER INSERT ON proxy_logs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION proxy_log_minutes_add();

-- The rows already there.
INSERT INTO proxy_log_minutes (minute, environment, route, requests, errors, latency_buckets)
SELECT date_trunc('minute', timestamp), environment, route, count(*),
    count(*) FILTER (WHERE response_status >= 500),
    ARRAY[count(*) FILTER (WHERE latency_ms < 10),
          count(*) FILTER (WHERE latency_ms >= 10 AND latency_ms < 25),
          count(*) FILTER (WHERE latency_ms >= 25 AND latency_ms < 50),
          count(*) FILTER (WHERE latency_ms >= 50 AND latency_ms < 100),
          count(*) FILTER (WHERE latency_ms >= 100 AND latency_ms < 250),
          count(*) FILTER (WHERE latency_ms >= 250 AND latency_ms < 500),
          count(*) FILTER (WHERE latency_ms >= 500 AND latency_ms < 1000),
          count(*) FILTER (WHERE latency_ms >= 1000 AND latency_ms < 2500),
          count(*) FILTER (WHERE latency_ms >= 2500)]
FROM proxy_logs GROUP BY 1, 2, 3;

-- +goose Down
DROP TRIGGER proxy_log_minutes ON proxy_logs;
DROP FUNCTION proxy_log_minutes_add();
DROP TABLE proxy_log_minutes;
