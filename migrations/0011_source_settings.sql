-- How a source takes events from browsers (docs/sources.md): `allowed_origins` for CORS, kept
-- as one JSON document like `destinations.settings` so that later settings need no migration.
-- Existing sources allow no browser origin, as before (they had no CORS).
ALTER TABLE sources ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
