//! Audit records written to the store together: a group commit.
//!
//! Every caller waits until its own record is in the store (or the write failed), as
//! with one write per record; but while one write is in flight the records of other
//! requests queue up, and the next write takes them all in one round trip
//! ([`StoreBackend::append_audits`](crate::store::StoreBackend::append_audits)). Under
//! load the store sees one audit script per batch instead of one per login; alone, a
//! record is written at once, as before.
//!
//! There is no writer task: the caller that finds no write in flight leads, writes
//! the queue (its own record included), then hands the lead to the oldest waiting
//! caller, whose record is next. A leader that is dropped mid-write hands over too;
//! the callers whose records were in that write get an error.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::clock::Timestamp;
use crate::store::{MAX_AUDIT_BATCH, StoreError};

/// The queue of records waiting for the store.
#[derive(Default)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Whether a caller is writing (it hands over before it stops).
    leading: bool,
    next_id: u64,
}

struct Queued {
    id: u64,
    at: Timestamp,
    line: String,
    /// How its caller learns the outcome, or that it leads now; `None` once used.
    done: Option<oneshot::Sender<Turn>>,
}

enum Turn {
    /// The record's write ended so.
    Written(Result<(), StoreError>),
    /// Write the queue: the record is in it.
    Lead,
}

/// Hands the lead over when the leader stops, also when its future is dropped.
struct Leading<'a>(&'a GroupCommit);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        // The oldest caller still waiting; records whose callers stopped waiting stay
        // queued, for the next write.
        while let Some(done) = state.queue.iter_mut().find_map(|q| q.done.take()) {
            if done.send(Turn::Lead).is_ok() {
                return;
            }
        }
        state.leading = false;
    }
}

impl GroupCommit {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every statement leaves the queue whole: a panic elsewhere cannot break it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records waiting, not yet taken by a write.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// Queues `line` (at `at`) and returns once `write` has stored it, in this call or
    /// in another caller's. `write` gets up to [`MAX_AUDIT_BATCH`] records, oldest
    /// first.
    pub(crate) async fn append<W, F>(
        &self,
        at: Timestamp,
        line: String,
        write: W,
    ) -> Result<(), StoreError>
    where
        W: Fn(Vec<(Timestamp, String)>) -> F,
        F: Future<Output = Result<(), StoreError>>,
    {
        let (done, turn) = oneshot::channel();
        let (id, lead) = {
            let mut state = self.state();
            let id = state.next_id;
            state.next_id = state.next_id.wrapping_add(1);
            state.queue.push_back(Queued {
                id,
                at,
                line,
                done: Some(done),
            });
            let lead = !state.leading;
            state.leading = true;
            (id, lead)
        };
        if !lead {
            match turn.await {
                Ok(Turn::Written(result)) => return result,
                Ok(Turn::Lead) => {}
                Err(_) => {
                    return Err(StoreError::Unavailable(
                        "the audit write that held this record was abandoned".into(),
                    ));
                }
            }
        }
        let _leading = Leading(self);
        loop {
            let batch: Vec<Queued> = {
                let mut state = self.state();
                let n = state.queue.len().min(MAX_AUDIT_BATCH);
                state.queue.drain(..n).collect()
            };
            if batch.is_empty() {
                // Not reachable: the leader's own record is queued until written.
                return Err(StoreError::Unavailable(
                    "the audit record left the queue unwritten".into(),
                ));
            }
            let mut waiting = Vec::with_capacity(batch.len());
            let mut records = Vec::with_capacity(batch.len());
            for q in batch {
                waiting.push((q.id, q.done));
                records.push((q.at, q.line));
            }
            let result = write(records).await;
            let mut mine = None;
            for (qid, done) in waiting {
                if qid == id {
                    mine = Some(result.clone());
                } else if let Some(done) = done {
                    // A caller that stopped waiting does not need the answer.
                    let _ = done.send(Turn::Written(result.clone()));
                }
            }
            if let Some(result) = mine {
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// Every write, as the records it got; the first write waits for `open`.
    #[derive(Default)]
    struct Recorder {
        writes: Mutex<Vec<Vec<String>>>,
        open: Notify,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Recorder {
        async fn write(&self, records: Vec<(Timestamp, String)>) -> Result<(), StoreError> {
            let first = self.writes.lock().unwrap().is_empty();
            self.writes
                .lock()
                .unwrap()
                .push(records.into_iter().map(|(_, l)| l).collect());
            if first {
                self.open.notified().await;
            }
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(())
            }
        }
    }

    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened");
    }

    fn spawn_append(
        batch: &Arc<GroupCommit>,
        rec: &Arc<Recorder>,
        line: &str,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let (batch, rec, line) = (Arc::clone(batch), Arc::clone(rec), line.to_owned());
        tokio::spawn(async move {
            batch
                .append(Timestamp(1), line, |records| rec.write(records))
                .await
        })
    }

    #[tokio::test]
    async fn records_that_queue_behind_a_write_go_in_one_write_in_order() {
        let batch = Arc::new(GroupCommit::default());
        let rec = Arc::new(Recorder::default());
        let first = spawn_append(&batch, &rec, "r0");
        until(|| rec.writes.lock().unwrap().len() == 1).await;
        let rest: Vec<_> = (1..=5)
            .map(|i| spawn_append(&batch, &rec, &format!("r{i}")))
            .collect();
        until(|| batch.queued() == 5).await;
        rec.open.notify_one();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        let writes = rec.writes.lock().unwrap().clone();
        assert_eq!(writes, [vec!["r0"], vec!["r1", "r2", "r3", "r4", "r5"]]);
        assert_eq!(batch.queued(), 0);
        assert!(!batch.state().leading, "the lead ends with the queue");
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_record_in_it() {
        let batch = Arc::new(GroupCommit::default());
        let rec = Arc::new(Recorder::default());
        rec.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let first = spawn_append(&batch, &rec, "a");
        until(|| rec.writes.lock().unwrap().len() == 1).await;
        let second = spawn_append(&batch, &rec, "b");
        until(|| batch.queued() == 1).await;
        rec.open.notify_one();
        assert!(first.await.unwrap().is_err());
        assert!(second.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_over_and_nothing_waits_forever() {
        let batch = Arc::new(GroupCommit::default());
        let rec = Arc::new(Recorder::default());
        let first = spawn_append(&batch, &rec, "a");
        until(|| rec.writes.lock().unwrap().len() == 1).await;
        let second = spawn_append(&batch, &rec, "b");
        until(|| batch.queued() == 1).await;
        // The leader stops mid-write: its record's fate is unknown, the next leads.
        first.abort();
        let _ = first.await;
        second.await.unwrap().unwrap();
        assert_eq!(rec.writes.lock().unwrap().clone(), [vec!["a"], vec!["b"]]);
        // And the queue works on.
        spawn_append(&batch, &rec, "c").await.unwrap().unwrap();
        assert_eq!(rec.writes.lock().unwrap().len(), 3);
    }
}
