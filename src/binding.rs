//! The N-API binding: translates between JavaScript and the election core. No election logic
//! here.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::runtime::{Builder, Runtime};

use crate::cluster::Security;
use crate::events::{self, Event, Term};
use crate::locker::{Locker, Options, RegisterError};

/// How long process exit may wait for the lease revoke.
const EXIT_REVOKE_CAP: Duration = Duration::from_millis(500);

/// One small runtime per process: the work is waiting on etcd, one thread serves thousands of
/// singletons, and it never holds the Node event loop open by itself.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("locked-etcd")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::from_reason(format!("cannot start the locked runtime: {e}")))
}

#[napi(object)]
pub struct LockerOptions {
    pub ttl: u32,
    pub prefix: String,
    pub id: String,
    pub tls: Option<TlsSettings>,
    pub auth: Option<AuthSettings>,
    /// Narrate the election's steps as `log` events.
    pub debug: Option<bool>,
    /// Start a guardian process (see `lib/guardian.js`).
    pub guardian: Option<GuardianSettings>,
    /// Balance names over the lockers that balance.
    pub balance: Option<bool>,
    /// How long a leader leads before handing over to a preferred candidate, in ms.
    pub min_term_ms: Option<u32>,
}

#[napi(object)]
pub struct GuardianSettings {
    /// The Node.js executable.
    pub node: String,
    /// The guardian program.
    pub script: String,
    /// Its first line: hosts, TLS settings and credentials, as JSON.
    pub config: String,
}

/// PEM texts.
#[napi(object)]
pub struct TlsSettings {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[napi(object)]
pub struct AuthSettings {
    pub username: String,
    pub password: String,
}

/// One event for JavaScript. `kind` is start | stop | leader | term | terms | removed | renewed |
/// error | log | closed.
#[napi(object)]
#[derive(Default)]
pub struct LockerEvent {
    pub kind: String,
    /// The registration the event belongs to (absent for locker-wide events).
    pub serial: Option<u32>,
    pub token: Option<f64>,
    /// For `start`: ms from the deletion reaching this host's watch to its election.
    pub takeover_ms: Option<f64>,
    pub reason: Option<String>,
    /// For `leader` and `term` events: the leader's locker id; absent when nobody leads.
    pub leader: Option<String>,
    /// For `term` events: when the leader was elected (ms since the Unix epoch), if published.
    pub since_ms: Option<f64>,
    pub code: Option<String>,
    pub message: Option<String>,
    /// For `terms` events: every election under the prefix that has a leader.
    pub terms: Option<Vec<NamedTerm>>,
    /// For `term` events: the leader's priority.
    pub priority: Option<f64>,
    /// For `term` events: the candidate that should lead instead (priority, balance), if any.
    pub preferred: Option<String>,
    /// For `term` events: the candidate the leader is handing over to, if it is.
    pub handover_to: Option<String>,
}

/// One election's term in a `terms` event.
#[napi(object)]
pub struct NamedTerm {
    pub name: String,
    pub leader: String,
    pub token: f64,
    pub since_ms: Option<f64>,
    pub priority: f64,
    pub preferred: Option<String>,
    pub handover_to: Option<String>,
}

impl LockerEvent {
    fn of(kind: &str, serial: Option<u32>) -> LockerEvent {
        LockerEvent {
            kind: kind.to_string(),
            serial,
            ..LockerEvent::default()
        }
    }

    fn of_term(kind: &str, serial: u32, term: Option<Term>) -> LockerEvent {
        match term {
            Some(term) => LockerEvent {
                token: Some(term.leader.token as f64),
                since_ms: term.since_ms.map(|ms| ms as f64),
                leader: Some(term.leader.id),
                priority: Some(term.priority as f64),
                preferred: term.preferred,
                handover_to: term.handover,
                ..LockerEvent::of(kind, Some(serial))
            },
            None => LockerEvent::of(kind, Some(serial)),
        }
    }
}

impl From<Event> for LockerEvent {
    fn from(event: Event) -> LockerEvent {
        match event {
            Event::Start {
                serial,
                token,
                takeover,
            } => LockerEvent {
                token: Some(token as f64),
                takeover_ms: takeover.map(|d| d.as_secs_f64() * 1000.0),
                ..LockerEvent::of("start", Some(serial))
            },
            Event::Stop { serial, reason } => LockerEvent {
                reason: Some(reason.as_str().into()),
                ..LockerEvent::of("stop", Some(serial))
            },
            Event::Leader { serial, leader } => LockerEvent {
                token: leader.as_ref().map(|l| l.token as f64),
                leader: leader.map(|l| l.id),
                ..LockerEvent::of("leader", Some(serial))
            },
            Event::Terms { serial, terms } => LockerEvent {
                terms: Some(
                    terms
                        .into_iter()
                        .map(|(name, term)| NamedTerm {
                            name,
                            leader: term.leader.id,
                            token: term.leader.token as f64,
                            since_ms: term.since_ms.map(|ms| ms as f64),
                            priority: term.priority as f64,
                            preferred: term.preferred,
                            handover_to: term.handover,
                        })
                        .collect(),
                ),
                ..LockerEvent::of("terms", Some(serial))
            },
            Event::Term { serial, term } => LockerEvent::of_term("term", serial, term),
            Event::Observed { serial, term } => LockerEvent::of_term("observed", serial, term),
            Event::Removed { serial } => LockerEvent::of("removed", Some(serial)),
            Event::Paused { serial } => LockerEvent::of("paused", Some(serial)),
            Event::HandedOver { serial, leader } => LockerEvent {
                token: Some(leader.token as f64),
                leader: Some(leader.id),
                ..LockerEvent::of("handover", Some(serial))
            },
            Event::Prefer { serial, to } => LockerEvent {
                leader: Some(to),
                ..LockerEvent::of("prefer", Some(serial))
            },
            Event::Error {
                serial,
                code,
                message,
            } => LockerEvent {
                code: Some(code.into()),
                message: Some(message),
                ..LockerEvent::of("error", serial)
            },
            Event::Renewed => LockerEvent::of("renewed", None),
            Event::Log { line } => LockerEvent {
                message: Some(line),
                ..LockerEvent::of("log", None)
            },
            Event::Closed { error } => LockerEvent {
                code: error.as_ref().map(|f| f.code().into()),
                message: error.map(|f| f.message()),
                ..LockerEvent::of("closed", None)
            },
        }
    }
}

/// Lease health for `locker.stats()`.
#[napi(object)]
pub struct SessionStats {
    /// The lease id in hex, as in the keys; absent while there is none.
    pub lease: Option<String>,
    /// Milliseconds until the leadership deadline (0 when passed).
    pub valid_for_ms: f64,
    pub keepalive_round_trip_ms: Option<f64>,
    pub renewals: f64,
    /// Milliseconds since the last answered keepalive was sent.
    pub since_renewal_ms: Option<f64>,
}

type EventCallback = ThreadsafeFunction<LockerEvent, (), LockerEvent, Status, false, true>;

#[napi]
pub struct NativeLocker {
    locker: Arc<Locker>,
    /// Released by `dispose` once the locker has closed: it holds the JavaScript callback, and
    /// through it the locker's JavaScript side.
    callback: Option<Arc<EventCallback>>,
    cleanup: Option<napi::CleanupEnvHook<Weak<Locker>>>,
    referenced: bool,
}

#[napi]
impl NativeLocker {
    #[napi(constructor)]
    pub fn new(
        env: Env,
        hosts: Vec<String>,
        options: LockerOptions,
        on_event: Function<LockerEvent, ()>,
    ) -> Result<Self> {
        // `hosts` and `options` come checked and normalized from lib/options.js, where the rules
        // users see (host syntax, TTL bounds) are written once.
        let endpoints = hosts;
        // Weak: the event loop is held open only while singletons are registered (`setActive`).
        let callback: Arc<EventCallback> = Arc::new(
            on_event
                .build_threadsafe_function::<LockerEvent>()
                .callee_handled::<false>()
                .weak::<true>()
                .build()?,
        );
        let sink_callback = callback.clone();
        let sink = events::Events::new(
            move |event: Event| {
                sink_callback.call(event.into(), ThreadsafeFunctionCallMode::NonBlocking);
            },
            options.debug.unwrap_or(false),
        );
        let mut security = Security::default();
        if let Some(tls) = options.tls {
            security.tls = true;
            security.ca = tls.ca.map(String::into_bytes);
            match (tls.cert, tls.key) {
                (Some(cert), Some(key)) => {
                    security.identity = Some((cert.into_bytes(), key.into_bytes()))
                }
                (None, None) => {}
                _ => {
                    return Err(Error::new(
                        Status::InvalidArg,
                        "tls.cert and tls.key go together".to_string(),
                    ));
                }
            }
        }
        security.user = options.auth.map(|a| (a.username, a.password));
        let locker = Locker::new(
            Options {
                endpoints,
                security,
                ttl: i64::from(options.ttl),
                prefix: options.prefix,
                id: options.id,
                guardian: options.guardian.map(|g| crate::guardian::Settings {
                    node: g.node,
                    script: g.script,
                    config: g.config,
                }),
                balance: options.balance.unwrap_or(false),
                min_term: std::time::Duration::from_millis(u64::from(
                    options.min_term_ms.unwrap_or(0),
                )),
            },
            sink,
            runtime()?.handle().clone(),
        )
        .map_err(|f| Error::new(Status::InvalidArg, f.message()))?;
        let locker = Arc::new(locker);
        // A terminated worker thread never runs `close`: revoke on environment teardown.
        let for_cleanup = Arc::downgrade(&locker);
        let cleanup = env.add_env_cleanup_hook(for_cleanup, |locker| {
            if let Some(locker) = locker.upgrade() {
                locker.close_now(EXIT_REVOKE_CAP);
            }
        })?;
        Ok(NativeLocker {
            locker,
            callback: Some(callback),
            cleanup: Some(cleanup),
            referenced: false,
        })
    }

    /// Registers `name` (with its priority, 0 if absent); returns the serial its events (and the
    /// calls below) use.
    #[napi]
    pub fn register(
        &self,
        name: String,
        paused: Option<bool>,
        priority: Option<i64>,
    ) -> Result<u32> {
        self.locker
            .register(&name, paused.unwrap_or(false), priority.unwrap_or(0))
            .map_err(|e| match e {
                RegisterError::AlreadyRegistered => Error::new(
                    Status::InvalidArg,
                    format!("a singleton named {name:?} is already registered on this locker"),
                ),
                RegisterError::Closed => {
                    Error::new(Status::GenericFailure, "the locker is closed".to_string())
                }
            })
    }

    /// Starts observing the leader of `name`; returns the serial its `leader` events carry.
    #[napi]
    pub fn observe(&self, name: String) -> Result<u32> {
        self.locker
            .observe(&name)
            .map_err(|_| Error::new(Status::GenericFailure, "the locker is closed".to_string()))
    }

    /// Reads who leads `name` and since when; returns the serial its `term` (or `error`) event
    /// carries.
    #[napi]
    pub fn term(&self, name: String) -> Result<u32> {
        self.locker
            .term(&name)
            .map_err(|_| Error::new(Status::GenericFailure, "the locker is closed".to_string()))
    }

    /// Reads every election under the prefix that has a leader; returns the serial its `terms`
    /// (or `error`) event carries.
    #[napi]
    pub fn terms(&self) -> Result<u32> {
        self.locker
            .terms()
            .map_err(|_| Error::new(Status::GenericFailure, "the locker is closed".to_string()))
    }

    #[napi]
    pub fn unobserve(&self, serial: u32) {
        self.locker.unobserve(serial);
    }

    /// Whether the registration `serial` leads right now (checked against the clock).
    #[napi]
    pub fn is_leading(&self, serial: u32) -> bool {
        self.locker.is_leading(serial)
    }

    /// Milliseconds until the leadership deadline (0 when passed or without a lease).
    #[napi]
    pub fn valid_for(&self) -> f64 {
        self.locker
            .valid_for()
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Whether to emit a `renewed` event for every answered keepalive.
    #[napi]
    pub fn report_renewals(&self, on: bool) {
        self.locker.report_renewals(on);
    }

    #[napi]
    pub fn stats(&self) -> SessionStats {
        let health = self.locker.health();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        SessionStats {
            lease: health.lease.map(|l| format!("{l:x}")),
            valid_for_ms: self.valid_for(),
            keepalive_round_trip_ms: health.round_trip.map(ms),
            renewals: health.renewals as f64,
            since_renewal_ms: health.since_renewal.map(ms),
        }
    }

    /// Frees the name of registration `serial` while its work drains; it keeps its key.
    #[napi]
    pub fn retire(&self, serial: u32) {
        self.locker.retire(serial);
    }

    /// Starts resigning registration `serial`; a `removed` event follows once etcd confirmed.
    #[napi]
    pub fn remove(&self, serial: u32) -> bool {
        self.locker.remove(serial)
    }

    /// Checks that registration `serial` of `name` leads and that `to` (or, without it, the next
    /// in line) is a live candidate to hand over to; returns the serial of the `handover` (or
    /// `error`) event that answers, naming that candidate.
    #[napi]
    pub fn handover_check(&self, name: String, serial: u32, to: Option<String>) -> Result<u32> {
        self.locker
            .handover_check(&name, serial, to)
            .map_err(|_| Error::new(Status::GenericFailure, "the locker is closed".to_string()))
    }

    /// Hands the lead of registration `serial` to `to` (or the next in line); returns the serial
    /// of the `handover` (or `error`) event that answers once it is done.
    #[napi]
    pub fn handover(&self, serial: u32, to: Option<String>) -> Result<u32> {
        self.locker.handover(serial, to).map_err(|_| {
            Error::new(
                Status::GenericFailure,
                "the singleton is not registered".to_string(),
            )
        })
    }

    /// Takes registration `serial` out of the queue until `resume`; a `paused` event follows
    /// once its key is gone. False if it is not running (already paused, removed).
    #[napi]
    pub fn pause(&self, serial: u32) -> bool {
        self.locker.pause(serial)
    }

    /// Puts a paused registration back in the queue.
    #[napi]
    pub fn resume(&self, serial: u32) -> bool {
        self.locker.resume(serial)
    }

    /// Starts closing; a `closed` event follows.
    #[napi]
    pub fn close(&self) {
        self.locker.close();
    }

    /// Revokes the lease synchronously (bounded), for `process.on('exit')`.
    #[napi]
    pub fn close_sync(&self) {
        self.locker.close_now(EXIT_REVOKE_CAP);
    }

    /// After the `closed` event: lets go of the JavaScript callback and the environment hook,
    /// so that nothing of the closed locker stays reachable.
    #[napi]
    pub fn dispose(&mut self, env: Env) -> Result<()> {
        self.callback = None;
        if let Some(cleanup) = self.cleanup.take() {
            env.remove_env_cleanup_hook(cleanup)?;
        }
        self.referenced = false;
        Ok(())
    }

    /// Whether events should keep the Node event loop alive.
    #[napi]
    pub fn set_active(&mut self, env: Env, active: bool) -> Result<()> {
        if active == self.referenced {
            return Ok(());
        }
        let Some(callback) = self.callback.as_ref() else {
            return Ok(());
        };
        let raw = callback.raw();
        // SAFETY: `raw` is a live thread-safe function owned by `self.callback`, and this runs on
        // the JavaScript thread that created it, as N-API requires.
        let status = unsafe {
            if active {
                napi::sys::napi_ref_threadsafe_function(env.raw(), raw)
            } else {
                napi::sys::napi_unref_threadsafe_function(env.raw(), raw)
            }
        };
        if status != napi::sys::Status::napi_ok {
            return Err(Error::new(
                Status::GenericFailure,
                "cannot change the event loop reference".to_string(),
            ));
        }
        self.referenced = active;
        Ok(())
    }

    /// The guardian's process id, while one runs.
    #[napi]
    pub fn guardian_pid(&self) -> Option<u32> {
        self.locker.guardian_pid()
    }

    /// On this process's death the guardian waits for `pid` to be gone before it revokes.
    #[napi]
    pub fn guard_process(&self, pid: Option<u32>) {
        self.locker.guard_process(pid);
    }

    #[napi]
    pub fn id(&self) -> String {
        self.locker.id().to_string()
    }
}
