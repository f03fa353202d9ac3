//! The plugin calls of one lane that are in flight.
//!
//! The jobs of a call stay here, not only inside its task, so that a lane that must stop
//! sending at once (its lease may have expired) can cancel every call and still hand each job
//! back to the lane.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::call::{CallReport, deliver_call};
use super::pool::InstancePool;
use crate::lane::Job;

#[derive(Default)]
pub struct Calls {
    set: JoinSet<(u64, CallReport)>,
    jobs: HashMap<u64, Arc<Vec<Job>>>,
    next_id: u64,
}

impl Calls {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Starts a call of `jobs` through the plugin.
    pub fn spawn(&mut self, pool: Arc<InstancePool>, workspace_id: String, jobs: Vec<Job>) {
        let id = self.next_id;
        self.next_id += 1;
        let jobs = Arc::new(jobs);
        self.jobs.insert(id, jobs.clone());
        self.set.spawn(async move {
            let report = deliver_call(&pool, &workspace_id, &jobs).await;
            (id, report)
        });
    }

    /// A finished call, if one is ready.
    pub fn try_next(&mut self) -> Option<(Vec<Job>, CallReport)> {
        loop {
            match self.set.try_join_next()? {
                Ok((id, report)) => return Some((self.take(id), report)),
                Err(_) => continue, // cancelled: its jobs were handed back by `cancel_all`
            }
        }
    }

    /// The next call to finish.
    pub async fn next(&mut self) -> Option<(Vec<Job>, CallReport)> {
        loop {
            match self.set.join_next().await? {
                Ok((id, report)) => return Some((self.take(id), report)),
                Err(_) => continue,
            }
        }
    }

    /// Cancels every call (dropping its plugin call and HTTP requests) and returns their jobs,
    /// whose fate is unknown.
    pub fn cancel_all(&mut self) -> Vec<Job> {
        self.set.abort_all();
        self.jobs
            .drain()
            .flat_map(|(_, jobs)| Arc::try_unwrap(jobs).unwrap_or_else(|shared| (*shared).clone()))
            .collect()
    }

    fn take(&mut self, id: u64) -> Vec<Job> {
        self.jobs
            .remove(&id)
            .map(|jobs| Arc::try_unwrap(jobs).unwrap_or_else(|shared| (*shared).clone()))
            .unwrap_or_default()
    }
}
