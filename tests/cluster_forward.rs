//! No sticky sessions (issue 10.5), against real parts: a `redis-server` of the test's own,
//! two in-process gateway nodes (each a real listener built by `endpoints::build_with_forwarding`
//! with Socket.IO, session binding, admission and the forwarder), and raw HTTP / WebSocket
//! clients. A session opened on node 1 is used through node 2 only.
//!
//! Addresses: node 1 listens on 127.0.0.1, node 2 on 127.0.0.2, the client connects from
//! 127.0.0.3. Session binding is on (the default), so a forwarded request only reaches its
//! session if node 1 believes the client address node 2 sent for it.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use redis::aio::ConnectionManager;
use serde_json::Value;
use signal_gateway::cluster::liveness::Liveness;
use signal_gateway::cluster::sessions::Directory;
use signal_gateway::cluster::NodeId;
use signal_gateway::config::{EngineConfig, Limits, Tls, TlsMode};
use signal_gateway::endpoints::descriptors::Budget;
use signal_gateway::endpoints::forward::{self, Forwarder};
use signal_gateway::endpoints::{self, source, Endpoint, Timeouts};
use socketioxide::extract::{Data, SocketRef};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const CLUSTER: &str = "gw";
const LISTENER: &str = "webrtcroom";
const CLIENT_IP: [u8; 4] = [127, 0, 0, 3];

/// A redis-server of this test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = StdTcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (tests/run.sh installs it)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = redis.client().get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    return redis;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("redis url")
    }

    async fn conn(&self) -> ConnectionManager {
        self.client()
            .get_connection_manager()
            .await
            .expect("connection manager")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metrics of every node in this test binary (one global recorder).
fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder")
    })
}

/// One gateway node: a listener with the forwarder, registered as live.
struct Node {
    addr: SocketAddr,
    id: &'static str,
    liveness: Liveness,
    directory: Directory,
    task: JoinHandle<()>,
    _shutdown: watch::Sender<bool>,
}

impl Node {
    async fn start(redis: &Redis, id: &'static str, ip: [u8; 4], tls: bool) -> Node {
        metrics();
        let conn = redis.conn().await;
        let node = NodeId::from_config(id);
        let liveness = Liveness::new(
            conn.clone(),
            CLUSTER,
            node.clone(),
            id.into(),
            Duration::from_secs(30),
        );
        liveness.register().await.expect("node registered");
        let directory = Directory::new(conn, CLUSTER, node);
        let listener = TcpListener::bind(SocketAddr::from((ip, 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let forward = Forwarder::new(directory.clone(), LISTENER, "/socket.io")
            .await
            .expect("forwarder");
        let scheme = if tls { "https" } else { "http" };
        forward
            .advertise(&format!("{scheme}://{addr}"))
            .await
            .expect("advertised");
        let mode = if tls {
            TlsMode::SelfSigned
        } else {
            TlsMode::Off
        };
        let endpoint = Endpoint {
            name: LISTENER.into(),
            listen: addr,
            listen_key: "webrtcroom.listen".into(),
            tls: (Tls::Mode(mode), "webrtcroom.tls".into()),
            static_files: None,
            engine: EngineConfig::default(),
            namespaces: vec!["/".into()],
            origins: None,
            limits: Limits::default(),
        };
        let built = endpoints::build_with_forwarding(endpoint, Some(forward), |io| {
            io.ns("/", async |socket: SocketRef| {
                // Tell the client which address this node takes it for.
                let ip = source::peer_ip(&socket.req_parts().extensions)
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                let _ = socket.emit("hello", &serde_json::json!({ "ip": ip }));
                socket.on("echo", async |socket: SocketRef, Data(v): Data<Value>| {
                    let _ = socket.emit("echo", &v);
                });
            });
            Router::new()
        })
        .expect("endpoint built");
        let (shutdown, stopped) = watch::channel(false);
        let timeouts = Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        };
        let task =
            tokio::spawn(built.serve(listener, timeouts, Budget::new("test", 1000), stopped));
        Node {
            addr,
            id,
            liveness,
            directory,
            task,
            _shutdown: shutdown,
        }
    }

    /// Stops serving at once (connections dropped), like a killed process.
    fn kill(&self) {
        self.task.abort();
    }

    /// A graceful stop: the node's heartbeat and advertisements are gone.
    async fn stop(&self) {
        self.kill();
        self.liveness.stop().await.expect("heartbeat dropped");
        self.directory
            .forget_node(self.id)
            .await
            .expect("advertisements forgotten");
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection from the client's address (`from`) to `to`, over TLS when `tls`.
async fn connect_from(from: [u8; 4], to: SocketAddr, tls: bool) -> Box<dyn Io> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind the client address");
    let tcp = socket.connect(to).await.expect("connect");
    if !tls {
        return Box::new(tcp);
    }
    // The nodes' self-signed certificates: the same unverified client the forwarding uses.
    let config = forward::unverified_tls_client().expect("TLS client");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    Box::new(stream)
}

/// One HTTP/1.1 request from `from`; returns the status, headers and body.
async fn http_from(
    from: [u8; 4],
    to: SocketAddr,
    tls: bool,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, String)],
) -> (u16, hyper::HeaderMap, String) {
    let io = connect_from(from, to, tls).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", to.to_string())
        .header("content-type", "text/plain;charset=UTF-8");
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn http(to: SocketAddr, tls: bool, method: &str, path: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http_from(CLIENT_IP, to, tls, method, path, body, &[]).await;
    (status, body)
}

/// The sid in a handshake answer.
fn sid_of(body: &str) -> String {
    let start = body.find("\"sid\":\"").expect("an open packet") + 7;
    let len = body[start..].find('"').expect("a whole sid");
    body[start..start + len].to_owned()
}

/// Polls `sid` on `node` until a payload contains `want` (a poll may return other packets).
async fn poll_until(node: SocketAddr, tls: bool, eio: u8, sid: &str, want: &str) -> String {
    let mut seen = String::new();
    for _ in 0..5 {
        let path = format!("/socket.io/?EIO={eio}&transport=polling&sid={sid}");
        let (status, body) = http(node, tls, "GET", &path, "").await;
        assert_eq!(status, 200, "poll through {node}: {body}");
        seen.push_str(&body);
        if seen.contains(want) {
            return seen;
        }
    }
    panic!("{want} never came back through {node}; got {seen}");
}

/// A v3 polling payload of one packet (`<length>:<packet>`).
fn v3(packet: &str) -> String {
    format!("{}:{packet}", packet.encode_utf16().count())
}

/// Upgrades `sid` on `node` to WebSocket, sends an echo and expects it back.
async fn upgrade_and_echo(node: SocketAddr, eio: u8, sid: &str) {
    let io = connect_from(CLIENT_IP, node, false).await;
    let url = format!("ws://{node}/socket.io/?EIO={eio}&transport=websocket&sid={sid}");
    let (mut ws, res) = tokio_tungstenite::client_async(url, io)
        .await
        .expect("WebSocket upgrade through the other node");
    assert_eq!(res.status().as_u16(), 101);
    ws.send(Message::text("2probe")).await.expect("probe sent");
    assert_eq!(next_text(&mut ws).await, "3probe");
    ws.send(Message::text("5")).await.expect("upgrade sent");
    let event = format!(r#"42["echo",{{"eio":{eio},"via":"websocket"}}]"#);
    ws.send(Message::text(event.clone()))
        .await
        .expect("event sent");
    loop {
        let text = next_text(&mut ws).await;
        if text == event {
            break;
        }
        // Only Engine.IO noise (a ping) may come first.
        assert!(
            text.len() <= 1 || text.starts_with("42[\"hello\""),
            "{text}"
        );
    }
    let _ = ws.close(None).await;
}

/// The next text frame, within 5 s.
async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<Box<dyn Io>>) -> String {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test]
async fn eio4_session_opened_on_one_node_is_served_through_the_other() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], false).await;
    let n2 = Node::start(&redis, "n2", [127, 0, 0, 2], false).await;

    let (status, body) = http(
        n1.addr,
        false,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sid = sid_of(&body);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");

    let (status, body) = http(n2.addr, false, "POST", &path, "40").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // The connect ack, and the address node 1 takes the client for: its own, not node 2's.
    let got = poll_until(n2.addr, false, 4, &sid, "\"ip\":\"127.0.0.3\"").await;
    assert!(got.contains("40{\"sid\":"), "{got:?}");

    let (status, _) = http(n2.addr, false, "POST", &path, r#"42["echo",{"n":1}]"#).await;
    assert_eq!(status, 200);
    poll_until(n2.addr, false, 4, &sid, r#"42["echo",{"n":1}]"#).await;

    upgrade_and_echo(n2.addr, 4, &sid).await;
    let text = metrics().render();
    assert!(
        text.contains(r#"gateway_forwarded_requests_total{listener="webrtcroom",kind="upgrade"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn eio3_session_opened_on_one_node_is_served_through_the_other() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], false).await;
    let n2 = Node::start(&redis, "n2", [127, 0, 0, 2], false).await;

    let (status, body) = http(
        n1.addr,
        false,
        "GET",
        "/socket.io/?EIO=3&transport=polling",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sid = sid_of(&body);
    let path = format!("/socket.io/?EIO=3&transport=polling&sid={sid}");

    let (status, body) = http(n2.addr, false, "POST", &path, &v3(r#"42["echo",{"n":3}]"#)).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    poll_until(n2.addr, false, 3, &sid, r#"42["echo",{"n":3}]"#).await;

    upgrade_and_echo(n2.addr, 3, &sid).await;
}

#[tokio::test]
async fn a_tls_owner_is_reached_over_tls() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], true).await;
    let n2 = Node::start(&redis, "n2", [127, 0, 0, 2], false).await;

    let (status, body) = http(
        n1.addr,
        true,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sid = sid_of(&body);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let (status, body) = http(n2.addr, false, "POST", &path, "40").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    poll_until(n2.addr, false, 4, &sid, "\"ip\":\"127.0.0.3\"").await;
    upgrade_and_echo(n2.addr, 4, &sid).await;
}

#[tokio::test]
async fn forged_forwarding_headers_are_ignored() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], false).await;

    let (status, body) = http(
        n1.addr,
        false,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sid = sid_of(&body);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Another host claims, with a made-up MAC, to forward for the session's client.
    let forged = [
        ("x-gateway-forwarded-client", "127.0.0.3:40000".to_owned()),
        ("x-gateway-forwarded-by", "n2".to_owned()),
        (
            "x-gateway-forwarded-auth",
            format!("{now}.AAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
    ];
    let (status, _, body) =
        http_from([127, 0, 0, 4], n1.addr, false, "POST", &path, "40", &forged).await;
    assert_eq!(status, 400, "the session is bound to its client: {body}");
    assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
    // The real client still has its session.
    let (status, body) = http(n1.addr, false, "POST", &path, "40").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert!(metrics().render().contains(
        r#"gateway_forward_failures_total{listener="webrtcroom",reason="bad_signature"}"#
    ));
}

#[tokio::test]
async fn a_session_of_a_stopped_node_is_unknown() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], false).await;
    let n2 = Node::start(&redis, "n2", [127, 0, 0, 2], false).await;
    let (_, body) = http(
        n1.addr,
        false,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "",
    )
    .await;
    let sid = sid_of(&body);
    n1.stop().await;
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let (status, body) = http(n2.addr, false, "GET", &path, "").await;
    assert_eq!(status, 400);
    assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
    assert!(metrics()
        .render()
        .contains(r#"gateway_forward_failures_total{listener="webrtcroom",reason="owner_gone"}"#));
}

#[tokio::test]
async fn an_owner_that_does_not_answer_is_an_unknown_session() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], false).await;
    let n2 = Node::start(&redis, "n2", [127, 0, 0, 2], false).await;
    let (_, body) = http(
        n1.addr,
        false,
        "GET",
        "/socket.io/?EIO=3&transport=polling",
        "",
    )
    .await;
    let sid = sid_of(&body);
    // Killed: still registered as live with its listener advertised, but nothing answers.
    n1.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let path = format!("/socket.io/?EIO=3&transport=polling&sid={sid}");
    let (status, body) = http(n2.addr, false, "GET", &path, "").await;
    assert_eq!(status, 400);
    assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
    assert!(metrics()
        .render()
        .contains(r#"gateway_forward_failures_total{listener="webrtcroom",reason="unreachable"}"#));
}

#[tokio::test]
async fn the_directory_knows_owners_for_a_while_and_only_live_ones() {
    use signal_gateway::cluster::sessions::{Owner, SESSION_TTL};
    let redis = Redis::start().await;
    let mut dirs = Vec::new();
    let mut lives = Vec::new();
    for id in ["n1", "n2"] {
        let conn = redis.conn().await;
        let node = NodeId::from_config(id);
        let live = Liveness::new(
            conn.clone(),
            CLUSTER,
            node.clone(),
            id.into(),
            Duration::from_secs(30),
        );
        live.register().await.expect("registered");
        lives.push(live);
        dirs.push(Directory::new(conn, CLUSTER, node));
    }
    let (d1, d2) = (&dirs[0], &dirs[1]);
    assert_eq!(
        d1.cluster_secret().await.expect("secret"),
        d2.cluster_secret().await.expect("secret"),
        "one secret for the cluster"
    );
    d1.advertise(LISTENER, "https://10.0.0.1:8443")
        .await
        .expect("advertised");
    d1.register("AAAAAAAAAAAAAAAA").await.expect("registered");
    assert_eq!(
        d1.owner("AAAAAAAAAAAAAAAA", LISTENER)
            .await
            .expect("lookup"),
        Owner::Here
    );
    assert_eq!(
        d2.owner("AAAAAAAAAAAAAAAA", LISTENER)
            .await
            .expect("lookup"),
        Owner::There {
            node: "n1".into(),
            url: "https://10.0.0.1:8443".into()
        }
    );
    assert_eq!(
        d2.owner("BBBBBBBBBBBBBBBB", LISTENER)
            .await
            .expect("lookup"),
        Owner::Nobody
    );
    // Another listener of n1 that it does not advertise.
    assert_eq!(
        d2.owner("AAAAAAAAAAAAAAAA", "chatroom")
            .await
            .expect("lookup"),
        Owner::Gone { node: "n1".into() }
    );
    let mut c = redis.conn().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("gw:sid:AAAAAAAAAAAAAAAA")
        .query_async(&mut c)
        .await
        .expect("PTTL");
    assert!(ttl > 0 && ttl <= SESSION_TTL.as_millis() as i64, "{ttl}");
    // A dead node (no heartbeat) is not forwarded to, even before it is forgotten.
    lives[0].stop().await.expect("stopped");
    assert_eq!(
        d2.owner("AAAAAAAAAAAAAAAA", LISTENER)
            .await
            .expect("lookup"),
        Owner::Gone { node: "n1".into() }
    );
    d2.forget_node("n1").await.expect("forgotten");
    let left: Vec<String> = redis::cmd("HKEYS")
        .arg("gw:listeners:webrtcroom")
        .query_async(&mut c)
        .await
        .expect("HKEYS");
    assert!(left.is_empty(), "{left:?}");
}

/// What forwarding costs a request: `cargo test --release --test cluster_forward -- --ignored
/// --nocapture`. The same POSTs on one kept-alive client connection, to the owner and through
/// the other node; and polling handshakes (which wait for the directory write).
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_forwarding_cost() {
    let redis = Redis::start().await;
    let n1 = Node::start(&redis, "n1", [127, 0, 0, 1], false).await;
    let n2 = Node::start(&redis, "n2", [127, 0, 0, 2], false).await;
    let (_, body) = http(
        n1.addr,
        false,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "",
    )
    .await;
    let sid = sid_of(&body);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    http(n1.addr, false, "POST", &path, "40").await;
    const N: u32 = 2000;
    for (name, to) in [
        ("direct to the owner", n1.addr),
        ("through the other node", n2.addr),
    ] {
        let io = connect_from(CLIENT_IP, to, false).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("HTTP handshake");
        tokio::spawn(conn);
        let started = Instant::now();
        for _ in 0..N {
            let req = hyper::Request::post(path.as_str())
                .header("host", to.to_string())
                .header("content-type", "text/plain;charset=UTF-8")
                .body(Full::new(Bytes::from_static(br#"42["unhandled"]"#)))
                .expect("request");
            let res = sender.send_request(req).await.expect("answer");
            assert_eq!(res.status(), 200);
            res.into_body().collect().await.expect("body");
        }
        println!("POST {name}: {:?} per request", started.elapsed() / N);
    }
    let started = Instant::now();
    for _ in 0..200 {
        let (status, _) = http(
            n1.addr,
            false,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            "",
        )
        .await;
        assert_eq!(status, 200);
    }
    println!(
        "polling handshake with registration: {:?} each",
        started.elapsed() / 200
    );
    let started = Instant::now();
    for _ in 0..200 {
        n1.directory
            .register("CCCCCCCCCCCCCCCC")
            .await
            .expect("registered");
    }
    println!(
        "of which the directory write: {:?} each",
        started.elapsed() / 200
    );
}
