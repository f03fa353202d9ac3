//! The schema stays distributable (docs/scaling.md): on every table that holds a workspace's
//! data, `workspace_id` is part of every primary key and unique index, so that a sharded
//! Postgres (Citus) can distribute those tables by workspace. The tables without it are the
//! few global ones, listed here and in the doc; a new table must pick a side.

use libtest_mimic::Trial;

use crate::harness::{Db, trial};

/// Tables that are global by design (docs/scaling.md says what each becomes under Citus).
pub const GLOBAL: &[&str] = &[
    "_sqlx_migrations",
    // The catalog (0008): small, read whole by every host, written rarely; reference tables
    // under Citus.
    "catalog_audit",
    "catalog_version",
    "destinations",
    "source_keys",
    "sources",
    "workspaces",
    "datasets",
    "dedup_buckets",
    "host_plugins",
    "hosts",
];

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "schema_every_unique_index_of_a_workspace_table_includes_workspace_id",
        distributable,
    )]
}

async fn distributable(db: Db) {
    // Top-level tables (partitions inherit their parent's indexes).
    let tables: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text,
                EXISTS (SELECT 1 FROM pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'workspace_id' AND NOT a.attisdropped)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("list tables");
    assert!(tables.len() > GLOBAL.len(), "tables: {tables:?}");

    for (table, has_workspace) in &tables {
        if GLOBAL.contains(&table.as_str()) {
            continue;
        }
        assert!(
            has_workspace,
            "table {table} has no workspace_id: add it, or list the table as global here and in docs/scaling.md"
        );
        let unique: Vec<(String, Vec<String>)> = sqlx::query_as(
            "SELECT i.indexrelid::regclass::text,
                    array_agg(a.attname::text ORDER BY a.attnum)
             FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
             WHERE i.indrelid = $1::regclass AND i.indisunique
             GROUP BY 1",
        )
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .expect("list unique indexes");
        for (index, columns) in unique {
            assert!(
                columns.iter().any(|c| c == "workspace_id"),
                "{table}: unique index {index} on {columns:?} lacks workspace_id"
            );
        }
    }

    // Foreign keys would tie tables together across shards: only global tables (reference
    // tables under Citus, which may refer to each other) have them.
    let fks: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = 'public' AND c.contype = 'f'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("list foreign keys");
    // On a Citus coordinator, the local copies of reference tables (`<table>_<shard id>`) show
    // up here too.
    let global = |t: &str| {
        let base = t.trim_end_matches(|c: char| c.is_ascii_digit());
        GLOBAL.contains(&t) || (base.ends_with('_') && GLOBAL.contains(&&base[..base.len() - 1]))
    };
    for (from, to) in &fks {
        assert!(
            global(from) && global(to),
            "a foreign key from {from} to {to} ties a workspace table across shards"
        );
    }
}
