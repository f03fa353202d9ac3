//! When the lane next fetches the rows of its blocked keys: the earliest time one falls due.
//!
//! Due times come from three places: the lane's own commits (a failure blocks its key until
//! its retry, a park or a finished key is looked at at once), an operator (retry now, replay:
//! keys due at once), and the fetch itself, which answers with the earliest due time of the
//! keys it did not take. The fetch's answer is what the store held when its query ran, so a
//! due time noted while the fetch was under way may be newer than that answer: it is kept
//! beside it, never overwritten by it. (Overwriting it lost an operator's replay that came
//! during a fetch: the replayed job then waited for the next unrelated due time.)
//!
//! Pure, and unit-tested here; `store_io.rs` and `step.rs` feed it.

use time::OffsetDateTime;

#[derive(Debug, Default)]
pub(super) struct DueKeys {
    next: Option<OffsetDateTime>,
    /// The earliest due time noted since the fetch under way started (if one is).
    noted_while_fetching: Option<OffsetDateTime>,
    fetching: bool,
}

impl DueKeys {
    /// Starting with keys due at `at` (the lane was taken with blocked keys), or none.
    pub(super) fn starting(at: Option<OffsetDateTime>) -> DueKeys {
        DueKeys {
            next: at,
            ..DueKeys::default()
        }
    }

    /// When the next key falls due, as far as the lane knows.
    pub(super) fn next(&self) -> Option<OffsetDateTime> {
        self.next
    }

    /// Whether a fetch is due at `now`.
    pub(super) fn is_due(&self, now: OffsetDateTime) -> bool {
        self.next.is_some_and(|t| t <= now)
    }

    /// A key falls due at `at` (a commit blocked or parked it, an operator made it due).
    pub(super) fn note(&mut self, at: OffsetDateTime) {
        self.next = earliest(self.next, Some(at));
        if self.fetching {
            self.noted_while_fetching = earliest(self.noted_while_fetching, Some(at));
        }
    }

    /// A fetch starts: what is noted from now on may be newer than its answer.
    pub(super) fn fetch_started(&mut self) {
        self.fetching = true;
        self.noted_while_fetching = None;
    }

    /// The fetch answered that its earliest remaining key falls due at `found` (or none is
    /// left). Due times noted meanwhile stand beside that answer.
    pub(super) fn fetched(&mut self, found: Option<OffsetDateTime>) {
        self.fetching = false;
        self.next = earliest(found, self.noted_while_fetching.take());
    }

    /// The fetch failed (or was dropped): what was due still is, and so is what was noted.
    pub(super) fn fetch_failed(&mut self) {
        self.fetching = false;
        self.next = earliest(self.next, self.noted_while_fetching.take());
    }
}

fn earliest(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    #[test]
    fn a_fetch_answer_replaces_what_was_due_before_it_started() {
        let mut due = DueKeys::starting(Some(t0()));
        assert!(due.is_due(t0()));
        due.fetch_started();
        due.fetched(Some(t0() + Duration::hours(1)));
        assert_eq!(due.next(), Some(t0() + Duration::hours(1)));
        assert!(!due.is_due(t0() + Duration::seconds(1)));

        due.note(t0() + Duration::hours(1));
        due.fetch_started();
        due.fetched(None);
        assert_eq!(due.next(), None, "nothing blocked is left");
    }

    #[test]
    fn a_key_made_due_during_a_fetch_outlives_its_answer() {
        // The operator's replay (due at once) lands while the fetch's query has already run:
        // its answer knows only of a key due in an hour.
        let mut due = DueKeys::starting(Some(t0()));
        due.fetch_started();
        due.note(t0() + Duration::milliseconds(5));
        due.fetched(Some(t0() + Duration::hours(1)));
        assert_eq!(due.next(), Some(t0() + Duration::milliseconds(5)));
        assert!(due.is_due(t0() + Duration::milliseconds(10)));

        // Likewise when the answer is that nothing is left.
        due.fetch_started();
        due.note(t0() + Duration::seconds(1));
        due.fetched(None);
        assert_eq!(due.next(), Some(t0() + Duration::seconds(1)));
    }

    #[test]
    fn a_later_block_noted_during_a_fetch_is_kept_but_not_brought_forward() {
        let mut due = DueKeys::starting(Some(t0()));
        due.fetch_started();
        due.note(t0() + Duration::minutes(10));
        due.fetched(Some(t0() + Duration::minutes(3)));
        assert_eq!(due.next(), Some(t0() + Duration::minutes(3)));
        due.fetch_started();
        due.note(t0() + Duration::minutes(10));
        due.fetched(Some(t0() + Duration::minutes(30)));
        assert_eq!(due.next(), Some(t0() + Duration::minutes(10)));
    }

    #[test]
    fn what_was_noted_before_a_fetch_started_is_its_business() {
        let mut due = DueKeys::starting(None);
        due.note(t0());
        due.fetch_started();
        due.fetched(None);
        assert_eq!(
            due.next(),
            None,
            "the fetch saw the key noted before it and took it"
        );
    }

    #[test]
    fn a_failed_fetch_leaves_everything_due() {
        let mut due = DueKeys::starting(Some(t0()));
        due.fetch_started();
        due.note(t0() - Duration::seconds(1));
        due.fetch_failed();
        assert_eq!(due.next(), Some(t0() - Duration::seconds(1)));
        // Nothing is carried into the next fetch.
        due.fetch_started();
        due.fetched(Some(t0() + Duration::hours(1)));
        assert_eq!(due.next(), Some(t0() + Duration::hours(1)));
    }
}
