-- Hourly rollups of proxy_logs, summed from the per-minute ones in the same
-- statement trigger: a report over a month reads 720 rows per route and
-- environment instead of 43,200 (at a few requests per route and minute a
-- month of minutes is nearly as many rows as proxy_logs). Same columns and
-- latency buckets as proxy_log_minutes. Numbered 00014 to follow 00013.

-- +goose Up
CREATE TABLE proxy_log_hours (
    hour TIMESTAMP NOT NULL,
    environment VARCHAR(50) NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    latency_buckets BIGINT[] NOT NULL,
    PRIMARY KEY (hour, environment, route)
);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION proxy_log_minutes_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The batch summed per minute once; the minutes added to their rows,
    -- and summed per hour and added to theirs, in one statement. Each
    -- table's rows in key order, and the tables always in the same order:
    -- writers adding to the same rows cannot deadlock.
    WITH batch AS (
        SELECT date_trunc('minute', timestamp) AS minute, environment, route, count(*) AS requests,
            count(*) FILTER (WHERE response_status >= 500) AS errors,
            ARRAY[count(*) FILTER (WHERE latency_ms < 10),
                  count(*) FILTER (WHERE latency_ms >= 10 AND latency_ms < 25),
                  count(*) FILTER (WHERE latency_ms >= 25 AND latency_ms < 50),
                  count(*) FILTER (WHERE latency_ms >= 50 AND latency_ms < 100),
                  count(*) FILTER (WHERE latency_ms >= 100 AND latency_ms < 250),
                  count(*) FILTER (WHERE latency_ms >= 250 AND latency_ms < 500),
                  count(*) FILTER (WHERE latency_ms >= 500 AND latency_ms < 1000),
                  count(*) FILTER (WHERE latency_ms >= 1000 AND latency_ms < 2500),
                  count(*) FILTER (WHERE latency_ms >= 2500)] AS latency_buckets
        FROM new_rows GROUP BY 1, 2, 3
    ), minutes AS (
        INSERT INTO proxy_log_minutes AS m (minute, environment, route, requests, errors, latency_buckets)
        SELECT * FROM batch ORDER BY 1, 2, 3
        ON CONFLICT (minute, environment, route) DO UPDATE SET
            requests = m.requests + EXCLUDED.requests,
            errors = m.errors + EXCLUDED.errors,
            latency_buckets = ARRAY(SELECT a + b FROM unnest(m.latency_buckets, EXCLUDED.latency_buckets) AS t(a, b))
    )
    INSERT INTO proxy_log_hours AS h (hour, environment, route, requests, errors, latency_buckets)
    SELECT date_trunc('hour', minute), environment, route, sum(requests), sum(errors),
        ARRAY[sum(latency_buckets[1]), sum(latency_buckets[2]), sum(latency_buckets[3]),
              sum(latency_buckets[4]), sum(latency_buckets[5]), sum(latency_buckets[6]),
              sum(latency_buckets[7]), sum(latency_buckets[8]), sum(latency_buckets[9])]::BIGINT[]
    FROM batch GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (hour, environment, route) DO UPDATE SET
        requests = h.requests + EXCLUDED.requests,
        errors = h.errors + EXCLUDED.errors,
        latency_buckets = ARRAY(SELECT a + b FROM unnest(h.latency_buckets, EXCLUDED.latency_buckets) AS t(a, b));
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- The minutes already there.
INSERT INTO proxy_log_hours (hour, environment, route, requests, errors, latency_buckets)
SELECT date_trunc('hour', minute), environment, route, sum(requests), sum(errors),
    ARRAY[sum(latency_buckets[1]), sum(latency_buckets[2]), sum(latency_buckets[3]),
          sum(latency_buckets[4]), sum(latency_buckets[5]), sum(latency_buckets[6]),
          sum(latency_buckets[7]), sum(latency_buckets[8]), sum(latency_buckets[9])]::BIGINT[]
FROM proxy_log_minutes GROUP BY 1, 2, 3;

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION proxy_log_minutes_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
DROP TABLE proxy_log_hours;
