#!/usr/bin/env python3
"""Summarize `perf script -F tid,ip,sym --inline` output of the gateway under relay load.

Prints (1) the top functions by self time (the sampled leaf frame), (2) the samples grouped
by the part of the gateway they were spent in: each sample is attributed to the innermost
frame (leaf to root) that matches a component rule, so library code (serde_json, malloc,
memcpy) counts toward the component that called it, and (3) cross-cutting totals:
allocation, copying, JSON, kernel by system call.

usage: classify.py perf.txt [messages_relayed]
With the number of messages relayed during the recording, it also prints per-message costs
(µs of CPU per message, assuming the recording covered one saturated core).
"""
import collections
import re
import sys

# (regex on a frame's symbol, component). Checked for every frame from the leaf upward;
# the first frame that matches any rule decides the component.
RULES = [
    (r"tcp_sendmsg|__x64_sys_write|__x64_sys_sendto|__x64_sys_writev|sock_write_iter", "kernel: TCP send (write syscalls)"),
    (r"tcp_recvmsg|__x64_sys_read|__x64_sys_recvfrom|sock_read_iter", "kernel: TCP receive (read syscalls)"),
    (r"epoll_wait|ep_poll|__x64_sys_epoll", "kernel: epoll_wait"),
    (r"futex", "kernel: futex"),
    (r"__x64_sys_|do_syscall_64", "kernel: other system calls"),
    (r"tokio::sync::mpsc", "tokio mpsc channel (socketioxide's per-socket packet queue)"),
    (r"EventFrame|adapters::wire", "adapter: decode the event array (EventFrame::parse, serde_json)"),
    (r"webrtcroom::Envelope|webrtcroom::_::|chatroom::_::|IceReq|OfferReq|AnswerReq", "adapter: decode payload fields (serde_json)"),
    (r"adapters::guard|ConnState::check", "adapter: limits (size, rate)"),
    (r"Inbound<P>::handle", "adapter: entry (rate-limit clock, catch_unwind)"),
    (r"signal_gateway::stats|metrics::|metrics_util|metrics_exporter", "metrics counters (metrics crate)"),
    (r"^tracing|tracing_core|tracing_subscriber", "tracing"),
    (r"signal_gateway::store|signal_gateway::core", "core: routing (store lookup, lock)"),
    (r"socketioxide::socket::Socket<A>::emit|socketioxide::socket::Socket<A>::send|socketioxide_parser_common::ser|serde_json::ser|Serializer", "socketioxide emit: serialize payload, encode packet, enqueue"),
    (r"adapters::deliver", "adapter: deliver (other)"),
    (r"chatroom::present|chatroom::parse|chatroom::nullable", "adapter: decode payload fields (serde_json)"),
    (r"webrtcroom::WebRtcRoom|chatroom::Chatroom|adapters::Inbound|signal_gateway::adapters", "adapter: other"),
    (r"socketioxide_parser_common|socketioxide::parser|socketioxide_core::parser", "socketioxide: decode Socket.IO packet"),
    (r"sock_propagate_packet|EngineIoHandler>::on_message|Client<A>::get_ns|Namespace<A>::get_socket|socketioxide::", "socketioxide: dispatch (namespace, socket lookup)"),
    (r"drop_in_place<engineioxide_core::str::Str>|drop_in_place<tungstenite::protocol::frame::frame::Frame>", "engineioxide/tungstenite: freeing message buffers"),
    (r"engineioxide_core::sid", "engineioxide: socket id parse/compare"),
    (r"engineioxide_core::packet|engineioxide_core::str::Str::slice", "engineioxide: Engine.IO packet parse/encode"),
    (r"set_waker|BiLock|bilock", "tokio-tungstenite: waker registration, split-stream lock"),
    (r"forward_to_handler|FrameCodec::read|WebSocket<Stream>::read|WebSocketStream<T> as futures_core::stream::Stream|Utf8Bytes|apply_mask", "engineioxide/tungstenite: WebSocket read path (framing, unmask, UTF-8 check)"),
    (r"forward_to_socket|FrameCodec::write|WebSocket<Stream>::(write|flush)|poll_flush|Sink", "engineioxide/tungstenite: WebSocket write path (framing, batching)"),
    (r"engineioxide|tungstenite|hyper|axum", "engineioxide/hyper: other"),
    (r"tokio::runtime|tokio::task|tokio::io|mio::", "tokio: scheduler, I/O driver, timers"),
    (r"^\[unknown\]$", None),
]
RULES = [(re.compile(p), c) for p, c in RULES]

ALLOC = re.compile(r"^(malloc|free|realloc|calloc|_int_malloc|_int_free|_int_realloc|cfree|__libc_malloc|__libc_free|malloc_consolidate|unlink_chunk|tcache|mi_|je_|__rust_alloc|__rust_dealloc|__rust_realloc|alloc::alloc::)")
COPY = re.compile(r"memmove|memcpy|memset|memcmp")
JSON = re.compile(r"serde_json")


def samples(path):
    stack = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if stack:
                    yield stack
                stack = []
                continue
            if line.startswith("\t") or line.startswith(" " * 8):
                parts = line.strip().split(" ", 1)
                sym = parts[1] if len(parts) > 1 else "[unknown]"
                sym = re.sub(r"\+0x[0-9a-f]+$", "", sym).replace(" (inlined)", "")
                stack.append(sym)
    if stack:
        yield stack


def main():
    path = sys.argv[1]
    msgs = float(sys.argv[2]) if len(sys.argv) > 2 else None
    total = 0
    leaf = collections.Counter()
    comp = collections.Counter()
    cross = collections.Counter()
    for st in samples(path):
        total += 1
        leaf[st[0]] += 1
        c = "unattributed (truncated stack)"
        for sym in st:
            for rx, name in RULES:
                if rx.search(sym):
                    if name is not None:
                        c = name
                    break
            else:
                continue
            break
        comp[c] += 1
        top = st[0]
        if ALLOC.search(top):
            cross["allocation (malloc/free/realloc, self time)"] += 1
        if COPY.search(top):
            cross["memcpy/memmove/memcmp (self time)"] += 1
        if any(JSON.search(s) for s in st[:6]):
            cross["serde_json (self time, incl. callees within 6 frames)"] += 1
        if top.startswith("[k]") or any(s.startswith(("entry_SYSCALL", "do_syscall_64")) for s in st):
            cross["kernel (any, incl. system calls)"] += 1
    if not total:
        print("no samples")
        return
    def pct(n):
        return 100.0 * n / total
    def per_msg(n):
        return f"  {pct(n) / 100 * 1e6 / msgs:7.3f} µs/msg" if msgs else ""
    print(f"samples: {total}" + (f", messages relayed/s: {msgs:.0f}" if msgs else ""))
    print("\n== top functions by self time")
    for sym, n in leaf.most_common(30):
        print(f"{pct(n):6.2f}%  {sym[:150]}")
    print("\n== by component (innermost matching frame)")
    for name, n in comp.most_common():
        print(f"{pct(n):6.2f}%{per_msg(n)}  {name}")
    print("\n== cross-cutting")
    for name, n in cross.most_common():
        print(f"{pct(n):6.2f}%{per_msg(n)}  {name}")


if __name__ == "__main__":
    main()
