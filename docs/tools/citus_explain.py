#!/usr/bin/env python3
"""EXPLAIN, on a Citus coordinator, every statement Sluice's hot path issues for one workspace.

Usage: python3 docs/tools/citus_explain.py DATABASE_URL [WORKSPACE]

The statements are read from the store's source (host/crates/store/src), so the plans are those
of the code at hand. Each is PREPAREd (PostgreSQL infers the parameter types), given sample
values of those types ($1 the workspace, $2 the destination `hook`), and EXPLAINed. A router
query shows `Task Count: 1` and the one worker it goes to; a statement that only reads
reference tables runs on the coordinator (`executing the command locally`). docs/scaling.md
holds a run's output. The database must be migrated (run `sluice serve` on it once).
"""

import pathlib
import re
import subprocess
import sys

STORE = pathlib.Path(__file__).resolve().parents[2] / "host/crates/store/src"

# (file, index of the statement in the file, what it does[, types of parameters PostgreSQL
# cannot infer, by position]). The index counts the sqlx::query*/raw_sql("...") literals in the
# file, in order.
LEASE = {4: "timestamptz", 5: "float8"}
HOT_PATH = [
    ("dedup", 2, "ingest: is the minute's dedup partition there (reference table)"),
    ("dedup", 1, "ingest: record the new dedup keys"),
    ("append", 0, "ingest: take ids, find the open dataset"),
    ("append", 1, "ingest: move the workspace's head"),
    ("leases", 0, "lane: acquire", LEASE),
    ("leases", 1, "lane: its blocked keys, at acquisition"),
    ("leases", 2, "lane: renew the lease", {5: "timestamptz", 6: "float8"}),
    ("leases", 3, "lane: release"),
    ("lanes", 4, "lane: is it paused"),
    ("commit", 0, "commit: move the cursor (fenced on the lease)", {7: "timestamptz", 8: "float8"}),
    ("commit", 1, "commit: first rows of jobs, and their attempts"),
    ("commit", 2, "commit: update rows of jobs, and their attempts"),
    ("commit", 3, "commit: block keys"),
    ("commit", 4, "commit: park keys"),
    ("commit", 5, "commit: unblock keys with nothing unfinished"),
    ("commit", 6, "commit: re-block keys"),
    ("blocked", 0, "retry: the due blocked keys' jobs"),
    ("blocked", 1, "retry: when the next blocked key falls due"),
]

# The dedup probe is chosen at run time (this is its Citus form); the log read is built by
# read_sql (rebuilt below, for one source).
BUILT = [
    (
        "ingest: the dedup probe (Citus form, no keys without a workspace)",
        "SELECT DISTINCT d.hash FROM dedup_keys d WHERE d.workspace_id = ANY ($1::text[]) "
        "AND d.hash = ANY ($2::uuid[]) AND d.bucket >= $3",
    ),
]

STATEMENT = re.compile(
    r'(?:query(?:_as|_scalar)?(?:::<[^>]*>)?|raw_sql)\(\s*"((?:[^"\\]|\\.)*)"', re.S
)


def statements(module):
    text = (STORE / f"{module}.rs").read_text()
    return [m.group(1).replace('\\"', '"') for m in STATEMENT.finditer(text)]


def read_sql():
    """read.rs's read_sql(1): one source, as Rust builds it."""
    text = (STORE / "read.rs").read_text()
    branch = re.search(r'format!\(\s*"(\(SELECT v\.dataset.*?LIMIT \$5\))"', text, re.S).group(1)
    branch = branch.replace("${param}", "$7").replace("${from}", "$8").replace("${until}", "$9")
    outer = re.search(r'format!\(\s*"(SELECT h\.last_id.*?< \$6)"', text, re.S).group(1)
    return outer.replace("{merged}", branch)


def sample(position, type_, ws):
    if type_.endswith("[]"):
        return "{" + sample(position, type_[:-2], ws).replace(",", "") + "}"
    if type_ == "text" and position == 1:
        return ws
    if type_ == "text" and position == 2:
        return "hook"
    return {
        "bigint": "1",
        "integer": "1",
        "double precision": "30",
        "numeric": "30",
        "uuid": "00000000-0000-0000-0000-000000000001",
        "timestamp with time zone": "2026-12-03 00:00:00+00",
        "boolean": "false",
        "job_status": "failed",
        "ordering_scope": "user",
    }.get(type_, "u1")


def psql(url, sql, fail=True):
    done = subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if fail:
            sys.exit(f"psql failed on:\n{sql}\n{done.stderr}")
        return None
    return done.stdout


def quote(value):
    return "'" + value.replace("'", "''") + "'"


def explain(url, title, sql, ws, given=None):
    name = "sluice_hot_path"
    given = given or {}
    declared = ""
    if given:
        declared = "(" + ", ".join(given.get(i, "unknown") for i in range(1, max(given) + 1)) + ")"
    types = psql(
        url,
        f"PREPARE {name}{declared} AS {sql};\n"
        f"SELECT array_to_string(parameter_types::text[], '|') FROM pg_prepared_statements "
        f"WHERE name = '{name}'",
    ).strip()
    types = [t for t in types.split("|") if t] if types else []
    values = ", ".join(quote(sample(i + 1, t, ws)) for i, t in enumerate(types))
    call = f"EXECUTE {name}({values})" if types else f"EXECUTE {name}"
    # Inside a transaction that is rolled back: EXPLAIN ANALYZE is not needed, but the
    # statements that write must not change anything if a later version adds ANALYZE.
    plan = psql(
        url,
        f"BEGIN; PREPARE {name}{declared} AS {sql};\nEXPLAIN (COSTS OFF) {call}; ROLLBACK",
        fail=False,
    )
    if plan is None:
        # Citus cannot EXPLAIN a prepared data-modifying CTE ("could not create distributed
        # plan"; it executes it). Then the values go in as typed literals.
        inline = sql
        for i in range(len(types), 0, -1):
            literal = f"{quote(sample(i, types[i - 1], ws))}::{types[i - 1]}"
            inline = re.sub(rf"\${i}(?!\d)", literal, inline)
        plan = psql(url, f"BEGIN; EXPLAIN (COSTS OFF) {inline}; ROLLBACK")
    one_line = re.sub(r"\s+", " ", sql).strip()
    print(f"-- {title}\n-- {one_line}\n{plan.rstrip()}\n")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    url = sys.argv[1]
    ws = sys.argv[2] if len(sys.argv) > 2 else "ws4"
    for module, index, title, *given in HOT_PATH:
        explain(url, title, statements(module)[index], ws, *given)
    for title, sql in BUILT:
        explain(url, title, sql, ws)
    explain(url, "lane: read the log (one source)", read_sql(), ws)


if __name__ == "__main__":
    main()
