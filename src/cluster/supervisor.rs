//! The per-node cluster loop: renews this node's heartbeat, removes the members of nodes that
//! died, and ends reconnect grace periods, reporting each outcome once for the adapters to
//! tell their peers.
//!
//! Every node runs the loop (`gateway::run_cluster` consumes its events);
//! the store's scripts make each removal and each expiry happen in exactly one node's loop,
//! so a grace period ends even when the node that saw the drop is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::liveness::{Beat, Liveness};
use crate::store::redis::{Gone, Reaped, RedisStore};

/// One realm's store and its reconnect grace (zero: a dead node's members leave at once).
pub struct Realm {
    /// The realm's name, echoed in events.
    pub name: &'static str,
    /// Its shared state.
    pub store: RedisStore,
    /// How long a member of a dead node, or one that dropped, may come back.
    pub grace: Duration,
}

/// Something the loop did that members' peers must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member of a dead node left (realm without grace).
    Left {
        /// The realm.
        realm: &'static str,
        /// Who left and who is told.
        departure: Gone,
    },
    /// A member of a dead node is away until its grace ends.
    Away {
        /// The realm.
        realm: &'static str,
        /// The member.
        member: String,
        /// Its room.
        room: String,
    },
    /// A member's grace ended without a reconnect: it left.
    Expired {
        /// The realm.
        realm: &'static str,
        /// Who left and who is told.
        departure: Gone,
    },
    /// This node's own heartbeat had expired (a long pause, or Redis lost its state): it is
    /// registered again and must restore its live members.
    Reregistered,
    /// A dead node's members were dealt with in every realm and the node is forgotten: what
    /// else names it (its listeners, for forwarding) can go.
    Forgotten {
        /// The node's id.
        node: String,
    },
}

/// How many expired members one pass removes per realm, so one pass stays short.
const EXPIRE_BATCH: usize = 256;

/// Starts the loop; it runs until the returned task is aborted or `events` is closed.
/// `reachable` reflects whether the last pass reached Redis (for `/readyz`).
pub fn spawn(
    liveness: Liveness,
    realms: Vec<Realm>,
    events: mpsc::Sender<Event>,
    reachable: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(liveness.interval().min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match pass(&liveness, &realms, &events).await {
                Ok(()) => reachable.store(true, Ordering::Relaxed),
                Err(PassError::Closed) => return,
                Err(PassError::Redis(e)) => {
                    reachable.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cluster: pass failed");
                }
            }
        }
    })
}

enum PassError {
    Closed,
    Redis(String),
}

impl<E: std::error::Error> From<E> for PassError {
    fn from(e: E) -> Self {
        PassError::Redis(e.to_string())
    }
}

async fn pass(
    liveness: &Liveness,
    realms: &[Realm],
    events: &mpsc::Sender<Event>,
) -> Result<(), PassError> {
    let send =
        |event: Event| async move { events.send(event).await.map_err(|_| PassError::Closed) };
    if liveness.beat().await? == Beat::Lost {
        send(Event::Reregistered).await?;
    }
    let now = now_ms();
    for (node, _) in liveness.dead_nodes().await? {
        for realm in realms {
            let grace = u64::try_from(realm.grace.as_millis()).unwrap_or(u64::MAX);
            for reaped in realm.store.reap(&node, now, grace).await? {
                send(match reaped {
                    Reaped::Left(departure) => Event::Left {
                        realm: realm.name,
                        departure,
                    },
                    Reaped::Away { member, room } => Event::Away {
                        realm: realm.name,
                        member,
                        room,
                    },
                })
                .await?;
            }
        }
        if liveness.forget(&node).await? {
            send(Event::Forgotten { node }).await?;
        }
    }
    for realm in realms.iter().filter(|r| !r.grace.is_zero()) {
        for departure in realm.store.expire(now, EXPIRE_BATCH).await? {
            send(Event::Expired {
                realm: realm.name,
                departure,
            })
            .await?;
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
