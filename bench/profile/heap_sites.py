#!/usr/bin/env python3
"""Bytes per client by allocation site, from two heaptrack runs with different client counts.

    heap_sites.py PEAKS_SMALL PEAKS_LARGE CLIENT_DIFFERENCE

PEAKS_* are `heaptrack_print --print-peaks 1 --peak-limit 100 --sub-peak-limit 200` outputs
of the same server holding N and N + CLIENT_DIFFERENCE idle clients. Each site's peak in the
small run is subtracted from the large one, so the process's fixed memory (runtime, metrics,
logging) cancels out, and the rest is divided by the difference in clients. Sites are grouped
by the first frame that names a component (the rules in `GROUPS`, innermost frame first).
Prints a Markdown table.
"""

import collections
import re
import sys

UNITS = {"B": 1, "K": 1e3, "M": 1e6, "G": 1e9}
HEADER = re.compile(r"^\s*([\d.]+)([KMGB]?) (peak memory )?consumed over (\d+) calls from")
# Frames of the standard library say nothing about who allocated.
STD = ("library/alloc/", "library/core/", "library/std/", "__rust_alloc", "___rdl_alloc")

# (label, predicate on one frame "function location", predicate on the whole stack)
TASKS = [
    ("tokio task: engineioxide's connection task (upgrade, then the read loop)", "ws_conn_inner"),
    ("tokio task: engineioxide's writer (forward_to_socket)", "transport/ws.rs:170"),
    ("tokio task: engineioxide's heartbeat", "spawn_heartbeat"),
]
GROUPS = [
    ("engineioxide's per-socket queue (tokio mpsc: first block and channel)",
     lambda f, s: ("mpsc/" in f) and "engineioxide-" in s and "socket.rs:258" in s),
    ("tokio channels (other)", lambda f, s: "sync/mpsc/" in f or "sync/watch" in f),
    ("tungstenite's read buffer (ws_read_buffer)",
     lambda f, s: "tungstenite" in f and "from_raw_socket" in f),
    ("tungstenite's write buffer", lambda f, s: "tungstenite" in f and "buffer_frame" in f),
    # hyper's connection (its read and write buffers) is built by `serve_connection`, inlined
    # into the listener's task with no frame of its own; the listener's own state is ~0.1 KB.
    ("hyper's per-connection buffers (serve_connection, inlined) and the listener's own state",
     lambda f, s: " src/endpoints/listener.rs:" in f and s.startswith(f)),
    ("axum: middleware futures of a pending request (boxed, one per layer)",
     lambda f, s: "boxed_clone_sync.rs" in f),
    ("the gateway: rooms (store)", lambda f, s: " src/store/" in f or " src/core/" in f),
    ("the gateway: per-connection state (adapters)", lambda f, s: " src/adapters/" in f),
    ("the gateway: kept request head, listener, admission (endpoints)",
     lambda f, s: " src/endpoints/" in f),
    ("socketioxide: socket, namespace, extensions", lambda f, s: "socketioxide" in f),
    ("engineioxide: session set-up (socket struct, split stream)",
     lambda f, s: "engineioxide" in f),
    ("axum: routing data kept in the request's extensions", lambda f, s: "axum-" in f),
    ("hyper", lambda f, s: "hyper-" in f),
    ("tokio: I/O registration", lambda f, s: "runtime/io/" in f),
    ("allocated in a task's poll, no frame below (inlined)",
     lambda f, s: "runtime/task/core.rs:380" in f),
]


def size(number, unit):
    return float(number) * UNITS.get(unit or "B", 1)


def stacks(path):
    """Yields (bytes, frames) for each backtrace under a peak allocation site."""
    top, current = [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if current:
                    yield current
                if m.group(3):  # a new allocation function: its own frames follow
                    top, current = [], None
                    target = top
                else:
                    current = (size(m.group(1), m.group(2)), list(top))
                    target = current[1]
                continue
            text = line.strip()
            if not text or text.startswith("in /") or "consumed over" in text:
                continue
            if text.startswith("at ") and target:
                target[-1] = f"{target[-1].split(' ', 1)[0]} {text[3:]}"
            elif not text.startswith("at "):
                target = current[1] if current else top
                target.append(text)
    if current:
        yield current


def group(frames):
    frames = [f for f in frames if not any(x in f for x in STD)]
    whole = " | ".join(frames)  # innermost first
    if frames and "runtime/task/core.rs:261" in frames[0]:
        for label, marker in TASKS:
            if marker in whole:
                return label
        if " src/endpoints/" in whole:
            return "tokio task: the listener's per-connection task (hyper's HTTP/1 state machine)"
        return "tokio task: other"
    for frame in frames:
        for label, rule in GROUPS:
            if rule(frame, whole):
                return label
    return "other"


def tally(path):
    totals = collections.Counter()
    for nbytes, frames in stacks(path):
        totals[group(frames)] += nbytes
    return totals


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    small, large, clients = tally(sys.argv[1]), tally(sys.argv[2]), float(sys.argv[3])
    rows = sorted(((k, (large[k] - small[k]) / clients) for k in set(small) | set(large)),
                  key=lambda r: -r[1])
    print("| allocated by | bytes per client |")
    print("|---|---:|")
    for label, per_client in rows:
        if abs(per_client) >= 10:
            print(f"| {label} | {per_client:,.0f} |")
    print(f"| **total** | **{sum(v for _, v in rows):,.0f}** |")


if __name__ == "__main__":
    main()
