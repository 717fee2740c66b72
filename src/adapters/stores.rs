//! How an adapter opens its realm's store, without knowing which kind it gets: in memory (one
//! node, the default) or shared through Redis (cluster mode). The gateway decides once, at
//! start; in cluster mode it also learns here which realms were opened, to run their grace
//! expiry and node-death handling and to deliver other nodes' messages into them.

use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use super::deliver::ClusterLocator;
use super::mixed::{CrossProtocol, Departed, RealmStore, Side};
use super::Reach;
use crate::cluster::link::Link;
use crate::cluster::NodeId;
use crate::store::redis::RedisStore;
use crate::store::shared::ReapGrace;
use crate::store::{OnDeparted, SharedRooms, Store};

/// Opens realms' stores.
#[derive(Clone, Default)]
pub struct Stores {
    cluster: Option<Arc<Shared>>,
    mixed: Option<Arc<Mixed>>,
}

/// The one realm both protocols share when cross-protocol rooms are on.
struct Mixed {
    rules: Arc<CrossProtocol>,
    store: OnceLock<Arc<Store<Reach>>>,
    departed: Arc<Departed>,
}

/// The name of the realm both protocols share (its keys in Redis sit under it).
pub const MIXED_REALM: &str = "mixed";

/// What cluster-mode stores need, and the realms opened so far.
struct Shared {
    conn: ConnectionManager,
    cluster: String,
    node: NodeId,
    link: Arc<Link>,
    opened: Mutex<Vec<Opened>>,
}

/// A realm opened in cluster mode, by one protocol.
#[derive(Clone)]
pub struct Opened {
    /// The protocol that opened it (messages from other nodes for its members name it).
    pub protocol: &'static str,
    /// Its rooms (shared by both protocols' entries when cross-protocol rooms are on).
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
            mixed: None,
        }
    }

    /// With cross-protocol rooms as `rules` says (`None`: off): both protocols then open one
    /// shared realm, each through its own view ([`Stores::open_view`]).
    pub fn with_cross_protocol(mut self, rules: Option<Arc<CrossProtocol>>) -> Self {
        self.mixed = rules.map(|rules| {
            Arc::new(Mixed {
                rules,
                store: OnceLock::new(),
                departed: Arc::default(),
            })
        });
        self
    }

    /// Opens protocol `side`'s view of its realm: its own realm, or with cross-protocol
    /// rooms on, the realm both protocols share. `on_departed` hears of the protocol's own
    /// members that left without asking, with their ids as the protocol knows them.
    pub fn open_view(
        &self,
        side: Side,
        grace: Duration,
        events: &'static [&'static str],
        on_departed: OnDeparted<Reach>,
    ) -> RealmStore {
        let Some(mixed) = &self.mixed else {
            return RealmStore::new(
                self.open(side.name(), grace, events, on_departed),
                side,
                None,
            );
        };
        mixed.departed.register(side, on_departed);
        let store = mixed
            .store
            .get_or_init(|| {
                let reap: ReapGrace = Arc::new(super::mixed::reap_grace);
                // Its routes report the target's connector, which only Redis holds: no
                // relay is checked in the node's own index.
                self.create_with(MIXED_REALM, mixed.departed.handler(), Some(reap), false)
            })
            .clone();
        if let (Some(shared), Store::Shared(rooms)) = (&self.cluster, &*store) {
            shared.opened.lock().push(Opened {
                protocol: side.name(),
                rooms: rooms.clone(),
                grace,
                events,
                redis: RedisStore::new(shared.conn.clone(), &shared.cluster, MIXED_REALM),
            });
        }
        RealmStore::new(store, side, Some(mixed.rules.clone()))
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
        let store = self.create(realm, on_departed);
        if let (Some(shared), Store::Shared(rooms)) = (&self.cluster, &*store) {
            let redis = RedisStore::new(shared.conn.clone(), &shared.cluster, realm);
            shared.opened.lock().push(Opened {
                protocol: realm,
                rooms: rooms.clone(),
                grace,
                events,
                redis,
            });
        }
        store
    }

    /// A realm's store, not yet recorded among the opened ones.
    fn create(&self, realm: &'static str, on_departed: OnDeparted<Reach>) -> Arc<Store<Reach>> {
        self.create_with(realm, on_departed, None, true)
    }

    /// A realm's store whose members' grace on node death may differ (`reap_grace`), and whose
    /// relays between two of this node's connections may be checked here (`local_routes`).
    fn create_with(
        &self,
        realm: &'static str,
        on_departed: OnDeparted<Reach>,
        reap_grace: Option<ReapGrace>,
        local_routes: bool,
    ) -> Arc<Store<Reach>> {
        let Some(shared) = &self.cluster else {
            return Arc::new(Store::in_memory(on_departed));
        };
        let redis = RedisStore::new(shared.conn.clone(), &shared.cluster, realm);
        let rooms = SharedRooms::new(
            redis,
            realm,
            shared.node.as_str(),
            ClusterLocator::new(realm, shared.link.clone()),
            on_departed,
            reap_grace,
            local_routes,
        );
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
