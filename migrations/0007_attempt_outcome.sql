-- `job_attempts.outcome` (0005) becomes an enum, as job states are (`job_status`, 0002): a
-- writer with a misspelt outcome then fails instead of storing a word no reader knows, and the
-- store maps the column to one Rust type (`AttemptOutcome`). The values are the four that lane
-- commits write (`store::commit`), with their meaning documented in 0005:
--   delivered, retry, throttled, abort
-- Existing rows hold only these, so the conversion cannot fail. No view or function reads the
-- column. The ALTER rewrites every partition of `job_attempts` (it holds only the attempts of
-- jobs that left the fast path, so it is small next to `job_state`).
CREATE TYPE attempt_outcome AS ENUM ('delivered', 'retry', 'throttled', 'abort');

ALTER TABLE job_attempts
    ALTER COLUMN outcome TYPE attempt_outcome USING outcome::attempt_outcome;
