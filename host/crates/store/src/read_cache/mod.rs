//! Log reads shared between the lanes of one source on this host.
//!
//! A source with ten destinations has ten lanes, and each reads the same events from the log:
//! ten queries, ten times the rows decoded. Lanes of one source move through the log at about
//! the same pace, so the events one lane read are the ones the next lane asks for a moment
//! later. This keeps, per (workspace, source), the latest stretch of the log some lane read,
//! and serves a lane's read from it when the stretch covers where that lane is.
//!
//! What makes a stretch safe to serve: a read in one snapshot sees every event of the
//! workspace up to the head it returns (ids form a prefix, see `append`), and events are
//! never changed once written. So when a read of one source returned the events in
//! `(after, read_to]`, the stretch `(lo, hi]` holds *every* event of that source with an id in
//! it, and any lane of that source may take its events from there instead of the store.
//!
//! Lanes of a fan-out also ask at the same moment (they start together, and a read of a big
//! backlog takes a while), so a read already going to the store for that source is waited
//! for, once, by a lane whose position it starts at or before: one query, many lanes.
//!
//! Only plain reads are recorded or served: one source, its link covering the whole stretch,
//! and no parked rows to skip (those are per destination). A source read by one lane only is
//! not copied at all: a stretch starts to be kept once a second destination reads the source.
//!
//! Ingest hands over what it commits (`feed`): a transaction that wrote a workspace's events
//! knows they are all of the workspace's events between its head before and its head after
//! (ids are taken under the workspace's ingest lock, see `append`). So a stretch ending at the
//! head before grows to the head after with the new events of its source, and the lanes woken
//! for them take them from memory instead of reading back what was just written: on a
//! fast path (events at 1,000/s) that read was about 0.9 ms of an event's trip. Only a stretch
//! that some lane has read up to the head grows this way (a lane behind reads the store; the
//! events are not copied for it), and for a source with one destination the events it has
//! passed are dropped as it reads. A served read never says it reached the head: the lane reads
//! once more, from the store, while it delivers what it was served.
//! Bounded: at most `MAX_SEGMENT_BYTES` per source and `MAX_TOTAL_BYTES` in all (the least
//! recently used stretch goes first), and a stretch not used for `MAX_IDLE` is dropped, so an
//! event is never kept long (a dataset that maintenance moves or drops is long past every
//! lane that reads it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use super::read::{LogEvent, LogRead, ReadFrom, ReadLimits};

/// Largest stretch kept per source, in event bytes.
const MAX_SEGMENT_BYTES: usize = 16 << 20;
/// Largest total kept, in event bytes.
const MAX_TOTAL_BYTES: usize = 64 << 20;
/// A stretch unused for this long is dropped.
const MAX_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    workspace: String,
    source: String,
}

/// The events of one source in `(lo, hi]`, every one of them, in id order.
#[derive(Debug)]
struct Segment {
    lo: i64,
    hi: i64,
    events: VecDeque<LogEvent>,
    bytes: usize,
    /// The destination that read the source last, and whether a second one has read it.
    last_reader: String,
    shared: bool,
    /// The ids in `(lo, hi]` of the stretch that ingest handed over (`feed`), for the metric
    /// saying where a read came from.
    fed: Option<(i64, i64)>,
    used: Instant,
    /// A read of this source going to the store: where it starts, and its end's signal.
    reading: Option<(i64, Arc<Notify>)>,
}

impl Segment {
    fn new(at: i64, reader: &str, now: Instant) -> Segment {
        Segment {
            lo: at,
            hi: at,
            events: VecDeque::new(),
            bytes: 0,
            last_reader: reader.to_owned(),
            shared: false,
            fed: None,
            used: now,
            reading: None,
        }
    }

    /// Drops the kept events up to `id` (all of them with `i64::MAX`), from `total` too.
    fn drop_through(&mut self, id: i64, total: &mut usize) {
        while let Some(first) = self.events.front()
            && first.id <= id
        {
            self.bytes -= first.event.len();
            *total -= first.event.len();
            self.events.pop_front();
        }
    }

    /// Notes which destination reads the source: a second one makes it shared.
    fn reader(&mut self, destination: &str, now: Instant) {
        if self.last_reader != destination {
            self.shared = true;
            self.last_reader = destination.to_owned();
        }
        self.used = now;
    }
}

/// What a lane's read should do.
pub(crate) enum Lookup {
    /// Take these events (from what another lane read).
    Served(LogRead),
    /// Wait for the read of this source already going to the store, then look again.
    Wait(OwnedNotified),
    /// Read from the store, and record it with the ticket.
    Read(Ticket),
}

/// A read going to the store: record its result with [`Ticket::record`]. Dropped without
/// recording (the read failed), it lets the lanes waiting for it go.
pub(crate) struct Ticket {
    cache: Arc<ReadCache>,
    key: Key,
    destination: String,
    /// The signal this read registered (None: another read was already registered).
    own: Option<Arc<Notify>>,
}

impl Ticket {
    /// Records that the store returned every event of the source in `(after, read.read_to]`.
    pub(crate) fn record(self, after: i64, read: &LogRead) {
        self.cache.record(&self.key, &self.destination, after, read);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(own) = self.own.take() else {
            return;
        };
        if let Ok(mut segments) = self.cache.segments.lock()
            && let Some(segment) = segments.by_source.get_mut(&self.key)
            && segment
                .reading
                .as_ref()
                .is_some_and(|(_, n)| Arc::ptr_eq(n, &own))
        {
            segment.reading = None;
        }
        own.notify_waiters();
    }
}

#[derive(Debug, Default)]
struct Segments {
    by_source: HashMap<Key, Segment>,
    bytes: usize,
    last_sweep: Option<Instant>,
}

/// The shared reads of one host (one per [`crate::Store`]).
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    segments: Mutex<Segments>,
    #[cfg(test)]
    served: std::sync::atomic::AtomicUsize,
}

impl ReadCache {
    /// Where `destination`'s read of `source` above `after` comes from. `may_wait`: false once
    /// the lane has waited (it reads on its own rather than wait twice).
    pub(crate) fn lookup(
        self: &Arc<Self>,
        workspace: &str,
        source: &str,
        destination: &str,
        after: i64,
        limits: ReadLimits,
        may_wait: bool,
    ) -> Lookup {
        let key = Key {
            workspace: workspace.to_owned(),
            source: source.to_owned(),
        };
        let now = Instant::now();
        let Ok(mut guard) = self.segments.lock() else {
            return Lookup::Read(self.ticket(key, destination, None));
        };
        let segments = &mut *guard;
        let segment = segments
            .by_source
            .entry(key.clone())
            .or_insert_with(|| Segment::new(after, destination, now));
        segment.reader(destination, now);
        if !segment.shared && segment.lo < after && after <= segment.hi {
            // The source's one destination has passed these (ingest handed them over): no
            // other lane of this host will ask for them.
            segment.drop_through(after, &mut segments.bytes);
            segment.lo = after;
        }
        if let Some(read) = serve(segment, after, limits) {
            #[cfg(test)]
            self.served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Lookup::Served(read);
        }
        let own = match &segment.reading {
            Some((from, notify)) if may_wait && *from <= after => {
                return Lookup::Wait(notify.clone().notified_owned());
            }
            Some(_) => None,
            None => {
                let notify = Arc::new(Notify::new());
                segment.reading = Some((after, notify.clone()));
                Some(notify)
            }
        };
        drop(guard);
        Lookup::Read(self.ticket(key, destination, own))
    }

    fn ticket(self: &Arc<Self>, key: Key, destination: &str, own: Option<Arc<Notify>>) -> Ticket {
        Ticket {
            cache: self.clone(),
            key,
            destination: destination.to_owned(),
            own,
        }
    }

    fn record(&self, key: &Key, destination: &str, after: i64, read: &LogRead) {
        let Ok(mut guard) = self.segments.lock() else {
            return;
        };
        let segments = &mut *guard;
        let now = Instant::now();
        let segment = segments
            .by_source
            .entry(key.clone())
            .or_insert_with(|| Segment::new(after, destination, now));
        segment.reader(destination, now);
        if read.read_to <= segment.hi && after >= segment.lo {
            return; // nothing new
        }
        if !(segment.lo <= after && after <= segment.hi) {
            // Not adjoining what is kept: start again from this read, unless it lies behind
            // (lanes that lag behind read old stretches; the others meet at the head).
            if read.read_to < segment.lo {
                return;
            }
            segment.drop_through(i64::MAX, &mut segments.bytes);
            segment.lo = after;
            segment.hi = after;
            segment.fed = None;
        }
        if segment.shared {
            for e in read.events.iter().filter(|e| e.id > segment.hi) {
                segment.bytes += e.event.len();
                segments.bytes += e.event.len();
                segment.events.push_back(e.clone());
            }
        }
        segment.hi = read.read_to;
        if !segment.shared {
            // Nothing is kept until a second destination reads the source (and what ingest
            // handed over is behind the one that does).
            segment.drop_through(i64::MAX, &mut segments.bytes);
            segment.lo = segment.hi;
        }
        bound(segments, key, now);
    }

    /// Ingest committed every event of `workspace` with an id in `(before, after]`; the new
    /// ones of each source in `sources` are `events_of(source)`, in id order. A source whose
    /// kept stretch ends at `before` grows to `after` with them (see the module's comment);
    /// `events_of` is called only for those.
    pub(crate) fn feed(
        &self,
        workspace: &str,
        before: i64,
        after: i64,
        sources: &[&str],
        mut events_of: impl FnMut(&str) -> Vec<LogEvent>,
    ) {
        if after <= before {
            return;
        }
        let Ok(mut guard) = self.segments.lock() else {
            return;
        };
        let segments = &mut *guard;
        let now = Instant::now();
        for &source in sources {
            let key = Key {
                workspace: workspace.to_owned(),
                source: source.to_owned(),
            };
            let Some(segment) = segments.by_source.get_mut(&key) else {
                continue;
            };
            if segment.hi != before {
                continue;
            }
            for e in events_of(source) {
                debug_assert!(e.id > before && e.id <= after);
                segment.bytes += e.event.len();
                segments.bytes += e.event.len();
                segment.events.push_back(e);
            }
            segment.fed = match segment.fed {
                Some((lo, hi)) if hi == before => Some((lo, after)),
                _ => Some((before, after)),
            };
            segment.hi = after;
            bound(segments, &key, now);
        }
    }

    #[cfg(test)]
    pub(crate) fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Keeps `key`'s stretch within its bytes (from the front), and the total within its own.
fn bound(segments: &mut Segments, key: &Key, now: Instant) {
    if let Some(segment) = segments.by_source.get_mut(key) {
        while segment.bytes > MAX_SEGMENT_BYTES {
            let Some(first) = segment.events.pop_front() else {
                break;
            };
            segment.bytes -= first.event.len();
            segments.bytes -= first.event.len();
            segment.lo = first.id;
        }
    }
    let sweep_due = segments
        .last_sweep
        .is_none_or(|t| now.duration_since(t) > MAX_IDLE / 2);
    if segments.bytes > MAX_TOTAL_BYTES || sweep_due {
        evict(segments, now);
    }
}

/// The events of the source above `after` within `limits`, if the kept stretch covers
/// `after` (a stretch holds events only once a second destination reads the source, or when
/// ingest handed them over). Cut by count and bytes as the store's read is; `exhausted` is
/// false (the stretch may end before the head), so the lane reads again from where it ends.
fn serve(segment: &Segment, after: i64, limits: ReadLimits) -> Option<LogRead> {
    if !(segment.lo <= after && after < segment.hi) {
        return None;
    }
    let start = segment.events.partition_point(|e| e.id <= after);
    let mut events = Vec::new();
    let mut running = 0usize;
    // The store's rule (`ReadLimits::cut`): an event is returned while the bytes before it are
    // under the budget.
    for e in segment.events.range(start..) {
        if limits.cut(events.len(), running) {
            break;
        }
        running += e.event.len();
        events.push(e.clone());
    }
    let cut = limits.cut(events.len(), running);
    let read_to = match events.last() {
        Some(last) if cut => last.id,
        _ => segment.hi,
    };
    let fed = segment
        .fed
        .is_some_and(|(lo, hi)| lo <= after && after < hi);
    Some(LogRead {
        events,
        read_to,
        exhausted: false,
        from: if fed {
            ReadFrom::Ingest
        } else {
            ReadFrom::Shared
        },
    })
}

/// Drops idle stretches, then the least recently used ones while over the total.
fn evict(segments: &mut Segments, now: Instant) {
    segments.last_sweep = Some(now);
    let before = segments.by_source.len();
    segments
        .by_source
        .retain(|_, s| s.reading.is_some() || now.duration_since(s.used) < MAX_IDLE);
    if segments.by_source.len() != before {
        segments.bytes = segments.by_source.values().map(|s| s.bytes).sum();
    }
    while segments.bytes > MAX_TOTAL_BYTES {
        let Some(oldest) = segments
            .by_source
            .iter()
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        if let Some(s) = segments.by_source.remove(&oldest) {
            segments.bytes -= s.bytes;
        }
    }
}

#[cfg(test)]
mod tests;
