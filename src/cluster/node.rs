//! A node's identity in the cluster: the id other nodes address it by.
//!
//! The id names the node's heartbeat key, its pub/sub channel and the member sets it holds, so
//! it must be unique among live nodes and safe inside a Redis key (no `:`).

use std::fmt;

/// A node's id: `cluster.node_id` when set, else generated at start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// The configured id, or a fresh random one (a UUID's 32 hex digits).
    pub fn from_config(configured: &str) -> Self {
        if configured.is_empty() {
            Self(uuid::Uuid::new_v4().simple().to_string())
        } else {
            Self(configured.to_owned())
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a configured node id or cluster name cannot be used, if it cannot.
pub fn check_key_part(value: &str) -> Result<(), String> {
    if value.len() > 64 {
        return Err("at most 64 characters".into());
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_' and '.' only)"
        ));
    }
    Ok(())
}
