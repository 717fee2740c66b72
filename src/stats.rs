//! The gateway's counters and gauges, named in one place.
//!
//! Everything that happens to a message or a join is counted here through the `metrics`
//! facade; the admin endpoint renders them for Prometheus. Labels are low-cardinality by
//! construction: protocol names, event names and reason strings from fixed lists, never room
//! names or ids.

/// A join was accepted.
pub fn joined(protocol: &'static str) {
    metrics::counter!("gateway_joins_total", "protocol" => protocol).increment(1);
}

/// A member left a room (by request, by switching rooms or by disconnecting).
pub fn left(protocol: &'static str) {
    metrics::counter!("gateway_leaves_total", "protocol" => protocol).increment(1);
}

/// A join was refused by a rule of the core.
pub fn refused(protocol: &'static str, reason: &'static str) {
    metrics::counter!("gateway_refused_total", "protocol" => protocol, "reason" => reason)
        .increment(1);
}

/// A client sent something the protocol does not allow; it was ignored.
pub fn bad_input(protocol: &'static str, kind: &'static str) {
    metrics::counter!("gateway_bad_input_total", "protocol" => protocol, "kind" => kind)
        .increment(1);
}

/// A message was handed to a receiver's send buffer.
pub fn sent(protocol: &'static str, event: &'static str) {
    metrics::counter!("gateway_sent_total", "protocol" => protocol, "event" => event).increment(1);
}

/// A relayed message reached its receiver's send buffer.
pub fn relayed(protocol: &'static str, event: &'static str) {
    metrics::counter!("gateway_relayed_total", "protocol" => protocol, "event" => event)
        .increment(1);
}

/// A message was not delivered; `reason` says why.
pub fn dropped(protocol: &'static str, reason: &'static str) {
    metrics::counter!("gateway_dropped_total", "protocol" => protocol, "reason" => reason)
        .increment(1);
}

/// A connection opened (`+1`) or closed (`-1`).
pub fn connections(protocol: &'static str, delta: f64) {
    metrics::gauge!("gateway_connections", "protocol" => protocol).increment(delta);
}
