//! How an adapter opens its realm's store, without knowing which kind it gets: in memory (one
//! node, the default) or shared through Redis (cluster mode). The gateway decides once, at
//! start; in cluster mode it also learns here which realms were opened, to run their grace
//! expiry and node-death handling and to deliver other nodes' messages into them.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use super::deliver::ClusterLocator;
use super::Reach;
use crate::cluster::link::Link;
use crate::cluster::NodeId;
use crate::store::redis::RedisStore;
use crate::store::{OnDeparted, SharedRooms, Store};

/// Opens realms' stores.
#[derive(Clone, Default)]
pub struct Stores {
    cluster: Option<Arc<Shared>>,
}

/// What cluster-mode stores need, and the realms opened so far.
struct Shared {
    conn: ConnectionManager,
    cluster: String,
    node: NodeId,
    link: Arc<Link>,
    opened: Mutex<Vec<Opened>>,
}

/// A realm opened in cluster mode.
#[derive(Clone)]
pub struct Opened {
    /// Its rooms.
    pub rooms: Arc<SharedRooms<Reach>>,
    /// How long its members may be away.
    pub grace: Duration,
    /// Its event names (messages from other nodes name one of these).
    pub events: &'static [&'static str],
    /// Its store in Redis, for the node's supervisor.
    pub redis: RedisStore,
}

impl Stores {
    /// Stores in this process's memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Stores shared through Redis by the nodes of cluster `cluster`.
    pub fn shared(conn: ConnectionManager, cluster: &str, node: NodeId, link: Arc<Link>) -> Self {
        Self {
            cluster: Some(Arc::new(Shared {
                conn,
                cluster: cluster.to_owned(),
                node,
                link,
                opened: Mutex::default(),
            })),
        }
    }

    /// Opens the store of realm `realm`, whose members may be away for `grace` and whose
    /// events are `events`; `on_departed` is told of members that left without asking.
    pub fn open(
        &self,
        realm: &'static str,
        grace: Duration,
        events: &'static [&'static str],
        on_departed: OnDeparted<Reach>,
    ) -> Arc<Store<Reach>> {
        let Some(shared) = &self.cluster else {
            return Arc::new(Store::in_memory(on_departed));
        };
        let redis = RedisStore::new(shared.conn.clone(), &shared.cluster, realm);
        let rooms = SharedRooms::new(
            redis.clone(),
            realm,
            shared.node.as_str(),
            ClusterLocator::new(realm, shared.link.clone()),
            on_departed,
        );
        shared.opened.lock().push(Opened {
            rooms: rooms.clone(),
            grace,
            events,
            redis,
        });
        Arc::new(Store::Shared(rooms))
    }

    /// The realms opened in cluster mode (none in memory).
    pub fn opened(&self) -> Vec<Opened> {
        self.cluster
            .as_ref()
            .map(|s| s.opened.lock().clone())
            .unwrap_or_default()
    }
}
