-- Which plugin version each host runs, and whether each destination's plugin is configured.
--
-- Hosts load their own plugins directory (and reload it while running), so two hosts can run
-- different versions of one plugin for a while; `plugin_versions` shows it.

-- The plugins a host incarnation has loaded (replaced at every load or reload).
CREATE TABLE host_plugins (
    incarnation uuid        NOT NULL,
    plugin      text        NOT NULL,
    sha256      text        NOT NULL,
    version     text        NOT NULL,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incarnation, plugin)
);

-- A destination's plugin as its hosts last saw it: loaded and configured (`plugin_error` null),
-- or why not (missing, failed to load, or `configure` refused the destination's config).
ALTER TABLE lanes
    ADD COLUMN plugin            text,
    ADD COLUMN plugin_sha256     text,
    ADD COLUMN plugin_error      text,
    ADD COLUMN plugin_checked_at timestamptz;

-- Lanes with their lease, progress and plugin.
CREATE OR REPLACE VIEW lane_status AS
SELECT l.workspace_id, l.destination_id, l.ordering, l.cursor, l.claimed_to,
       (SELECT last_id FROM ingest_head) - l.cursor AS ids_behind,
       l.owner, h.host_name AS owner_host, h.pid AS owner_pid, l.lease_until,
       l.lease_until > now() AS leased,
       (SELECT count(*) FROM blocked_keys b
        WHERE b.workspace_id = l.workspace_id AND b.destination_id = l.destination_id)
           AS blocked_keys,
       l.next_due, l.retired_at,
       l.plugin, l.plugin_sha256, l.plugin_error, l.plugin_checked_at
FROM lanes l LEFT JOIN hosts h ON h.incarnation = l.owner;

-- Plugins that live hosts run in more than one version (a rolling upgrade, or a host whose
-- plugins directory was not updated).
CREATE VIEW plugin_versions AS
SELECT p.plugin, p.sha256, p.version, array_agg(h.host_name || ':' || h.pid ORDER BY h.host_name) AS hosts,
       count(*) OVER (PARTITION BY p.plugin) > 1 AS differs
FROM host_plugins p
JOIN hosts h ON h.incarnation = p.incarnation AND h.stopped_at IS NULL
GROUP BY p.plugin, p.sha256, p.version;
