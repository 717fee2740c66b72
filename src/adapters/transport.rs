//! Closing a connection's transport from the server side, even when its send buffer is full.
//!
//! socketioxide's only public way to close a socket, `disconnect()`, queues a disconnect
//! packet first and gives up when the send buffer is full, which is exactly the case of a
//! receiver that stopped reading; the engine socket that holds the buffer is not reachable.
//! What is reachable is the TCP connection underneath: its peer address is in the request
//! the session was opened with (`ConnectInfo`), and shutting that socket down makes the
//! WebSocket task fail on its next read or write, which closes the Engine.IO session, frees
//! its buffer and runs the disconnect handler, all within milliseconds.
//!
//! The descriptor is found by asking each socket descriptor of the process for its peer
//! (`getpeername`): a scan of the descriptor table, done only when a receiver is closed as too
//! slow, never per message. A session that was opened by polling and then upgraded was opened
//! on another connection than the one it uses now; it is not found and closes on its own at
//! the heartbeat timeout (its buffer no longer grows: it is removed from its room at once and
//! nothing more is sent to it).

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use socketioxide::extract::SocketRef;

/// Shuts down the TCP connection `socket`'s session was opened on, if it is a WebSocket. The
/// descriptor scan runs on the blocking pool when there is a runtime (it costs a system call
/// per open descriptor). Returns whether a shutdown was started.
pub fn shut_down(socket: &SocketRef) -> bool {
    if socket.transport_type() != socketioxide::TransportType::Websocket {
        return false;
    }
    let Some(ConnectInfo(peer)) = socket
        .req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .copied()
    else {
        return false;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || {
                let shut = shut_down_peer(peer);
                tracing::debug!(%peer, shut, "slow receiver's connection shut down");
            });
            true
        }
        Err(_) => shut_down_peer(peer),
    }
}

/// Shuts down the process's TCP socket connected to `peer`.
#[cfg(target_os = "linux")]
fn shut_down_peer(peer: SocketAddr) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        if peer_of(fd) == Some(peer) {
            // SAFETY: shutdown(2) only changes the state of the connection behind `fd`; it does
            // not close or invalidate the descriptor, which stays owned by its TcpStream.
            return unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0;
        }
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn shut_down_peer(_peer: SocketAddr) -> bool {
    false
}

/// The peer address of descriptor `fd`, if it is a connected IP socket.
#[cfg(target_os = "linux")]
fn peer_of(fd: libc::c_int) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_storage is a valid value; getpeername writes at most `len`
    // bytes into it and fails harmlessly (ENOTSOCK, ENOTCONN, EBADF) for other descriptors.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let rc = unsafe {
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(&storage as *const _ as *const _) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(&storage as *const _ as *const _) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
        }
        _ => None,
    }
}
