//! PostgreSQL key lookups by digest, coalesced: lookups that arrive while
//! earlier ones are on the wire go to the database together, in one
//! `WHERE digest = ANY($1)` round trip.
//!
//! A lookup that misses the node's cache costs a round trip, and most of a
//! round trip's cost is the same whatever the rows: the pool, the protocol,
//! the database's per-statement work, two wake-ups. With many keys in use
//! (more than a node caches, or within a short cache lifetime) nearly every
//! verify is such a miss; coalescing pays that cost once per batch instead
//! of once per request. Nothing waits for a batch to fill: a lookup goes
//! out at once when a round-trip slot is free, and only lookups that
//! arrive while all [`IN_FLIGHT`] slots are taken share the next one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{ApiKey, Result, StoreError};

/// Round trips of lookups at once. Measured at 32 connections on 100,000
/// keys: 4 slots gave 2.5 lookups per round trip, 2 gave 4 (same
/// throughput within the noise); fewer slots, bigger batches, less work
/// for the database.
const IN_FLIGHT: usize = 2;
/// Digests in one round trip, at most.
const MAX_BATCH: usize = 128;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

type Answer = Result<Option<ApiKey>>;

struct Lookup {
    digest: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

/// The sending side; the task that runs the round trips ends when the last
/// clone of the store (and so of this) is gone.
#[derive(Debug, Clone)]
pub(crate) struct KeyLookups {
    tx: mpsc::UnboundedSender<Lookup>,
    pool: PgPool,
}

impl KeyLookups {
    /// Starts the task on connections of its own to `url`, opened when
    /// first needed; call within the Tokio runtime.
    pub(crate) fn start(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(IN_FLIGHT as u32)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            // The one statement these connections run is always best
            // served by the digest index, whatever the number of digests;
            // by default PostgreSQL plans it anew for every batch (a
            // custom plan per array), which costs more than the lookups.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("SET plan_cache_mode = force_generic_plan")
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy(url)
            .map_err(crate::common::db_err)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool.clone(), rx));
        Ok(Self { tx, pool })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn key_by_digest(&self, digest: &[u8]) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Lookup {
                digest: digest.to_vec(),
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::Backend(sqlx::Error::PoolClosed)
}

async fn run(pool: PgPool, mut rx: mpsc::UnboundedReceiver<Lookup>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            answer(&pool, batch).await;
            drop(slot);
        });
    }
}

/// One round trip for `batch`; each lookup gets its row, `None`, or the
/// error (a row that does not decode fails only its own lookup).
async fn answer(pool: &PgPool, batch: Vec<Lookup>) {
    // Waiters that gave up (their request ended) need no row.
    let batch: Vec<Lookup> = batch.into_iter().filter(|l| !l.reply.is_closed()).collect();
    if batch.is_empty() {
        return;
    }
    let digests: Vec<&[u8]> = batch.iter().map(|l| l.digest.as_slice()).collect();
    let rows = sqlx::query(crate::sql::KEYS_BY_DIGESTS)
        .bind(&digests)
        .fetch_all(pool)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // sqlx errors are not `Clone`: the first waiter gets this one,
            // the others its message.
            let message = e.to_string();
            let mut first = Some(crate::common::db_err(e));
            for l in batch {
                let err = first
                    .take()
                    .unwrap_or_else(|| StoreError::Backend(sqlx::Error::Protocol(message.clone())));
                let _ = l.reply.send(Err(err));
            }
            return;
        }
    };
    // A row that decodes carries its digest; one that does not is read
    // for its digest alone, so that it fails its own lookup.
    let mut found: HashMap<Vec<u8>, std::result::Result<ApiKey, String>> =
        HashMap::with_capacity(rows.len());
    for row in &rows {
        match crate::common::api_key(row) {
            Ok(key) => {
                found.insert(key.digest.clone(), Ok(key));
            }
            Err(e) => match row.try_get::<Vec<u8>, _>("digest") {
                Ok(digest) => {
                    found.insert(digest, Err(e.to_string()));
                }
                Err(e) => {
                    // Without its digest a row answers no one; it must not
                    // read as "no such key" either.
                    let message = format!("key row without a digest: {e}");
                    for l in batch {
                        let _ = l.reply.send(Err(StoreError::Corrupt(message.clone())));
                    }
                    return;
                }
            },
        }
    }
    for l in batch {
        let answer = match found.get(&l.digest) {
            None => Ok(None),
            Some(Ok(key)) => Ok(Some(key.clone())),
            Some(Err(message)) => Err(StoreError::Corrupt(message.clone())),
        };
        let _ = l.reply.send(answer);
    }
}
