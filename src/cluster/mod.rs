//! Cluster mode: several gateway nodes sharing every room through one Redis (issue 10).
//!
//! On while `cluster.redis_url` is set; with it empty (the default) nothing here runs,
//! connects or costs anything. The parts: the `[cluster]` settings ([`config`]), a node's
//! identity ([`node`]), joining and leaving the cluster and what operators see of it
//! ([`runtime`]), its liveness and the detection of dead nodes ([`liveness`]), the loop that
//! renews it and deals with dead nodes and ended grace periods ([`supervisor`]), the messages
//! between nodes ([`link`]) over the ordered pub/sub transport ([`transport`]), and the session
//! directory that lets any node serve any polling session ([`sessions`], used by
//! `endpoints/forward.rs`). The shared room state is in `store/redis.rs`.
//!
//! Why the `redis` crate (tokio + connection manager) and not `socketioxide-redis`: our
//! adapters deliver with `get_socket` to one socket and bypass socketioxide's rooms and
//! broadcast, which is all socketioxide-redis carries between nodes; it cannot express our
//! atomic rules (capacity, unique names, rebind, grace expiry), knows nothing of node
//! liveness, and, like socket.io's Redis adapter, needs sticky sessions for long-polling. The
//! `redis` crate gives us Lua scripts (one atomic step per rule), a self-reconnecting
//! multiplexed connection for commands and a dedicated pub/sub connection, on the tokio
//! runtime we already run; `fred` would do too but brings a larger dependency tree and its
//! own reconnect policy we would have to bend to ours.

pub mod config;
pub mod link;
pub mod liveness;
pub mod node;
pub mod runtime;
pub mod sessions;
pub mod supervisor;
pub mod transport;

pub use config::ClusterConfig;
pub use node::NodeId;
