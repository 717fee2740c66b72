//! A WebRTC signalling gateway: one process serving the WebRtcRoom and chatroom Socket.IO
//! protocols to their unmodified clients, on one protocol-neutral room core.
//!
//! Parts (see `DESIGN.md` in the README): [`config`] loads settings; [`endpoints`] serve each
//! listen address; [`adapters`] translate each protocol; [`core`] decides rooms and routing;
//! [`store`] holds room state; [`admin`] serves health and metrics.

pub mod access;
pub mod adapters;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod core;
pub mod endpoints;
pub mod gateway;
pub mod memory;
pub mod reload;
pub mod secret;
pub mod shutdown;
pub mod stats;
pub mod store;
