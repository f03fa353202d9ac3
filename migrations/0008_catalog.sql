-- The catalog: workspaces, sources and their write keys, destinations, and the links between
-- sources and destinations (docs/catalog.md). Until 0008 these lived in `sluice.toml` and each
-- host wrote `routes` and `lanes` from its own file at start, retiring what its file did not
-- name. Now the store holds them: every host reads the catalog from here and follows changes
-- (`catalog_version` and a `catalog <version>` NOTIFY on `sluice_events`), and only a catalog
-- write (admin API, CLI, `sluice apply`, or the seed from a `sluice.toml` for a workspace the
-- store does not have yet) creates, changes or retires a lane. A host never does it because of
-- what its file says.
--
-- Ids stay unique across the catalog (a write key, a source id and a destination id each name
-- one thing), as `sluice.toml` required, so that `events`, `lanes` and the wake-ups keep their
-- keys.

CREATE TABLE workspaces (
    id         text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sources (
    workspace_id text        NOT NULL REFERENCES workspaces (id),
    id           text        NOT NULL UNIQUE,
    -- A disabled source's keys get 401; its events already accepted are still delivered.
    enabled      boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

-- Write keys are credentials: only their SHA-256 is stored, with a short hint for people.
-- A rotated-out key keeps working until `expires_at`.
CREATE TABLE source_keys (
    key_sha256   bytea       PRIMARY KEY,
    workspace_id text        NOT NULL,
    source_id    text        NOT NULL,
    hint         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    FOREIGN KEY (workspace_id, source_id) REFERENCES sources (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX source_keys_source ON source_keys (workspace_id, source_id);

CREATE TABLE destinations (
    workspace_id text           NOT NULL REFERENCES workspaces (id),
    id           text           NOT NULL UNIQUE,
    plugin       text           NOT NULL,
    -- What the plugin's `configure` receives, sealed (XChaCha20-Poly1305 under the hosts'
    -- secrets key, bound to the workspace and id; `store::sealer`). Credentials never sit
    -- here in plain text.
    config_sealed bytea         NOT NULL,
    -- The same config for people and SQL: declared secrets and URL credentials as `***`.
    config       jsonb          NOT NULL DEFAULT '{}',
    ordering     ordering_scope NOT NULL DEFAULT 'user',
    -- retry, max_concurrency, rate_limit, allowed_private_networks: as `[[destination]]`
    -- writes them (`sluice_core::catalog::DestinationSettings`).
    settings     jsonb          NOT NULL DEFAULT '{}',
    -- Bumped by every update: a host reinstalls the destination when it changes.
    revision     bigint         NOT NULL DEFAULT 1,
    created_at   timestamptz    NOT NULL DEFAULT now(),
    updated_at   timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);

-- A link feeds a destination the events its source accepted after `from_id` and up to
-- `until_id` (null: still linked). Events follow the links in force when they were accepted:
-- linking a source does not send the destination what the source accepted before, and
-- unlinking it still delivers what it accepted before the unlink.
ALTER TABLE routes
    ADD COLUMN from_id  bigint NOT NULL DEFAULT 0,
    ADD COLUMN until_id bigint;

-- Bumped by every catalog write, in the same transaction: a host that has read version N has
-- seen every change up to N.
CREATE TABLE catalog_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO catalog_version VALUES (true, 0);

-- Every catalog change: who (the admin token's name, `apply`, or `seed`), when, what, and the
-- item before and after, with secrets masked.
CREATE TABLE catalog_audit (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    version      bigint      NOT NULL,
    actor        text        NOT NULL,
    action       text        NOT NULL,
    kind         text        NOT NULL,
    workspace_id text        NOT NULL,
    item_id      text        NOT NULL,
    before       jsonb,
    after        jsonb
);
CREATE INDEX catalog_audit_item ON catalog_audit (workspace_id, kind, item_id, id);

-- Views that join the log to its lanes follow the links' ranges.
CREATE OR REPLACE VIEW job_overview AS
SELECT e.id AS event_id, l.destination_id, e.workspace_id, e.source_id, e.user_key,
       e.message_id,
       coalesce(s.state, CASE WHEN e.id <= l.cursor THEN 'delivered'
                              WHEN e.id <= l.claimed_to THEN 'executing'
                              ELSE 'pending' END::job_status) AS state,
       coalesce(s.attempt, CASE WHEN e.id <= l.cursor THEN 1 ELSE 0 END) AS attempt,
       s.error_code, s.error_text, e.received_at, s.first_attempt_at, s.last_attempt_at,
       s.next_attempt_at, s.order_key, e.dataset, e.event::json AS event
FROM events e
JOIN routes r ON r.workspace_id = e.workspace_id AND r.source_id = e.source_id
    AND e.id > r.from_id AND (r.until_id IS NULL OR e.id <= r.until_id)
JOIN lanes l ON l.workspace_id = r.workspace_id AND l.destination_id = r.destination_id
LEFT JOIN job_state s ON s.workspace_id = e.workspace_id
    AND s.destination_id = l.destination_id AND s.event_id = e.id
WHERE e.id > l.start_id AND l.retired_at IS NULL;

CREATE OR REPLACE VIEW lane_backlog AS
SELECT l.workspace_id, l.destination_id,
       coalesce(o.failed, 0) AS failed,
       coalesce(o.parked, 0) AS parked,
       least(q.n, 10000) AS queued,
       least(q.reading, 10000) AS executing,
       q.n > 10000 AS queued_capped,
       oldest.id AS oldest_event_id,
       oldest.received_at AS oldest_received_at,
       extract(epoch FROM now() - oldest.received_at)::float8 AS oldest_age_seconds
FROM lanes l
CROSS JOIN ingest_head h
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE s.state = 'failed') AS failed,
           count(*) FILTER (WHERE s.state = 'pending') AS parked
    FROM job_state s
    WHERE s.workspace_id = l.workspace_id AND s.destination_id = l.destination_id
      AND s.state IN ('pending', 'failed')
) o ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS n, count(*) FILTER (WHERE x.id <= l.claimed_to) AS reading FROM (
        SELECT e.id FROM routes r
        CROSS JOIN LATERAL (
            SELECT e.id FROM events e
            WHERE e.workspace_id = r.workspace_id AND e.source_id = r.source_id
              AND e.id > r.from_id AND (r.until_id IS NULL OR e.id <= r.until_id)
              AND e.id > l.cursor AND e.id <= h.last_id
              AND (e.id > l.claimed_to
                   OR NOT EXISTS (SELECT 1 FROM job_state s
                                  WHERE s.workspace_id = e.workspace_id
                                    AND s.destination_id = l.destination_id
                                    AND s.event_id = e.id))
            ORDER BY e.id LIMIT 10001
        ) e
        WHERE r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id
        LIMIT 10001
    ) x
) q
LEFT JOIN LATERAL (
    SELECT x.id, x.received_at FROM (
        (SELECT e.id, e.received_at
         FROM job_state s
         JOIN events e ON e.workspace_id = s.workspace_id AND e.source_id = s.source_id
                      AND e.id = s.event_id AND e.dataset = s.dataset
         WHERE s.workspace_id = l.workspace_id AND s.destination_id = l.destination_id
           AND s.state IN ('pending', 'failed')
         ORDER BY s.event_id LIMIT 1)
        UNION ALL
        (SELECT e.id, e.received_at
         FROM routes r
         CROSS JOIN LATERAL (
             SELECT e.id, e.received_at FROM events e
             WHERE e.workspace_id = r.workspace_id AND e.source_id = r.source_id
              AND e.id > r.from_id AND (r.until_id IS NULL OR e.id <= r.until_id)
               AND e.id > l.cursor AND e.id <= h.last_id
               AND (e.id > l.claimed_to
                    OR NOT EXISTS (SELECT 1 FROM job_state s
                                   WHERE s.workspace_id = e.workspace_id
                                     AND s.destination_id = l.destination_id
                                     AND s.event_id = e.id))
             ORDER BY e.id LIMIT 1
         ) e
         WHERE r.workspace_id = l.workspace_id AND r.destination_id = l.destination_id)
    ) x
    ORDER BY x.id LIMIT 1
) oldest ON true
WHERE l.retired_at IS NULL;
