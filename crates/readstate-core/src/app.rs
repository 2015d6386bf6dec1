//! Startup and shutdown: `App::build` opens storage (SQLite or PostgreSQL, by the
//! scheme of `storage.url`), runs migrations, starts the commit writer and, on a
//! shared database, the change-feed task that drops cached entries other nodes wrote,
//! and binds the listener (honouring port 0); `App::run` serves until cancelled, then
//! drains in order. `build` never serves and `run` never configures, so tests call
//! exactly what `readstate serve` calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::cache::Cache;
use crate::commit::{self, CommitConfig};
use crate::config::{Durability, Settings};
use crate::domain::Caps;
use crate::grpc::{GrpcLimits, GrpcServer};
use crate::http::{HttpLimits, HttpState, InFlightLayer};
use crate::service::{Service, ServiceLimits, ServiceParts};
use crate::store::postgres::PgOptions;
use crate::store::{ChangeFeed, PgStore, SqliteStore, Store, sqlite::SqliteOptions};
use crate::wal::WalOptions;

/// A built, bound, not yet serving readstate.
pub struct App {
    settings: Settings,
    listener: TcpListener,
    http_addr: SocketAddr,
    router: axum::Router,
    grpc: Option<(GrpcServer, GrpcLimits)>,
    service: Arc<Service>,
    ready: Arc<AtomicBool>,
    tracker: TaskTracker,
    writer_cancel: CancellationToken,
    nats_cancel: CancellationToken,
}

/// Opens the store named by the settings (`postgres://`/`postgresql://`: PostgreSQL,
/// otherwise SQLite) and applies migrations.
///
/// # Errors
/// When the database cannot be opened or migrated.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let caps = caps(settings);
    let storage = &settings.storage;
    // With the commit log the database is written only by checkpoints, which must be
    // durable before the log forgets what they cover: full sync then, in both modes.
    let sync = storage.durability == Durability::Sync || storage.uses_log();
    let store: Arc<dyn Store> = if storage.is_postgres() {
        Arc::new(
            PgStore::open(&PgOptions {
                url: storage.url.expose().to_owned(),
                pool_size: storage.pool_size,
                timeout: storage.timeout(),
                statement_timeout: storage.statement_timeout(),
                synchronous_commit: sync,
                channel_window: caps.channel_window(),
                mention_window: caps.mention_window(),
                node_id: node_id(),
            })
            .await
            .with_context(|| format!("while opening storage {}", storage.url))?,
        )
    } else {
        Arc::new(
            SqliteStore::open(&SqliteOptions {
                url: storage.url.expose().to_owned(),
                full_sync: sync,
                readers: storage.sqlite_readers,
                timeout: storage.timeout(),
                channel_window: caps.channel_window(),
                mention_window: caps.mention_window(),
                // With the commit log only checkpoints write the database.
                background_writer: storage.uses_log(),
                checkpoint_write_rate: storage.checkpoint_write_rate.0,
            })
            .await
            .with_context(|| format!("while opening storage {}", storage.url))?,
        )
    };
    store.migrate().await.context("while applying migrations")?;
    Ok(store)
}

/// A random id for this process in change notifications (std's randomly keyed hasher
/// over the time and the process id: no extra dependency).
fn node_id() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}

/// Follows the change feed of a shared database until `cancel`: every change another
/// node committed drops the matching cached entries. A failing feed is retried with
/// backoff (at most 2 s); its next answer is a resync that drops the whole cache.
async fn follow_changes(
    mut feed: Box<dyn ChangeFeed>,
    service: Arc<Service>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        let next = tokio::select! {
            next = feed.next() => next,
            () = cancel.cancelled() => break,
        };
        match next {
            Ok(changes) => {
                service.apply_remote_changes(&changes);
                backoff.reset();
            }
            Err(e) => {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    retry_in_ms = backoff.delay().as_millis() as u64,
                    "change feed failed; cached entries are resynchronised when it is back"
                );
                if !backoff.wait_or_cancel(&cancel).await {
                    break;
                }
            }
        }
    }
}

/// Runs `job` every `period` on `tracker` until `cancel`.
fn every(
    period: Duration,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
    job: impl Fn() + Send + 'static,
) {
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => job(),
                () = cancel.cancelled() => break,
            }
        }
    });
}

/// Says at start who may call: whether auth is on, and a warning when it is off on
/// a non-loopback address (only possible with `auth.allow_unauthenticated`).
fn announce_access(settings: &Settings) {
    let auth = &settings.auth;
    if auth.is_on() {
        tracing::info!(
            api_keys = auth.api_keys.len(),
            jwt = auth.jwt.is_configured(),
            "authentication is on: every /v1 request needs an API key or a JWT"
        );
    } else if settings.listens_beyond_loopback() {
        tracing::warn!(
            "authentication is OFF on a non-loopback address (auth.allow_unauthenticated = true): anyone who can reach this server may read and change every read state"
        );
    } else {
        tracing::info!(
            "authentication is off: serving open on loopback only (configure auth to listen elsewhere)"
        );
    }
}

fn caps(settings: &Settings) -> Caps {
    Caps {
        unread: settings.state.unread_cap,
        mention: settings.state.mention_cap,
    }
}

impl App {
    /// Opens storage, runs migrations, starts the commit writer and binds the listener.
    ///
    /// # Errors
    /// Storage, migration, metrics or bind failures.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let started = Instant::now();
        let store = open_store(&settings).await?;
        let handle = crate::metrics::install()
            .map_err(anyhow::Error::msg)
            .context("while installing metrics")?;
        let cache = Arc::new(Cache::new(settings.cache.max_bytes.get()));
        let tracker = TaskTracker::new();
        let writer_cancel = CancellationToken::new();
        let commit_config = CommitConfig {
            durability: settings.storage.durability,
            max_batch: settings.storage.max_batch,
            flush_interval: settings.storage.flush_interval(),
            max_unflushed: settings.storage.max_unflushed,
            checkpoint_interval: settings.storage.checkpoint_interval(),
            checkpoint_writes: settings.storage.checkpoint_writes,
        };
        let committer = if settings.storage.uses_log() {
            let wal = commit::recover_log(
                store.as_ref(),
                &settings.storage.log_dir(),
                WalOptions {
                    segment_bytes: settings.storage.log_segment_bytes.get(),
                },
            )
            .await?;
            commit::spawn_with_log(
                store.clone(),
                cache.clone(),
                commit_config,
                wal,
                writer_cancel.clone(),
                &tracker,
            )
        } else {
            commit::spawn(
                store.clone(),
                cache.clone(),
                commit_config,
                writer_cancel.clone(),
                &tracker,
            )
        };
        let limits = &settings.limits;
        let open_files = crate::limits::raise_open_files();
        if let Some(open_files) = open_files
            && (open_files as usize) < limits.max_connections.saturating_add(256)
        {
            tracing::warn!(
                open_files,
                max_connections = limits.max_connections,
                "the open-file limit is below limits.max_connections plus room for storage; accept errors will back off before the connection limit is reached"
            );
        }
        let service = Arc::new(Service::new(ServiceParts {
            cache,
            store,
            committer,
            hub: Arc::new(crate::live::Hub::new(settings.events.clone())),
            caps: caps(&settings),
            limits: ServiceLimits {
                max_mentions: limits.max_mentions,
                max_batch_ops: limits.max_batch_ops,
                max_page: u32::try_from(limits.max_page).unwrap_or(u32::MAX),
                max_summary_users: limits.max_summary_users,
                max_channels_filter: limits.max_channels_filter,
            },
            commit_timeout: settings.storage.commit_timeout(),
        }));
        if let Some(feed) = service
            .watch_storage()
            .await
            .context("while subscribing to storage changes")?
        {
            tracker.spawn(follow_changes(feed, service.clone(), writer_cancel.clone()));
        }
        let nats_cancel = CancellationToken::new();
        crate::ingest::spawn(
            &settings.nats,
            service.clone(),
            nats_cancel.clone(),
            &tracker,
        );
        let access = Arc::new(
            crate::auth::Access::new(&settings.auth, &settings.limits)
                .context("while loading the auth keys")?,
        );
        announce_access(&settings);
        // The rate limiter forgets idle callers.
        let sweep_access = access.clone();
        every(
            Duration::from_secs(60),
            &writer_cancel,
            &tracker,
            move || {
                sweep_access.sweep();
            },
        );
        let ready = Arc::new(AtomicBool::new(false));
        let state = HttpState {
            access: access.clone(),
            service: service.clone(),
            metrics: handle.clone(),
            ready: ready.clone(),
            started,
            durability: match settings.storage.durability {
                Durability::Sync => "sync",
                Durability::Async => "async",
            },
            history: crate::metrics::spawn_history(
                service.clone(),
                handle.clone(),
                crate::metrics::HISTORY_INTERVAL,
                writer_cancel.clone(),
                &tracker,
            ),
        };
        // One in-flight count for the process, whichever transport a request uses.
        let in_flight = InFlightLayer::new(limits.soft_in_flight, limits.hard_in_flight);
        let router = crate::http::router(
            state,
            HttpLimits {
                in_flight: in_flight.clone(),
                request_timeout: settings.http.request_timeout(),
                max_body_bytes: settings.http.max_body_bytes.as_usize(),
                body_read_timeout: settings.http.body_read_timeout(),
                allowed_origins: crate::http::browser::AllowedOrigins::new(
                    &settings.http.cors_origins,
                ),
            },
        );
        let grpc = match settings.grpc.addr {
            Some(addr) => Some((
                GrpcServer::bind(addr).await?,
                GrpcLimits {
                    access,
                    in_flight,
                    request_timeout: settings.http.request_timeout(),
                    max_message_bytes: settings.http.max_body_bytes.as_usize(),
                    keepalive: settings.events.heartbeat(),
                },
            )),
            None => None,
        };
        let listener = crate::http::serve::bind(settings.http.addr)
            .with_context(|| format!("while binding http.addr {}", settings.http.addr))?;
        let http_addr = listener
            .local_addr()
            .context("while reading the bound address")?;
        // Histogram buffers of the exporter only drain on upkeep.
        every(
            Duration::from_secs(5),
            &writer_cancel,
            &tracker,
            move || {
                handle.run_upkeep();
            },
        );
        tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "built");
        Ok(Self {
            settings,
            listener,
            http_addr,
            router,
            grpc,
            service,
            ready,
            tracker,
            writer_cancel,
            nats_cancel,
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The service (for tests that inspect the cache).
    /// The bound gRPC address, when `grpc.addr` is set.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().map(|(server, _)| server.addr())
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Serves until `shutdown` is cancelled, then drains: readiness goes false, the
    /// listener stops accepting, in-flight requests finish, the commit writer commits
    /// everything queued, storage closes. Bounded by `shutdown.grace_period_ms`.
    ///
    /// # Errors
    /// When the drain does not finish within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            listener,
            http_addr,
            router,
            grpc,
            service,
            ready,
            tracker,
            writer_cancel,
            nats_cancel,
        } = self;
        ready.store(true, Ordering::SeqCst);
        tracing::info!(addr = %http_addr, protocol = "http", "listening");
        // The gRPC server stops accepting when `shutdown` fires, like HTTP, and its
        // calls in flight are part of the drain.
        let grpc = grpc.map(|(server, limits)| {
            tracing::info!(addr = %server.addr(), protocol = "grpc", "listening");
            tokio::spawn(server.run(service.clone(), limits, shutdown.clone()))
        });
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            durability = %settings.storage.durability,
            storage = %settings.storage.url,
            cache_max_bytes = settings.cache.max_bytes.get(),
            "ready"
        );
        tracing::info!(
            dashboard = %format!("http://{http_addr}/"),
            docs = %format!("http://{http_addr}/docs"),
            metrics = %format!("http://{http_addr}/metrics"),
            "open the dashboard and the API reference in a browser"
        );
        crate::footprint::settle_after_start();
        let graceful = crate::http::serve::accept_until(
            listener,
            router,
            crate::http::serve::ConnectionLimits {
                header_read_timeout: settings.http.header_read_timeout(),
                max_connections: settings.limits.max_connections,
            },
            &shutdown,
        )
        .await;
        tracing::info!("draining: not ready, no new connections");
        ready.store(false, Ordering::SeqCst);
        // Event streams end (else their connections would hold the drain), the NATS
        // ingest takes no new batch (the one in hand is committed and acknowledged).
        service.end_streams();
        nats_cancel.cancel();
        let deadline = tokio::time::Instant::now() + settings.shutdown.grace_period();
        let drained = async {
            graceful.shutdown().await;
            if let Some(grpc) = grpc {
                match grpc.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "gRPC server failed"),
                    Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
                }
            }
            tracing::info!("in-flight requests finished; flushing");
            writer_cancel.cancel();
            tracker.close();
            tracker.wait().await;
            service.close_storage().await;
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(
                grace_ms = settings.shutdown.grace_period_ms,
                "shutdown did not finish within the grace period"
            );
            anyhow::bail!("shutdown did not finish within shutdown.grace_period_ms");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Cancels the returned token on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        cancel.cancel();
    });
    token
}
