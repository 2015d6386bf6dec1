//! Opens a [`Store`] directly (no app) on a test storage, migrated, for the tests that
//! build the service themselves.

use std::sync::Arc;
use std::time::Duration;

use readstate::cache::Cache;
use readstate::commit::Committer;
use readstate::config::EventsSettings;
use readstate::domain::Caps;
use readstate::live::Hub;
use readstate::service::{Service, ServiceLimits, ServiceParts};
use readstate::store::postgres::PgOptions;
use readstate::store::sqlite::SqliteOptions;
use readstate::store::{PgStore, SqliteStore, Store};

use super::{Backend, TestStorage};

/// The store of `storage`'s backend with windows for `caps`, migrated.
pub async fn open_store(storage: &TestStorage, caps: Caps) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = match storage.backend() {
        Backend::Sqlite => Arc::new(
            SqliteStore::open(&SqliteOptions {
                url: storage.url().to_owned(),
                full_sync: false,
                readers: 2,
                timeout: Duration::from_secs(5),
                channel_window: caps.channel_window(),
                mention_window: caps.mention_window(),
                // As with the commit log (the default): the writer thread lowered.
                background_writer: true,
                // And its writes paced as by default (storage.checkpoint_write_rate).
                checkpoint_write_rate: 128 << 20,
            })
            .await
            .expect("the SQLite store opens"),
        ),
        Backend::Postgres => Arc::new(
            PgStore::open(&PgOptions {
                url: storage.url().to_owned(),
                pool_size: 4,
                timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(5),
                synchronous_commit: true,
                channel_window: caps.channel_window(),
                mention_window: caps.mention_window(),
                node_id: u64::from_str_radix(&super::random_hex(), 16).expect("hex"),
            })
            .await
            .expect("the PostgreSQL store opens"),
        ),
    };
    store.migrate().await.expect("migrations apply");
    store
}

/// The service of the in-process suites, over `store` and `committer`, with the
/// same small limits everywhere.
pub fn service(
    cache: Arc<Cache>,
    store: Arc<dyn Store>,
    committer: Committer,
    caps: Caps,
) -> Service {
    let limits = ServiceLimits {
        max_mentions: 10,
        max_batch_ops: 100,
        max_page: 100,
        max_summary_users: 100,
        max_channels_filter: 100,
    };
    Service::new(ServiceParts {
        cache,
        store,
        committer,
        hub: Arc::new(Hub::new(EventsSettings::default())),
        caps,
        limits,
        commit_timeout: Duration::from_secs(10),
    })
}
