//! LISTEN/NOTIFY on [`EVENTS_CHANNEL`]: the wake-ups between hosts.
//!
//! Payloads (all text):
//! - `<incarnation> <workspace> <workspace>...`: that host's ingest wrote events for these
//!   workspaces, or one of their lanes wants an owner ([`wake_payload`]);
//! - `join <incarnation>`: a host started (`hosts`), so shares of lanes change;
//! - `op <workspace> <destination>`: an operator function changed a lane (migration 0004);
//! - `catalog <version>`: a catalog write committed (`catalog::write`).
//!
//! A NOTIFY is only a hint to look now: what it announces is in the tables, and a host that
//! missed one (a lost connection) looks at every workspace.

use uuid::Uuid;

use super::{Store, StoreError};

/// The channel other hosts LISTEN on for new events.
pub const EVENTS_CHANNEL: &str = "sluice_events";

/// A wake-up: what a NOTIFY on [`EVENTS_CHANNEL`] announced.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// A host's ingest wrote events for these workspaces, or lanes of them want an owner.
    Events {
        from: Option<Uuid>,
        workspaces: Vec<String>,
    },
    /// A host started: shares of lanes change.
    Joined { from: Option<Uuid> },
    /// An operator changed a lane (`sluice_retry_now`, `sluice_pause`, ...).
    Operator {
        workspace: String,
        destination: String,
    },
    /// The catalog changed; it is now at `version`.
    Catalog { version: i64 },
    /// The LISTEN connection was re-established: notifications may have been missed.
    Reconnected,
}

/// Sends `payload` on [`EVENTS_CHANNEL`]; inside a transaction, it is delivered at commit.
pub(crate) async fn notify<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    payload: &str,
    action: &'static str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(payload)
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx(action))?;
    Ok(())
}

impl Store {
    /// Tells the other hosts that lanes of `workspace` want an owner (a lane handed over).
    pub async fn lane_announce(&self, me: Uuid, workspace: &str) -> Result<(), StoreError> {
        notify(
            &self.pool,
            &wake_payload(me, &[workspace]),
            "announcing a free lane",
        )
        .await
    }

    /// A LISTEN connection for other hosts' ingest wake-ups.
    pub async fn wake_listener(&self) -> Result<WakeListener, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool)
            .await
            .map_err(StoreError::from_sqlx("opening a LISTEN connection"))?;
        listener
            .listen(EVENTS_CHANNEL)
            .await
            .map_err(StoreError::from_sqlx("listening for new events"))?;
        Ok(WakeListener { listener })
    }
}

/// Wake-ups sent by ingest on any host (see `append`).
pub struct WakeListener {
    listener: sqlx::postgres::PgListener,
}

impl WakeListener {
    /// The next wake-up. After a lost connection it reconnects by itself and returns
    /// [`Wake::Reconnected`], since notifications may have been missed.
    pub async fn next(&mut self) -> Result<Wake, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(parse_wake(n.payload())),
            Ok(None) => Ok(Wake::Reconnected),
            Err(e) => Err(StoreError::from_sqlx("waiting for notifications")(e)),
        }
    }
}

/// The payload of an ingest NOTIFY: `<incarnation> <workspace> <workspace>...`.
pub fn wake_payload(from: Uuid, workspaces: &[&str]) -> String {
    let mut s = from.to_string();
    for w in workspaces {
        s.push(' ');
        s.push_str(w);
    }
    s
}

fn parse_wake(payload: &str) -> Wake {
    if let Some(host) = payload.strip_prefix("join ") {
        return Wake::Joined {
            from: Uuid::parse_str(host.trim()).ok(),
        };
    }
    // Written by the operator functions (migrations/0004): `op <workspace> <destination>`.
    if let Some(lane) = payload.strip_prefix("op ") {
        let mut parts = lane.splitn(2, ' ');
        return Wake::Operator {
            workspace: parts.next().unwrap_or_default().to_string(),
            destination: parts.next().unwrap_or_default().to_string(),
        };
    }
    if let Some(version) = payload.strip_prefix("catalog ")
        && let Ok(version) = version.trim().parse()
    {
        return Wake::Catalog { version };
    }
    let mut parts = payload.split(' ');
    let from = parts.next().and_then(|p| Uuid::parse_str(p).ok());
    Wake::Events {
        from,
        workspaces: parts
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_payload_round_trips() {
        let me = Uuid::new_v4();
        assert_eq!(
            parse_wake(&wake_payload(me, &["acme", "beta"])),
            Wake::Events {
                from: Some(me),
                workspaces: vec!["acme".into(), "beta".into()],
            }
        );
        assert!(matches!(
            parse_wake("garbage"),
            Wake::Events { from: None, .. }
        ));
        assert_eq!(
            parse_wake("op acme hook"),
            Wake::Operator {
                workspace: "acme".into(),
                destination: "hook".into()
            }
        );
        assert_eq!(
            parse_wake(&format!("join {me}")),
            Wake::Joined { from: Some(me) }
        );
        assert_eq!(parse_wake("catalog 42"), Wake::Catalog { version: 42 });
    }
}
