//! Transactions of many elections, sent together.
//!
//! A locker with thousands of singletons campaigns (and, after a mass handover, re-checks) for all
//! of them at once. Sent one by one, that is one raft write per name; here the transactions
//! waiting at the moment a slot frees up go out as nested transactions of one request. A lone
//! transaction (the common case: one handover) goes out at once, without waiting for company.

use std::sync::Arc;

use etcd_client::{Client, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::cluster::{Cluster, Failure};

/// etcd refuses transactions with more operations than `--max-txn-ops` (128 by default) on any
/// level; stay well below.
const MAX_BATCH: usize = 64;
/// Batches in flight at once.
const MAX_BATCHES: usize = 8;

type Reply = oneshot::Sender<Result<TxnResponse, Failure>>;

pub struct Batcher {
    queue: mpsc::UnboundedSender<(Txn, Reply)>,
}

impl Batcher {
    /// Starts the batching task; it ends when the batcher is dropped.
    pub fn start(cluster: Arc<Cluster>, runtime: &tokio::runtime::Handle) -> Batcher {
        let (queue, pending) = mpsc::unbounded_channel();
        runtime.spawn(run(cluster, pending));
        Batcher { queue }
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse, Failure> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((txn, reply))
            .map_err(|_| Failure::Unavailable("the locker is closed".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(Failure::Unavailable("the locker is closed".into())))
    }
}

async fn run(cluster: Arc<Cluster>, mut pending: mpsc::UnboundedReceiver<(Txn, Reply)>) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            send(&cluster, batch).await;
            drop(slot);
        });
    }
}

async fn send(cluster: &Cluster, mut batch: Vec<(Txn, Reply)>) {
    if batch.len() == 1 {
        let Some((txn, reply)) = batch.pop() else {
            return;
        };
        let result = cluster
            .request(|mut c: Client| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await;
        let _ = reply.send(result);
        return;
    }
    let nested: Vec<TxnOp> = batch.iter().map(|(t, _)| TxnOp::txn(t.clone())).collect();
    let outer = Txn::new().and_then(nested);
    let result = cluster
        .request(|mut c: Client| {
            let outer = outer.clone();
            async move { c.txn(outer).await }
        })
        .await;
    match result {
        Ok(response) => {
            let answers = response.op_responses();
            for ((_, reply), answer) in batch.into_iter().zip(answers) {
                let _ = reply.send(match answer {
                    TxnOpResponse::Txn(inner) => Ok(inner),
                    _ => Err(Failure::Rejected("unexpected batched answer".into())),
                });
            }
        }
        Err(failure) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }
}
