//! Wiring: settings, the shared state, [`configure`] (every route, used by the binary and the
//! tests alike) and [`Application`] (binds the listener, starts the feed loop, serves).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use tokio::sync::Semaphore;

use crate::auth::Token;
use crate::fleet::FleetFeed;
use crate::live::{FeedLoop, LiveFleet, Maintenance};
use crate::planner_run::RunLimits;
use crate::recorder::RecorderShared;
use crate::store::Store;

/// Everything the dashboard can be told at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address (port 0: any free port, as tests use).
    pub bind: SocketAddr,
    /// Bearer token for planner runs; `None` keeps the dashboard read-only.
    pub token: Option<Token>,
    /// How often the feed is read.
    pub tick: Duration,
    /// Limits of planner runs.
    pub run_limits: RunLimits,
    /// Downsampling and retention of telemetry.
    pub maintenance: Maintenance,
    /// Largest JSON request body, bytes.
    pub max_body_bytes: usize,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tick: Duration::from_secs(2),
            run_limits: RunLimits::default(),
            maintenance: Maintenance::default(),
            max_body_bytes: 128 * 1024,
            workers: 0,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The live view.
    pub live: Arc<LiveFleet>,
    /// History.
    pub store: Arc<dyn Store>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// One planner run at a time.
    pub planner_gate: Arc<Semaphore>,
    /// The Kubernetes recorder's counters, when one runs (`GET /api/v1/recorder`).
    pub recorder: Option<Arc<RecorderShared>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AppState")
            .field("store", &self.store.kind())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a live view and a store.
    #[must_use]
    pub fn new(live: Arc<LiveFleet>, store: Arc<dyn Store>, settings: Settings) -> Self {
        Self {
            live,
            store,
            settings: Arc::new(settings),
            planner_gate: Arc::new(Semaphore::new(1)),
            recorder: None,
        }
    }
}

/// Headers every response carries: no sniffing, no framing, no referrer, a strict CSP (every
/// script and style comes from the binary itself), no caching unless a handler says so.
#[must_use]
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Cross-Origin-Opener-Policy", "same-origin"))
        .add((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ))
        .add(("Cache-Control", "no-store"))
}

/// Registers every route with the shared state and the request limits. The binary and the
/// tests call exactly this.
pub fn configure(state: AppState) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |config: &mut web::ServiceConfig| {
        let limit = state.settings.max_body_bytes;
        config
            .app_data(web::Data::new(state.clone()))
            .app_data(crate::api::json_config(limit))
            .app_data(crate::api::query_config())
            .app_data(crate::api::path_config())
            .app_data(web::PayloadConfig::new(limit))
            .configure(crate::api::routes)
            .configure(crate::ui::routes);
    }
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address is taken or not ours.
    #[error("could not listen on {address}: {source}; pick another --bind ADDRESS:PORT")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet running dashboard.
pub struct Application {
    address: SocketAddr,
    server: Server,
    state: AppState,
    feed: Option<FeedLoop>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Application")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds the listener and prepares the server; with a feed, reads it once so the first
    /// request already sees the fleet. Must be called inside an actix (or tokio) runtime.
    ///
    /// # Errors
    /// [`StartError::Bind`] when the address cannot be bound.
    pub async fn build(
        settings: Settings,
        store: Arc<dyn Store>,
        feed: Option<Box<dyn FleetFeed>>,
    ) -> Result<Self, StartError> {
        Self::build_with_recorder(settings, store, feed, None).await
    }

    /// Like [`build`](Self::build), with a Kubernetes recorder writing history: the recorder
    /// is then the only writer of telemetry, events and placements (the feed loop only shows
    /// the fleet and keeps history small), and `GET /api/v1/recorder` reports on it.
    ///
    /// # Errors
    /// [`StartError::Bind`] when the address cannot be bound.
    pub async fn build_with_recorder(
        settings: Settings,
        store: Arc<dyn Store>,
        feed: Option<Box<dyn FleetFeed>>,
        recorder: Option<Arc<RecorderShared>>,
    ) -> Result<Self, StartError> {
        let live = Arc::new(LiveFleet::new());
        let maintenance = settings.maintenance;
        let workers = settings.workers;
        let address = settings.bind;
        let mut state = AppState::new(Arc::clone(&live), Arc::clone(&store), settings);
        let recording = recorder.is_none();
        state.recorder = recorder;
        let feed = feed
            .map(|feed| FeedLoop::new(feed, live, store, maintenance).recording_history(recording));
        if let Some(feed) = &feed {
            feed.tick().await;
        }
        let listener =
            TcpListener::bind(address).map_err(|source| StartError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartError::Bind { address, source })?;
        let routes = configure(state.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(security_headers())
                .configure(routes.clone())
        })
        .shutdown_timeout(5);
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartError::Bind { address, source })?
            .run();
        Ok(Self {
            address,
            server,
            state,
            feed,
        })
    }

    /// The address actually bound (the port chosen when 0 was asked for).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The shared state (tests read the live view and the store through it).
    #[must_use]
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The feed loop, to tick by hand in tests.
    #[must_use]
    pub fn feed(&self) -> Option<&FeedLoop> {
        self.feed.as_ref()
    }

    /// Serves until the server stops (Ctrl-C), ticking the feed in the background.
    ///
    /// # Errors
    /// The server's I/O error.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let ticker = self.feed.map(|feed| {
            let interval = self.state.settings.tick;
            tokio::spawn(feed.run(interval))
        });
        let result = self.server.await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        result
    }

    /// Serves without a background feed loop (tests tick the feed themselves).
    ///
    /// # Errors
    /// The server's I/O error.
    pub async fn run_without_ticking(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Runs `future` to completion on an actix system (the runtime actix-web's server needs), for
/// the synchronous `main` of the binary.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    actix_web::rt::System::new().block_on(future)
}
