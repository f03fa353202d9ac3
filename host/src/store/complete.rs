//! Recording the outcome of a claim: one batched UPDATE for all jobs of a delivery.
//!
//! `error_code`/`error_text` hold the *last* error: a job delivered after failures keeps them,
//! so an operator can see why it needed retries.
//!
//! Only jobs still `executing` are touched, so an outcome that arrives after an operator
//! aborted or replayed the job cannot overwrite that decision.

use time::OffsetDateTime;

use super::{Store, StoreError};

/// Error texts are kept to this many bytes (RudderStack keeps a similar amount).
pub const MAX_ERROR_TEXT: usize = 10 * 1024;

/// Where a claimed job goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    /// Terminal: accepted by the destination (or filtered out by the plugin).
    Delivered,
    /// The attempt failed; retry at `at`. Counts as an attempt.
    Retry {
        code: String,
        text: String,
        at: OffsetDateTime,
    },
    /// The destination asked to wait until `at`; does not count as an attempt.
    Throttled { at: OffsetDateTime },
    /// Terminal: permanent failure or retries exhausted. Counts as an attempt.
    Aborted { code: String, text: String },
    /// Not attempted (it was behind a job of its key that did not succeed): back to pending.
    Released,
}

/// The outcome of one job of a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct JobUpdate {
    pub job_id: i64,
    pub next: NextState,
}

impl Store {
    /// Applies the outcomes of a delivery in one statement.
    pub async fn job_complete_many(&self, updates: &[JobUpdate]) -> Result<u64, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let n = updates.len();
        let mut ids = Vec::with_capacity(n);
        let mut states = Vec::with_capacity(n);
        let mut attempt_inc = Vec::with_capacity(n);
        let mut codes: Vec<Option<String>> = Vec::with_capacity(n);
        let mut texts: Vec<Option<String>> = Vec::with_capacity(n);
        let mut next_at: Vec<Option<OffsetDateTime>> = Vec::with_capacity(n);
        for u in updates {
            ids.push(u.job_id);
            let (state, inc, code, text, at) = match &u.next {
                NextState::Delivered => ("delivered", 0, None, None, None),
                NextState::Retry { code, text, at } => {
                    ("failed", 1, Some(code.clone()), Some(trim(text)), Some(*at))
                }
                NextState::Throttled { at } => (
                    "failed",
                    0,
                    Some("throttled".to_string()),
                    Some("the destination asked to slow down".to_string()),
                    Some(*at),
                ),
                NextState::Aborted { code, text } => {
                    ("aborted", 1, Some(code.clone()), Some(trim(text)), None)
                }
                NextState::Released => ("pending", 0, None, None, None),
            };
            states.push(state);
            attempt_inc.push(inc);
            codes.push(code);
            texts.push(text);
            next_at.push(at);
        }
        let done = sqlx::query(
            "UPDATE job_state s
             SET state = u.state,
                 attempt = s.attempt + u.inc,
                 error_code = CASE WHEN u.state IN ('pending', 'delivered') THEN s.error_code
                                   ELSE u.code END,
                 error_text = CASE WHEN u.state IN ('pending', 'delivered') THEN s.error_text
                                   ELSE u.text END,
                 next_attempt_at = coalesce(u.next_at, s.next_attempt_at),
                 updated_at = now()
             FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[],
                         $6::timestamptz[]) AS u(job_id, state, inc, code, text, next_at)
             WHERE s.job_id = u.job_id AND s.state = 'executing'",
        )
        .bind(&ids)
        .bind(&states)
        .bind(&attempt_inc)
        .bind(&codes)
        .bind(&texts)
        .bind(&next_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx("recording job outcomes"))?;
        Ok(done.rows_affected())
    }
}

/// Keeps the first `MAX_ERROR_TEXT` bytes, cut at a character boundary.
fn trim(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_string();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_char_boundaries() {
        let text = "é".repeat(MAX_ERROR_TEXT);
        let t = trim(&text);
        assert!(t.len() <= MAX_ERROR_TEXT);
        assert!(t.chars().all(|c| c == 'é'));
        assert_eq!(trim("short"), "short");
    }
}
