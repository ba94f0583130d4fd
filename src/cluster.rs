//! The etcd members a locker talks to, and the retry layer in front of them.
//!
//! etcd-client's balanced channel keeps sending a share of requests to a dead member, and a
//! black-holed connection is only noticed by HTTP/2 pings after many seconds. So each member gets
//! its own lazily connecting channel, requests go to one member at a time, and any transport
//! failure or timeout moves every user of the cluster to the next member on a fresh connection.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{
    Certificate, Channel, Client, ConnectOptions, Error as EtcdError, GetOptions, Identity,
    KeyValue, TlsOptions,
};
use tokio::sync::{Semaphore, watch};
use tonic::Code;
use tonic::transport::Endpoint;

use crate::retry::Backoff;

/// How long one request may take on one member before another member is tried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds the number of requests in flight, so that thousands of campaigns started at once do
/// not queue unbounded work on one HTTP/2 connection.
const MAX_IN_FLIGHT: usize = 256;
/// The largest page `read_pages` accepts.
const MAX_PAGE_MESSAGE: usize = 256 << 20;

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

/// An error with the chain of its causes: a transport error alone says only "transport error",
/// its causes say what failed (a refused connection, a TLS alert such as a missing or unknown
/// client certificate).
fn with_causes(err: &dyn std::error::Error) -> String {
    add_causes(err.to_string(), err.source())
}

/// What went wrong with a request, with the causes that say why.
pub fn describe(err: &EtcdError) -> String {
    match err {
        EtcdError::GRpcStatus(status) => add_causes(
            status.message().to_string(),
            std::error::Error::source(status),
        ),
        other => with_causes(other),
    }
}

/// `text`, then each cause in turn that adds something to it.
fn add_causes(mut text: String, mut cause: Option<&dyn std::error::Error>) -> String {
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) && more != "transport error" {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

impl Failure {
    /// What a request of a locker that closed ends with.
    pub fn closed() -> Failure {
        Failure::Unavailable("the locker is closed".into())
    }

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
                // A connection that failed arrives as a status saying only "transport error".
                let msg = add_causes(
                    status.message().to_string(),
                    std::error::Error::source(&status),
                );
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
            other => Failure::Unavailable(with_causes(&other)),
        }
    }
}

struct Current {
    index: usize,
    generation: u64,
    /// Built on first use: with authentication, building a client talks to etcd.
    clients: Vec<Option<Client>>,
    /// The locker closed: no connection is made again.
    shut: bool,
}

/// How to reach and authenticate to the cluster.
#[derive(Clone, Default)]
pub struct Security {
    /// Connect with TLS. Without `ca`, the members' certificates are checked against the
    /// system's trusted roots: asking for TLS never ends in plain text.
    pub tls: bool,
    /// PEM: the CA that signed the members' certificates.
    pub ca: Option<Vec<u8>>,
    /// PEM: a client certificate and its key, for members that require one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// etcd user name and password.
    pub user: Option<(String, String)>,
}

impl Security {
    fn tls(&self) -> bool {
        self.tls || self.ca.is_some() || self.identity.is_some()
    }
}

pub struct Cluster {
    endpoints: Vec<String>,
    security: Security,
    current: Mutex<Current>,
    /// Bumped whenever requests move to another member; long-lived streams follow it.
    generation: watch::Sender<u64>,
    /// Set by a failure, cleared by the next answer.
    failing: AtomicBool,
    /// Bumped by each answer that ends a streak of failures (see `answered`).
    recovered: watch::Sender<u64>,
    in_flight: Semaphore,
}

/// A client for the member currently in use, tagged so that a failure can be reported once.
pub struct Member {
    pub client: Client,
    pub generation: u64,
}

impl Cluster {
    /// Sets up the members without contacting any: connections are made on first use.
    pub fn new(endpoints: Vec<String>, security: Security) -> Result<Cluster, Failure> {
        let scheme = if security.tls() { "https" } else { "http" };
        if endpoints.is_empty() {
            return Err(Failure::Rejected("no etcd endpoint given".to_string()));
        }
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|host_port| format!("{scheme}://{host_port}"))
            .collect();
        // Fail now on what no retry can fix (a malformed endpoint or certificate).
        for endpoint in &endpoints {
            Self::channel(endpoint, &security)?;
        }
        let clients = vec![None; endpoints.len()];
        Ok(Cluster {
            endpoints,
            security,
            current: Mutex::new(Current {
                index: 0,
                generation: 0,
                clients,
                shut: false,
            }),
            generation: watch::channel(0).0,
            failing: AtomicBool::new(false),
            recovered: watch::channel(0).0,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        })
    }

    fn channel(endpoint: &str, security: &Security) -> Result<Endpoint, Failure> {
        let mut channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| Failure::Rejected(format!("invalid endpoint {endpoint}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            // HTTP/2 pings no more often than etcd's default enforcement (5 s) allows.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(3));
        if security.tls() {
            let mut tls = TlsOptions::new();
            tls = match &security.ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
                None => tls.with_native_roots(),
            };
            if let Some((cert, key)) = &security.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            channel = channel
                .tls_config(tls)
                .map_err(|e| Failure::Rejected(format!("invalid TLS settings: {e}")))?;
        }
        Ok(channel)
    }

    async fn connect(&self, endpoint: &str) -> Result<Client, Failure> {
        let channel = Self::channel(endpoint, &self.security)?.connect_lazy();
        let mut options = ConnectOptions::new()
            // A member cut off from its cluster fails requests and watches instead of stalling
            // them, so they move to a member that can serve them.
            .with_require_leader(true);
        if let Some((name, password)) = &self.security.user {
            // Tokens expire (`--auth-token-ttl`): a request refused for an expired token
            // authenticates again and is retried, instead of failing.
            options = options
                .with_user(name.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        // With a user, this authenticates: bound it like any request.
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            Client::from_channel(Channel::Tonic(channel), Some(options)),
        )
        .await
        {
            Ok(result) => result.map_err(Failure::from_etcd),
            Err(_) => Err(Failure::Unavailable(format!(
                "{endpoint} did not answer within {} ms",
                REQUEST_TIMEOUT.as_millis()
            ))),
        }
    }

    /// The member to talk to now, connecting to it if needed. A member that cannot be reached
    /// is reported failed, so the next call tries another one.
    pub async fn member(&self) -> Result<Member, Failure> {
        let (endpoint, generation) = {
            let current = self.lock();
            if current.shut {
                return Err(Failure::closed());
            }
            if let Some(client) = &current.clients[current.index] {
                return Ok(Member {
                    client: client.clone(),
                    generation: current.generation,
                });
            }
            (self.endpoints[current.index].clone(), current.generation)
        };
        match self.connect(&endpoint).await {
            Ok(client) => {
                let mut current = self.lock();
                if current.generation == generation && !current.shut {
                    let index = current.index;
                    current.clients[index] = Some(client.clone());
                }
                Ok(Member { client, generation })
            }
            Err(failure) => {
                if !matches!(failure, Failure::Rejected(_)) {
                    self.failed(generation);
                }
                Err(failure)
            }
        }
    }

    /// Drops every connection, for good: the locker has closed.
    pub fn shutdown(&self) {
        let mut current = self.lock();
        current.shut = true;
        current.clients.iter_mut().for_each(|c| *c = None);
    }

    pub fn members(&self) -> usize {
        self.endpoints.len()
    }

    /// Subscribes to member changes (for streams that must move along).
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reports that the member handed out with `generation` failed: move on to the next one.
    /// Concurrent reports about the same member move only once. The member left behind gets a
    /// fresh connection when its turn comes again: its old one may be black-holed.
    pub fn failed(&self, generation: u64) {
        // Also for a member already left behind: whoever saw it fail waits for the next answer.
        self.failing.store(true, Ordering::Release);
        let mut current = self.lock();
        if current.generation != generation {
            return;
        }
        let index = current.index;
        current.clients[index] = None;
        current.index = (index + 1) % self.endpoints.len();
        current.generation += 1;
        let generation = current.generation;
        drop(current);
        self.generation.send_replace(generation);
    }

    /// Records that etcd answered. An answer after a failure means the outage is over: loops
    /// waiting out a retry backoff, grown to seconds by then, try again at once (see
    /// `Backoff::wait`) instead of lagging behind the rest of the locker. A watch still asleep
    /// when a leader's key is deleted from outside would keep that leader leading beside its
    /// successor until it wakes.
    pub fn answered(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::AcqRel) {
            self.recovered.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Moves whenever etcd answers again after a failure.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recovered.subscribe()
    }

    /// Reads every key from `from` up to `end`, `page` keys at a time, in pages pinned to the
    /// revision of the first (one consistent snapshot), handing each key to `each` in key order.
    /// Returns that revision.
    /// Pages are read through a client that accepts large messages, so that long keys cannot
    /// push a page past the default 4 MB limit.
    pub async fn read_pages(
        &self,
        mut from: Vec<u8>,
        end: Vec<u8>,
        page: i64,
        mut each: impl FnMut(&KeyValue),
    ) -> Result<i64, Failure> {
        let mut revision = 0;
        loop {
            let response = self
                .request(|c: Client| {
                    let (key, end) = (from.clone(), end.clone());
                    async move {
                        let options = GetOptions::new()
                            .with_range(end)
                            .with_limit(page)
                            .with_revision(revision);
                        let mut kv = c.kv_client().max_decoding_message_size(MAX_PAGE_MESSAGE);
                        kv.get(key, Some(options)).await
                    }
                })
                .await?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            for kv in response.kvs() {
                each(kv);
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(revision),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        crate::util::lock(&self.current)
    }

    /// Runs `call` against the current member, moving to other members on transport failures and
    /// timeouts, for about two rounds over all members. Requests made through here must be safe
    /// to repeat (guarded transactions, idempotent reads, lease keepalives and revokes).
    pub async fn request<T, F, Fut>(&self, mut call: F) -> Result<T, Failure>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let attempts = (self.endpoints.len() * 2).max(3);
        let mut backoff = Backoff::attempts();
        let mut last = Failure::Unavailable("no attempt made".to_string());
        for attempt in 0..attempts {
            let member = match self.member().await {
                Ok(member) => member,
                Err(failure @ Failure::Rejected(_)) => return Err(failure),
                Err(failure) => {
                    last = failure;
                    if attempt + 1 < attempts {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    continue;
                }
            };
            // Held per attempt, not across backoff sleeps: retries waiting out an outage must
            // not starve other requests of slots.
            let permit = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| Failure::Unavailable("client closed".to_string()))?;
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, call(member.client)).await;
            drop(permit);
            match outcome {
                Ok(Ok(value)) => {
                    self.answered();
                    return Ok(value);
                }
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
            self.failed(member.generation);
            if attempt + 1 < attempts {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        Err(last)
    }
}
