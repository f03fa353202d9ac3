-- Destination filters (`filter` in a destination's settings, kept in `destinations.settings`
-- by 0008): a job the filter keeps from its destination is finished without a plugin call and
-- is neither a delivery nor a failure. `lane_stats` counts such jobs in their own column, so
-- that rates and failure rates (delivered, failed, aborted) stay about what the destination
-- did. Existing rows counted none.
ALTER TABLE lane_stats ADD COLUMN filtered bigint NOT NULL DEFAULT 0;
