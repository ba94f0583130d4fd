//! Transactions of many elections, sent together.
//!
//! A locker with thousands of singletons campaigns (and, after a mass handover, re-checks) for all
//! of them at once. Sent one by one, that is one raft write per name; here the transactions
//! waiting at the moment a slot frees up go out as nested transactions of one request. A lone
//! transaction (the common case: one handover) goes out at once, without waiting for company.
//!
//! Nested transactions share one snapshot and one fate: etcd evaluates every compare before any
//! operation runs, refuses a request that writes one key twice, and fails the whole request when
//! one put names a lease that is gone. So batching must never let one transaction decide
//! another's outcome:
//! - at most one transaction per election name goes into a batch (the others wait for the next);
//! - a transaction whose caller stopped waiting is dropped before it is sent;
//! - a batch that etcd refuses is sent again one transaction at a time, so that each refusal is
//!   reported to the transaction that caused it and the others go through.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use etcd_client::{Client, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::cluster::{Cluster, Failure};
use crate::util::changed;

/// etcd refuses transactions with more operations than `--max-txn-ops` (128 by default) on any
/// level; stay below it. Fewer, fuller batches let a locker of 100 000 names campaign in about
/// 3 s instead of 5 on one etcd (64 per batch before); more batches in flight did not help.
const MAX_BATCH: usize = 120;
/// Batches in flight at once.
const MAX_BATCHES: usize = 8;

/// The answer, and the revision etcd answered at (0 when it did not say): the reads of a
/// transaction see its election's keys as of that revision, batched or not (a batch holds one
/// transaction per election).
type Reply = oneshot::Sender<Result<(TxnResponse, i64), Failure>>;

struct Request {
    /// The election the transaction belongs to.
    name: Arc<str>,
    txn: Txn,
    reply: Reply,
}

pub struct Batcher {
    queue: mpsc::UnboundedSender<Request>,
}

impl Batcher {
    /// Starts the batching task; it ends when `stop` is set (or the batcher is dropped).
    pub fn start(
        cluster: Arc<Cluster>,
        runtime: &tokio::runtime::Handle,
        stop: watch::Receiver<bool>,
    ) -> (Batcher, tokio::task::JoinHandle<()>) {
        let (queue, pending) = mpsc::unbounded_channel();
        let task = runtime.spawn(run(cluster, pending, stop));
        (Batcher { queue }, task)
    }

    /// Sends `txn`, which reads or writes only keys of the election `name`. Dropping the
    /// returned future before it is sent takes the transaction out of the queue.
    pub async fn txn(&self, name: &str, txn: Txn) -> Result<TxnResponse, Failure> {
        self.txn_at(name, txn).await.map(|(response, _)| response)
    }

    /// `txn`, with the revision its reads saw: a nested transaction's answer carries no header
    /// of its own, so the batch's revision is handed on.
    pub async fn txn_at(&self, name: &str, txn: Txn) -> Result<(TxnResponse, i64), Failure> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request {
                name: Arc::from(name),
                txn,
                reply,
            })
            .map_err(|_| Failure::closed())?;
        answer.await.unwrap_or_else(|_| Err(Failure::closed()))
    }
}

async fn run(
    cluster: Arc<Cluster>,
    mut pending: mpsc::UnboundedReceiver<Request>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES));
    let mut sending = JoinSet::new();
    // Requests that had to wait because their election already had one in the batch.
    let mut deferred: VecDeque<Request> = VecDeque::new();
    loop {
        if deferred.is_empty() {
            let next = tokio::select! {
                next = pending.recv() => next,
                _ = changed(&mut stop) => break,
            };
            let Some(next) = next else { break };
            deferred.push_back(next);
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = changed(&mut stop) => break,
        };
        let Ok(slot) = slot else { break };
        // Gathered only once a slot is free: everything that arrived meanwhile goes out together.
        while let Ok(next) = pending.try_recv() {
            deferred.push_back(next);
        }
        let batch = take_batch(&mut deferred);
        if batch.is_empty() {
            continue;
        }
        let cluster = cluster.clone();
        sending.spawn(async move {
            send(cluster, batch).await;
            drop(slot);
        });
        // Reap finished sends so the set does not grow.
        while sending.try_join_next().is_some() {}
    }
    // Closing: whatever is still queued or in flight ends with the locker.
    sending.abort_all();
}

/// Takes up to `MAX_BATCH` requests from the front of `queue`, in order, at most one per
/// election, dropping those whose caller is gone; the rest stay queued in their order. Looks
/// only as far into the queue as it takes to fill the batch: a locker campaigning for 100 000
/// names queues them all, and going over the whole queue for each batch cost seconds.
fn take_batch(queue: &mut VecDeque<Request>) -> Vec<Request> {
    let mut batch = Vec::new();
    let mut names: HashSet<Arc<str>> = HashSet::new();
    // Requests of elections already in this batch: back to the front afterwards, in order.
    let mut later = Vec::new();
    while batch.len() < MAX_BATCH {
        let Some(request) = queue.pop_front() else {
            break;
        };
        if request.reply.is_closed() {
            continue;
        }
        if names.insert(request.name.clone()) {
            batch.push(request);
        } else {
            later.push(request);
        }
    }
    for request in later.into_iter().rev() {
        queue.push_front(request);
    }
    batch
}

async fn send_one(cluster: &Cluster, request: Request) {
    let Request { txn, reply, .. } = request;
    let result = cluster
        .request(|mut c: Client| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
        .map(|response| {
            let revision = revision_of(&response);
            (response, revision)
        });
    let _ = reply.send(result);
}

fn revision_of(response: &TxnResponse) -> i64 {
    response.header().map_or(0, |h| h.revision())
}

async fn send(cluster: Arc<Cluster>, mut batch: Vec<Request>) {
    if batch.len() == 1 {
        if let Some(request) = batch.pop() {
            send_one(&cluster, request).await;
        }
        return;
    }
    let nested: Vec<TxnOp> = batch.iter().map(|r| TxnOp::txn(r.txn.clone())).collect();
    let outer = Txn::new().and_then(nested);
    let result = cluster
        .request(|mut c: Client| {
            let outer = outer.clone();
            async move { c.txn(outer).await }
        })
        .await;
    match result {
        Ok(response) => {
            let revision = revision_of(&response);
            let answers = response.op_responses();
            for (request, answer) in batch.into_iter().zip(answers) {
                let _ = request.reply.send(match answer {
                    TxnOpResponse::Txn(inner) => Ok((inner, revision)),
                    _ => Err(Failure::Rejected("unexpected batched answer".into())),
                });
            }
        }
        // Transport trouble is everyone's: each caller decides whether to retry.
        Err(failure @ Failure::Unavailable(_)) => {
            for request in batch {
                let _ = request.reply.send(Err(failure.clone()));
            }
        }
        // etcd refused the request as a whole (a lease gone, a key written twice): it applied
        // none of it. One at a time, each transaction gets its own answer.
        Err(_) => {
            let mut each = JoinSet::new();
            for request in batch {
                if request.reply.is_closed() {
                    continue;
                }
                let cluster = cluster.clone();
                each.spawn(async move { send_one(&cluster, request).await });
            }
            while each.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = oneshot::Receiver<Result<(TxnResponse, i64), Failure>>;

    fn request(name: &str) -> (Request, Answer) {
        let (reply, answer) = oneshot::channel();
        (
            Request {
                name: Arc::from(name),
                txn: Txn::new(),
                reply,
            },
            answer,
        )
    }

    #[test]
    fn a_batch_holds_one_transaction_per_election_in_order() {
        let mut queue = VecDeque::new();
        let mut answers = Vec::new();
        for name in ["a", "b", "a", "c", "b"] {
            let (r, answer) = request(name);
            queue.push_back(r);
            answers.push(answer);
        }
        let batch = take_batch(&mut queue);
        let names: Vec<&str> = batch.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let rest: Vec<&str> = queue.iter().map(|r| &*r.name).collect();
        assert_eq!(rest, ["a", "b"]);
    }

    #[test]
    fn a_transaction_nobody_waits_for_is_never_sent() {
        let mut queue = VecDeque::new();
        let (gone, answer) = request("a");
        drop(answer);
        queue.push_back(gone);
        let (kept, _answer) = request("b");
        queue.push_back(kept);
        let batch = take_batch(&mut queue);
        let names: Vec<&str> = batch.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["b"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_stays_within_etcds_operation_limit() {
        let mut queue = VecDeque::new();
        let mut answers = Vec::new();
        for i in 0..(MAX_BATCH + 10) {
            let (r, answer) = request(&format!("n{i}"));
            queue.push_back(r);
            answers.push(answer);
        }
        assert_eq!(take_batch(&mut queue).len(), MAX_BATCH);
        assert_eq!(queue.len(), 10);
    }

    #[test]
    fn what_a_full_batch_leaves_keeps_its_order() {
        let mut queue = VecDeque::new();
        let mut answers = Vec::new();
        let mut names = vec!["a".to_string(), "a".to_string()];
        names.extend((0..MAX_BATCH + 1).map(|i| format!("n{i}")));
        for name in &names {
            let (r, answer) = request(name);
            queue.push_back(r);
            answers.push(answer);
        }
        let batch = take_batch(&mut queue);
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(&*batch[0].name, "a");
        let rest: Vec<&str> = queue.iter().map(|r| &*r.name).collect();
        let n = |i: usize| format!("n{i}");
        assert_eq!(rest, ["a", &n(MAX_BATCH - 1), &n(MAX_BATCH)]);
    }
}
