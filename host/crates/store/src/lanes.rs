//! Lane rows: whether a lane is paused, and (for tests) routes and lanes made to match a list.
//!
//! Who owns a lane is `leases`; what a lane has done is its cursor, moved by `commit`.

use super::{LaneId, OrderingScope, Store, StoreError};

/// A destination as the config describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSpec {
    pub lane: LaneId,
    pub ordering: OrderingScope,
    /// The sources feeding it.
    pub sources: Vec<String>,
}

impl Store {
    /// Makes routes and lanes match `specs` exactly. New lanes start at the current head:
    /// events accepted before a destination existed are not its jobs. Lanes not named are
    /// retired; a lane that comes back is revived.
    ///
    /// For tests only (the `testing` feature): a running host never does this, since it would
    /// undo what other hosts and the catalog created. Hosts run the catalog
    /// (`catalog::write`), which changes one item at a time.
    #[cfg(feature = "testing")]
    pub async fn lanes_sync(&self, specs: &[LaneSpec]) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::from_sqlx("starting the lane sync"))?;
        let (mut ws, mut dest, mut src) = (Vec::new(), Vec::new(), Vec::new());
        for s in specs {
            for source in &s.sources {
                ws.push(s.lane.workspace_id.as_str());
                dest.push(s.lane.destination_id.as_str());
                src.push(source.as_str());
            }
        }
        sqlx::query(
            "DELETE FROM routes r WHERE NOT EXISTS (
                 SELECT 1 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS c(w, d, s)
                 WHERE c.w = r.workspace_id AND c.d = r.destination_id AND c.s = r.source_id)",
        )
        .bind(&ws)
        .bind(&dest)
        .bind(&src)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("removing old routes"))?;
        sqlx::query(
            "INSERT INTO routes (workspace_id, destination_id, source_id)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&ws)
        .bind(&dest)
        .bind(&src)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("writing routes"))?;

        let lane_ws: Vec<&str> = specs.iter().map(|s| s.lane.workspace_id.as_str()).collect();
        let lane_dest: Vec<&str> = specs
            .iter()
            .map(|s| s.lane.destination_id.as_str())
            .collect();
        let ordering: Vec<OrderingScope> = specs.iter().map(|s| s.ordering).collect();
        sqlx::query(
            "INSERT INTO lanes (workspace_id, destination_id, ordering, start_id, cursor, claimed_to)
             SELECT c.w, c.d, c.o, coalesce(h.last_id, 0), coalesce(h.last_id, 0),
                    coalesce(h.last_id, 0)
             FROM UNNEST($1::text[], $2::text[], $3::ordering_scope[]) AS c(w, d, o)
             LEFT JOIN workspace_heads h ON h.workspace_id = c.w
             ON CONFLICT (workspace_id, destination_id) DO UPDATE
             SET ordering = excluded.ordering, retired_at = NULL, updated_at = excluded.updated_at
             WHERE lanes.ordering IS DISTINCT FROM excluded.ordering
                OR lanes.retired_at IS NOT NULL",
        )
        .bind(&lane_ws)
        .bind(&lane_dest)
        .bind(&ordering)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("writing lanes"))?;
        sqlx::query(
            "UPDATE lanes l SET retired_at = now(), owner = NULL, lease_until = NULL
             WHERE l.retired_at IS NULL AND NOT EXISTS (
                 SELECT 1 FROM UNNEST($1::text[], $2::text[]) AS c(w, d)
                 WHERE c.w = l.workspace_id AND c.d = l.destination_id)",
        )
        .bind(&lane_ws)
        .bind(&lane_dest)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx("retiring lanes"))?;
        tx.commit()
            .await
            .map_err(StoreError::from_sqlx("committing the lane sync"))
    }

    /// Whether an operator paused the lane (`sluice_pause`).
    pub async fn lane_paused(&self, lane: &LaneId) -> Result<bool, StoreError> {
        let paused: Option<bool> = sqlx::query_scalar(
            "SELECT paused_at IS NOT NULL FROM lanes WHERE workspace_id = $1 AND destination_id = $2",
        )
        .bind(&lane.workspace_id)
        .bind(&lane.destination_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("reading whether a lane is paused"))?;
        Ok(paused.unwrap_or(false))
    }
}
