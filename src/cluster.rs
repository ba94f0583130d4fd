//! The etcd members a locker talks to, and the retry layer in front of them.
//!
//! etcd-client's balanced channel keeps sending a share of requests to a dead member, and a
//! black-holed connection is only noticed by HTTP/2 pings after many seconds. So each member gets
//! its own lazily connecting channel, requests go to one member at a time, and any transport
//! failure or timeout moves every user of the cluster to the next member on a fresh connection.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{Channel, Client, ConnectOptions, Error as EtcdError};
use tokio::sync::{Semaphore, watch};
use tonic::Code;
use tonic::transport::Endpoint;

use crate::backoff::Backoff;

/// How long one request may take on one member before another member is tried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds the number of requests in flight, so that thousands of campaigns started at once do
/// not queue unbounded work on one HTTP/2 connection.
const MAX_IN_FLIGHT: usize = 256;

/// Why a request to etcd did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No member answered in time, or the connection broke: retrying later can succeed.
    Unavailable(String),
    /// etcd says the lease does not exist (expired or revoked).
    LeaseNotFound,
    /// etcd refused the request; retrying the same request will not help.
    Rejected(String),
}

impl Failure {
    /// A stable code for JavaScript `Error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Unavailable(_) => "ETCD_UNAVAILABLE",
            Failure::LeaseNotFound => "LEASE_NOT_FOUND",
            Failure::Rejected(_) => "ETCD_REJECTED",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Unavailable(m) => format!("etcd unavailable: {m}"),
            Failure::LeaseNotFound => "etcd lease not found (expired or revoked)".to_string(),
            Failure::Rejected(m) => format!("etcd rejected the request: {m}"),
        }
    }

    pub fn from_etcd(err: EtcdError) -> Failure {
        match err {
            EtcdError::GRpcStatus(status) => {
                let msg = status.message().to_string();
                if msg.contains("lease not found") {
                    return Failure::LeaseNotFound;
                }
                match status.code() {
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::Unknown
                    | Code::Internal
                    | Code::ResourceExhausted => Failure::Unavailable(msg),
                    _ => Failure::Rejected(msg),
                }
            }
            EtcdError::LeaseKeepAliveError(m) if m.contains("lease not found") => {
                Failure::LeaseNotFound
            }
            EtcdError::InvalidArgs(m) => Failure::Rejected(m),
            other => Failure::Unavailable(other.to_string()),
        }
    }
}

/// Parses user-supplied hosts (`h:p`, `http://h:p`, comma separated lists) into endpoint URLs.
pub fn parse_endpoints(hosts: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in hosts {
        for part in entry.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let bare = part.strip_prefix("http://").unwrap_or(part);
            let bare = bare.trim_end_matches('/');
            let valid_port = bare
                .rsplit_once(':')
                .and_then(|(host, port)| (!host.is_empty()).then_some(port))
                .and_then(|port| port.parse::<u16>().ok())
                .is_some_and(|port| port > 0);
            if !valid_port || bare.contains('/') {
                return Err(format!(
                    "invalid etcd host {part:?}: expected host:port, e.g. 127.0.0.1:2379"
                ));
            }
            out.push(format!("http://{bare}"));
        }
    }
    if out.is_empty() {
        return Err("no etcd hosts given".to_string());
    }
    Ok(out)
}

struct Current {
    index: usize,
    generation: u64,
    clients: Vec<Client>,
}

pub struct Cluster {
    endpoints: Vec<String>,
    options: ConnectOptions,
    current: Mutex<Current>,
    /// Bumped whenever requests move to another member; long-lived streams follow it.
    generation: watch::Sender<u64>,
    in_flight: Semaphore,
}

/// A client for the member currently in use, tagged so that a failure can be reported once.
pub struct Member {
    pub client: Client,
    pub generation: u64,
}

impl Cluster {
    pub async fn connect(endpoints: Vec<String>) -> Result<Cluster, Failure> {
        // HTTP/2 pings no more often than etcd's default enforcement (5 s) allows.
        let options = ConnectOptions::new()
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(3))
            .with_connect_timeout(Duration::from_secs(1))
            // A member cut off from its cluster fails requests and watches instead of stalling
            // them, so they move to a member that can serve them.
            .with_require_leader(true);
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            clients.push(Self::client_for(endpoint, &options).await?);
        }
        Ok(Cluster {
            endpoints,
            options,
            current: Mutex::new(Current {
                index: 0,
                generation: 0,
                clients,
            }),
            generation: watch::channel(0).0,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    async fn client_for(endpoint: &str, options: &ConnectOptions) -> Result<Client, Failure> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Failure::Rejected(format!("invalid endpoint {endpoint}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3))
            .connect_lazy();
        Client::from_channel(Channel::Tonic(channel), Some(options.clone()))
            .await
            .map_err(Failure::from_etcd)
    }

    pub fn member(&self) -> Member {
        let current = self.lock();
        Member {
            client: current.clients[current.index].clone(),
            generation: current.generation,
        }
    }

    pub fn members(&self) -> usize {
        self.endpoints.len()
    }

    /// Subscribes to member changes (for streams that must move along).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reports that the member handed out with `generation` failed: move on to the next one.
    /// Concurrent reports about the same member move only once.
    pub async fn failed(&self, generation: u64) {
        let (endpoint, index) = {
            let current = self.lock();
            if current.generation != generation {
                return;
            }
            (self.endpoints[current.index].clone(), current.index)
        };
        // A fresh channel for the member left behind: its old connection may be black-holed.
        let fresh = Self::client_for(&endpoint, &self.options).await.ok();
        let mut current = self.lock();
        if current.generation != generation {
            return;
        }
        if let Some(client) = fresh {
            current.clients[index] = client;
        }
        current.index = (index + 1) % self.endpoints.len();
        current.generation += 1;
        let generation = current.generation;
        drop(current);
        self.generation.send_replace(generation);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // The guarded data stays consistent even if a holder panicked.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `call` against the current member, moving to other members on transport failures and
    /// timeouts, for about two rounds over all members. Requests made through here must be safe
    /// to repeat (guarded transactions, idempotent reads, lease keepalives and revokes).
    pub async fn request<T, F, Fut>(&self, mut call: F) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Failure::Unavailable("client closed".to_string()))?;
        let attempts = (self.endpoints.len() * 2).max(3);
        let mut backoff = Backoff::new(Duration::from_millis(25), Duration::from_millis(400));
        let mut last = Failure::Unavailable("no attempt made".to_string());
        for attempt in 0..attempts {
            let member = self.member();
            match tokio::time::timeout(REQUEST_TIMEOUT, call(member.client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => {
                    let failure = Failure::from_etcd(err);
                    if !matches!(failure, Failure::Unavailable(_)) {
                        return Err(failure);
                    }
                    last = failure;
                }
                Err(_) => {
                    last = Failure::Unavailable(format!(
                        "no answer within {} ms",
                        REQUEST_TIMEOUT.as_millis()
                    ))
                }
            }
            self.failed(member.generation).await;
            if attempt + 1 < attempts {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_host_forms() {
        assert_eq!(
            parse_endpoints(&hosts(&["127.0.0.1:2379", "http://h:1, h2:3"])).unwrap(),
            vec!["http://127.0.0.1:2379", "http://h:1", "http://h2:3"]
        );
    }

    #[test]
    fn rejects_bad_hosts() {
        assert!(parse_endpoints(&hosts(&[])).is_err());
        assert!(parse_endpoints(&hosts(&[" , "])).is_err());
        assert!(parse_endpoints(&hosts(&["localhost"])).is_err());
        assert!(parse_endpoints(&hosts(&["h:0"])).is_err());
        assert!(parse_endpoints(&hosts(&["h:99999"])).is_err());
        assert!(parse_endpoints(&hosts(&["https://h:1"])).is_err());
    }
}
