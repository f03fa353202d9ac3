//! Sending one `send` call's payloads as one or more batch requests, in order.
//!
//! Contract: [`Split::groups`] cuts a call into consecutive groups of at most `max_items`
//! payloads whose request body (payloads, one separator each, plus the envelope's `overhead`)
//! fits in `max_bytes`; a payload too large on its own is a group of one.
//! [`Split::send_in_order`] sends the groups one after another and stops at the first group
//! that was not wholly settled (anything but delivered or aborted): a manifest with
//! `ordered_batches` lets one call carry several consecutive jobs of one user, so a later
//! group must not overtake a failed earlier one. The requests it did not send are held back
//! as [`Outcome::Throttled`] (no attempt spent), with the group's throttle if it was
//! throttled and no wait otherwise. A payload that alone exceeds `max_bytes` is not sent; it
//! is aborted with code `payload_too_large` (it could never fit).

use std::ops::Range;
use std::time::Duration;

use crate::context::Request;
use crate::outcome::Outcome;

/// The request limits a batch destination's config may set, checked: `max_items` (default and
/// most: the plugin's `batch_size`) and `max_bytes` (default `default_bytes`, at least
/// `min_bytes`). Errors name the field.
pub fn request_limits(
    max_items: Option<std::num::NonZeroUsize>,
    max_bytes: Option<std::num::NonZeroUsize>,
    batch_size: usize,
    default_bytes: usize,
    min_bytes: usize,
) -> Result<(usize, usize), crate::ConfigError> {
    let max_items = max_items.map_or(batch_size, std::num::NonZeroUsize::get);
    if max_items > batch_size {
        return Err(crate::ConfigError::field(
            "max_items",
            format!("must be at most {batch_size} (the plugin's batch_size), got {max_items}"),
        ));
    }
    let max_bytes = max_bytes.map_or(default_bytes, std::num::NonZeroUsize::get);
    if max_bytes < min_bytes {
        return Err(crate::ConfigError::field(
            "max_bytes",
            format!("must be at least {min_bytes}, got {max_bytes}"),
        ));
    }
    Ok((max_items, max_bytes))
}

/// Limits on one batch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Payloads per request (at least 1).
    pub max_items: usize,
    /// Bytes per request body.
    pub max_bytes: usize,
}

impl Split {
    /// Consecutive index ranges over payloads of `sizes` bytes, one per request: each has at
    /// most `max_items` payloads and `overhead + Σ(size + 1)` of at most `max_bytes`, except
    /// a range of one payload that is too large alone.
    ///
    /// ```
    /// use sluice_sdk::batch::Split;
    ///
    /// let split = Split { max_items: 3, max_bytes: 20 };
    /// // Envelope `[]` (2 bytes); each payload costs its size plus a separator.
    /// assert_eq!(split.groups([5, 5, 5, 5, 30, 1], 2), [0..3, 3..4, 4..5, 5..6]);
    /// ```
    pub fn groups<I>(&self, sizes: I, overhead: usize) -> Vec<Range<usize>>
    where
        I: IntoIterator<Item = usize>,
    {
        let max_items = self.max_items.max(1);
        let mut groups = Vec::new();
        let mut start = 0;
        let mut bytes = overhead;
        let mut end = 0;
        for (i, size) in sizes.into_iter().enumerate() {
            let cost = size.saturating_add(1);
            let full = i - start >= max_items || bytes.saturating_add(cost) > self.max_bytes;
            if i > start && full {
                groups.push(start..i);
                start = i;
                bytes = overhead;
            }
            bytes = bytes.saturating_add(cost);
            end = i + 1;
        }
        if end > start {
            groups.push(start..end);
        }
        groups
    }

    /// Sends `requests` group by group with `send_group`, which returns one outcome per
    /// request of the group it is given, and returns one outcome per request (see the module
    /// docs for what is held back). `overhead` is the request body's size without payloads.
    pub fn send_in_order<F>(
        &self,
        requests: &[Request],
        overhead: usize,
        mut send_group: F,
    ) -> Vec<Outcome>
    where
        F: FnMut(&[Request]) -> Vec<Outcome>,
    {
        let mut outcomes = Vec::with_capacity(requests.len());
        let groups = self.groups(requests.iter().map(|r| r.body.len()), overhead);
        for group in groups {
            let size = overhead + requests[group.clone()][0].body.len() + 1;
            let mut settled = if group.len() == 1 && size > self.max_bytes {
                vec![Outcome::abort(
                    "payload_too_large",
                    format!(
                        "the payload ({} bytes) exceeds the request limit of {} bytes",
                        size - overhead - 1,
                        self.max_bytes.saturating_sub(overhead + 1)
                    ),
                )]
            } else {
                let mut got = send_group(&requests[group.clone()]);
                // A plugin bug (a wrong count) must not shift outcomes onto other jobs.
                got.resize_with(group.len(), || {
                    Outcome::retry("missing_outcome", "no outcome for this request")
                });
                got
            };
            let throttle = settled
                .iter()
                .filter_map(|o| match o {
                    Outcome::Throttled(wait) => Some(*wait),
                    _ => None,
                })
                .max();
            let unsettled = settled
                .iter()
                .any(|o| !matches!(o, Outcome::Delivered | Outcome::Abort(_)));
            outcomes.append(&mut settled);
            if unsettled {
                let hold = Outcome::Throttled(throttle.unwrap_or(Duration::ZERO));
                outcomes.resize(requests.len(), hold);
                break;
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::request;

    const SPLIT: Split = Split {
        max_items: 3,
        max_bytes: 20,
    };

    #[test]
    fn groups_respect_items_and_bytes() {
        assert_eq!(SPLIT.groups([1; 7], 2), [0..3, 3..6, 6..7]);
        // 2 + (8+1) + (8+1) = 20 fits; a third would not.
        assert_eq!(SPLIT.groups([8, 8, 8], 2), [0..2, 2..3]);
        // An oversized payload is a group of its own, wherever it is.
        assert_eq!(SPLIT.groups([50], 2), vec![0..1]);
        assert_eq!(SPLIT.groups([1, 50, 1], 2), [0..1, 1..2, 2..3]);
        assert!(SPLIT.groups(Vec::new(), 2).is_empty());
        let zero = Split {
            max_items: 0,
            max_bytes: 100,
        };
        assert_eq!(
            zero.groups([1, 1], 0),
            [0..1, 1..2],
            "max_items 0 acts as 1"
        );
    }

    fn calls(outcome: impl Fn(&[Request]) -> Vec<Outcome>) -> (Vec<Outcome>, Vec<Vec<i64>>) {
        let requests: Vec<Request> = (1..=7).map(|id| request(id, "x")).collect();
        let mut sent = Vec::new();
        let outcomes = SPLIT.send_in_order(&requests, 2, |group| {
            sent.push(group.iter().map(|r| r.context.job_id).collect());
            outcome(group)
        });
        (outcomes, sent)
    }

    #[test]
    fn all_groups_are_sent_in_order_when_they_succeed() {
        let (outcomes, sent) = calls(|g| vec![Outcome::Delivered; g.len()]);
        assert_eq!(outcomes, vec![Outcome::Delivered; 7]);
        assert_eq!(sent, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
    }

    #[test]
    fn aborted_items_do_not_stop_the_call() {
        let (outcomes, sent) = calls(|g| {
            g.iter()
                .map(|r| match r.context.job_id {
                    2 => Outcome::abort("bad", "bad"),
                    _ => Outcome::Delivered,
                })
                .collect()
        });
        assert_eq!(sent.len(), 3);
        assert_eq!(outcomes[1], Outcome::abort("bad", "bad"));
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Outcome::Delivered)
                .count(),
            6
        );
    }

    #[test]
    fn a_failed_group_holds_back_the_rest_without_an_attempt() {
        let (outcomes, sent) = calls(|g| match g[0].context.job_id {
            4 => vec![Outcome::retry("http_500", "boom"); g.len()],
            _ => vec![Outcome::Delivered; g.len()],
        });
        assert_eq!(sent, [vec![1, 2, 3], vec![4, 5, 6]], "job 7 is not sent");
        assert_eq!(outcomes[..3], vec![Outcome::Delivered; 3]);
        assert_eq!(outcomes[3..6], vec![Outcome::retry("http_500", "boom"); 3]);
        assert_eq!(outcomes[6], Outcome::Throttled(Duration::ZERO));

        let wait = Duration::from_secs(30);
        let (outcomes, sent) = calls(|g| vec![Outcome::Throttled(wait); g.len()]);
        assert_eq!(sent.len(), 1);
        assert_eq!(outcomes, vec![Outcome::Throttled(wait); 7]);
    }

    #[test]
    fn an_oversized_payload_is_aborted_without_sending() {
        let requests = vec![request(1, "x"), request(2, "y".repeat(40)), request(3, "z")];
        let mut sent = Vec::new();
        let outcomes = SPLIT.send_in_order(&requests, 2, |g| {
            sent.push(g.len());
            vec![Outcome::Delivered; g.len()]
        });
        assert_eq!(sent, [1, 1]);
        assert_eq!(outcomes[0], Outcome::Delivered);
        assert!(matches!(&outcomes[1], Outcome::Abort(f) if f.code == "payload_too_large"));
        assert_eq!(outcomes[2], Outcome::Delivered);
    }

    #[test]
    fn a_short_answer_is_padded_with_retries() {
        let requests = vec![request(1, "x"), request(2, "y")];
        let outcomes = SPLIT.send_in_order(&requests, 2, |_| vec![Outcome::Delivered]);
        assert_eq!(outcomes[0], Outcome::Delivered);
        assert!(matches!(&outcomes[1], Outcome::Retry(f) if f.code == "missing_outcome"));
    }
}
