//! `bench-report RESULTS_DIR`: reads `RESULTS_DIR/raw.jsonl` (one line per scenario run, as
//! printed by the load generator, with `meta.server`, `meta.protocol` and `meta.scenario` set
//! by bench/run.sh) and `RESULTS_DIR/env.json`, and writes `RESULTS_DIR/results.md` (tables
//! with the ratios against the baselines of the same run and the targets) and
//! `RESULTS_DIR/chart.svg` (latency by percentile at a fixed rate, relay throughput, memory).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

const SERVERS: [&str; 3] = ["gateway", "node", "raw"];
const PROTOCOLS: [&str; 2] = ["webrtcroom", "chatroom"];

fn server_name(s: &str, proto: &str) -> String {
    match (s, proto) {
        ("gateway", _) => "gateway".into(),
        ("node", "webrtcroom") => "Node socket.io 2".into(),
        ("node", _) => "Node socket.io 4".into(),
        ("raw", _) => "raw relay".into(),
        _ => s.into(),
    }
}

fn color(s: &str) -> RGBColor {
    match s {
        "gateway" => RGBColor(0xd9, 0x48, 0x01),
        "node" => RGBColor(0x31, 0x82, 0xbd),
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

/// Runs keyed by (protocol, server, scenario).
struct Runs(BTreeMap<(String, String, String), Value>);

impl Runs {
    fn load(path: &Path) -> Runs {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("bench-report: {}: {e}", path.display());
            std::process::exit(1);
        });
        let mut map = BTreeMap::new();
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let m = &v["meta"];
            let key = |k: &str| m[k].as_str().unwrap_or("").to_string();
            // A cell measured more than once (bench/run.sh measures again when other
            // processes took CPU meanwhile): keep the attempt disturbed least, and among
            // equals the later one.
            let k = (key("protocol"), key("server"), key("scenario"));
            let keep = match map.get(&k) {
                Some(old) => disturbance(&v) <= disturbance(old),
                None => true,
            };
            if keep {
                map.insert(k, v);
            }
        }
        Runs(map)
    }

    fn get(&self, proto: &str, server: &str, scenario: &str) -> Option<&Value> {
        self.0
            .get(&(proto.to_string(), server.to_string(), scenario.to_string()))
    }

    fn num(&self, proto: &str, server: &str, scenario: &str, path: &[&str]) -> Option<f64> {
        let mut v = self.get(proto, server, scenario)?;
        for p in path {
            v = v.get(p)?;
        }
        v.as_f64()
    }
}

/// Cores that other processes used while a run measured (0 when unknown).
fn disturbance(v: &Value) -> f64 {
    v["relay"]["other_cpu_util"]
        .as_f64()
        .or_else(|| v["churn"]["other_cpu_util"].as_f64())
        .or_else(|| v["server"]["other_cpu_util_joining"].as_f64())
        .unwrap_or(0.0)
}

fn fmt_num(x: Option<f64>, digits: usize) -> String {
    match x {
        None => "–".into(),
        Some(v) if v.abs() >= 10_000.0 => group(v.round() as i64),
        Some(v) => format!("{v:.digits$}"),
    }
}

fn group(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "–",
    }
}

fn x(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into())
}

fn pct(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0} %", r * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn table(runs: &Runs, proto: &str, out: &mut String) {
    let g = |sc: &str, p: &[&str]| runs.num(proto, "gateway", sc, p);
    let n = |sc: &str, p: &[&str]| runs.num(proto, "node", sc, p);
    let r = |sc: &str, p: &[&str]| runs.num(proto, "raw", sc, p);
    let head = format!(
        "| figure | {} | {} | {} | gateway ÷ Node | gateway ÷ raw | target | |\n|---|---:|---:|---:|---:|---:|---|---|\n",
        server_name("gateway", proto),
        server_name("node", proto),
        server_name("raw", proto)
    );
    out.push_str(&head);
    let mut row = |name: &str,
                   vals: [Option<f64>; 3],
                   digits: usize,
                   vs_node: String,
                   vs_raw: String,
                   target: &str,
                   ok: Option<bool>| {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {vs_node} | {vs_raw} | {target} | {} |",
            fmt_num(vals[0], digits),
            fmt_num(vals[1], digits),
            fmt_num(vals[2], digits),
            mark(ok)
        );
    };

    // Throughput.
    let p = ["relay", "delivered_per_s"];
    let (tg, tn, tr) = (
        g("relay-closed", &p),
        n("relay-closed", &p),
        r("relay-closed", &p),
    );
    let (rn, rr) = (ratio(tg, tn), ratio(tg, tr));
    row(
        "relay, closed loop (200 pairs, window 8): delivered msgs/s",
        [tg, tn, tr],
        0,
        x(rn),
        pct(rr),
        "≥ 10× Node and ≥ 60 % of raw",
        rn.zip(rr).map(|(a, b)| a >= 10.0 && b >= 0.6),
    );
    let cpu = |v: Option<f64>, t: Option<f64>| v.zip(t).map(|(u, t)| u / t * 1e6);
    let cp = ["relay", "server_cpu_util"];
    let (cg, cn, cr) = (
        cpu(g("relay-closed", &cp), tg),
        cpu(n("relay-closed", &cp), tn),
        cpu(r("relay-closed", &cp), tr),
    );
    row(
        "server CPU per relayed msg, closed loop (µs)",
        [cg, cn, cr],
        2,
        x(ratio(cg, cn)),
        x(ratio(cg, cr)),
        "",
        None,
    );
    // Capacity of one fully used core: delivered/s ÷ server CPU. Robust when the server was
    // not saturated (the raw relay: the generator saturates first) or the machine was shared.
    let cap =
        |t: Option<f64>, u: Option<f64>| t.zip(u).filter(|(_, u)| *u > 0.05).map(|(t, u)| t / u);
    let (ag, an, ar) = (
        cap(tg, g("relay-closed", &cp)),
        cap(tn, n("relay-closed", &cp)),
        cap(tr, r("relay-closed", &cp)),
    );
    let (an_r, ar_r) = (ratio(ag, an), ratio(ag, ar));
    row(
        "relay capacity per server CPU-second (delivered/s ÷ server CPU)",
        [ag, an, ar],
        0,
        x(an_r),
        pct(ar_r),
        "same targets, CPU-normalized",
        an_r.zip(ar_r).map(|(a, b)| a >= 10.0 && b >= 0.6),
    );
    let su = ["relay", "server_cpu_util"];
    row(
        "server CPU use during closed loop (cores)",
        [
            g("relay-closed", &su),
            n("relay-closed", &su),
            r("relay-closed", &su),
        ],
        2,
        "".into(),
        "".into(),
        "1.00 = saturated",
        None,
    );
    let lu = ["relay", "loadgen_cpu_util"];
    row(
        "load generator CPU use during closed loop (cores)",
        [
            g("relay-closed", &lu),
            n("relay-closed", &lu),
            r("relay-closed", &lu),
        ],
        2,
        "".into(),
        "".into(),
        "< 1.00: not the bottleneck",
        None,
    );

    // Latency at a fixed rate.
    for (label, key) in [("p50", "p50"), ("p99", "p99"), ("max", "max")] {
        let pp = ["relay", "latency_us", key];
        let ms = |v: Option<f64>| v.map(|u| u / 1000.0);
        let (lg, ln, lr) = (
            ms(g("relay-open", &pp)),
            ms(n("relay-open", &pp)),
            ms(r("relay-open", &pp)),
        );
        let vs_raw = ratio(lg, lr);
        let (target, ok) = if key == "p99" {
            ("≤ 2× raw", vs_raw.map(|v| v <= 2.0))
        } else {
            ("", None)
        };
        row(
            &format!("latency {label} at 5,000 msgs/s, open loop (ms)"),
            [lg, ln, lr],
            3,
            x(ratio(lg, ln)),
            x(vs_raw),
            target,
            ok,
        );
    }
    let sp = ["relay", "sent_per_s"];
    row(
        "open loop: achieved send rate (msgs/s)",
        [
            g("relay-open", &sp),
            n("relay-open", &sp),
            r("relay-open", &sp),
        ],
        0,
        "".into(),
        "".into(),
        "5,000",
        None,
    );

    // Memory.
    let mp = ["server", "rss_per_client_kib"];
    let (mg, mn, mr) = (g("join", &mp), n("join", &mp), r("join", &mp));
    row(
        "RSS per joined idle client, 2,000 clients (KiB)",
        [mg, mn, mr],
        1,
        x(ratio(mg, mn)),
        x(ratio(mg, mr)),
        "",
        None,
    );
    let (kg, kn, kr) = (g("join10k", &mp), n("join10k", &mp), r("join10k", &mp));
    row(
        "RSS per joined idle client, 10,000 clients (KiB)",
        [kg, kn, kr],
        1,
        x(ratio(kg, kn)),
        x(ratio(kg, kr)),
        "≤ 16 KiB",
        kg.map(|v| v <= 16.0),
    );
    let (hg, hn) = (g("join10k-mixed", &mp), n("join10k-mixed", &mp));
    row(
        "RSS per joined idle client, 10,000 clients, half on long-polling (KiB)",
        [hg, hn, None],
        1,
        x(ratio(hg, hn)),
        x(None),
        "≤ 16 KiB",
        hg.map(|v| v <= 16.0),
    );

    // Joins.
    let jp = ["join", "joins_per_s"];
    let (jg, jn, jr) = (g("join", &jp), n("join", &jp), r("join", &jp));
    let jr_ratio = ratio(jg, jr);
    row(
        "joins per second (2,000 clients, rooms of 4, concurrency 100)",
        [jg, jn, jr],
        0,
        x(ratio(jg, jn)),
        pct(jr_ratio),
        "≥ 80 % of raw",
        jr_ratio.map(|v| v >= 0.8),
    );
    let jc = |srv: &str| {
        let u = runs.num(proto, srv, "join", &["server", "cpu_util_joining"])?;
        let rate = runs.num(proto, srv, "join", &["join", "joins_per_s"])?;
        (rate > 0.0).then(|| u / rate * 1e6)
    };
    let (qg, qn, qr) = (jc("gateway"), jc("node"), jc("raw"));
    row(
        "server CPU per join (µs; connect, handshake, join)",
        [qg, qn, qr],
        0,
        x(ratio(qg, qn)),
        x(ratio(qg, qr)),
        "",
        None,
    );
    for key in ["p50", "p99"] {
        let pp = ["join", "latency_us", key];
        let ms = |v: Option<f64>| v.map(|u| u / 1000.0);
        row(
            &format!("connect+join latency {key} (ms)"),
            [ms(g("join", &pp)), ms(n("join", &pp)), ms(r("join", &pp))],
            2,
            "".into(),
            "".into(),
            "",
            None,
        );
    }

    // Correctness under load.
    let sum = |srv: &str, field: &str| -> Option<f64> {
        let mut total = None;
        for sc in ["relay-closed", "relay-open", "relay-polling"] {
            if let Some(v) = runs.num(proto, srv, sc, &["relay", field]) {
                total = Some(total.unwrap_or(0.0) + v);
            }
        }
        if let Some(v) = runs.num(proto, srv, "churn", &["churn", field]) {
            total = Some(total.unwrap_or(0.0) + v);
        }
        total
    };
    for (label, field) in [
        ("messages lost (all relay and churn runs)", "lost"),
        ("messages reordered (all relay and churn runs)", "reordered"),
    ] {
        let v = [sum("gateway", field), sum("node", field), sum("raw", field)];
        row(
            label,
            v,
            0,
            "".into(),
            "".into(),
            "0",
            v[0].map(|g| g == 0.0),
        );
    }

    // Churn and polling.
    let cp = ["churn", "cycles_per_s"];
    let (hg, hn, hr) = (g("churn", &cp), n("churn", &cp), r("churn", &cp));
    row(
        "churn: join + 20-message burst each way + leave, pairs/s (50 slots)",
        [hg, hn, hr],
        0,
        x(ratio(hg, hn)),
        pct(ratio(hg, hr)),
        "",
        None,
    );
    let pp = ["relay", "delivered_per_s"];
    let (pg, pn) = (g("relay-polling", &pp), n("relay-polling", &pp));
    row(
        "relay over long-polling, closed loop (50 pairs, window 4): msgs/s",
        [pg, pn, None],
        0,
        x(ratio(pg, pn)),
        "".into(),
        "",
        None,
    );
}

fn errors_section(runs: &Runs, out: &mut String) {
    out.push_str("\n### Every run\n\n| protocol | server | scenario | clients joined | errors (connect / join timeout / protocol / closed early) | server CPU | load generator CPU | other processes' CPU | loadavg before |\n|---|---|---|---:|---|---:|---:|---:|---|\n");
    for ((proto, server, scenario), v) in &runs.0 {
        let e = &v["errors"];
        let g = |k: &str| e[k].as_u64().unwrap_or(0);
        let srv_cpu = v["relay"]["server_cpu_util"]
            .as_f64()
            .or_else(|| v["churn"]["server_cpu_util"].as_f64())
            .or_else(|| v["server"]["cpu_util_joining"].as_f64());
        let own = v["relay"]["loadgen_cpu_util"]
            .as_f64()
            .or_else(|| v["churn"]["loadgen_cpu_util"].as_f64())
            .or_else(|| v["loadgen_cpu"]["util"].as_f64());
        let others = Some(disturbance(v));
        let _ = writeln!(
            out,
            "| {proto} | {server} | {scenario} | {} | {} / {} / {} / {} | {} | {} | {} | {} |",
            v["join"]["joined"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or("–".into()),
            g("connect"),
            g("join_timeout"),
            g("protocol"),
            g("closed_early"),
            fmt_num(srv_cpu, 2),
            fmt_num(own, 2),
            fmt_num(others, 2),
            v["meta"]["loadavg"].as_str().unwrap_or("–"),
        );
    }
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "bench/results".into()),
    );
    let runs = Runs::load(&dir.join("raw.jsonl"));
    let env: Value = std::fs::read_to_string(dir.join("env.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let mut md = String::new();
    md.push_str("# Benchmark results\n\n");
    md.push_str("Generated by `bench/run.sh` (bench-report); every figure below comes from one run, all servers driven by the same load generator with the same load. See `bench/README.md` for what each figure means.\n\n");
    if let Value::Object(e) = &env {
        md.push_str("| run | |\n|---|---|\n");
        for (k, v) in e {
            let s = match v {
                Value::String(s) => s.clone(),
                o => o.to_string(),
            };
            let _ = writeln!(md, "| {k} | {s} |");
        }
        md.push('\n');
    }
    md.push_str("![latency and throughput](chart.svg)\n\n");
    for proto in PROTOCOLS {
        let title = match proto {
            "webrtcroom" => "WebRtcRoom (socket.io 2.x clients, Engine.IO v3, WebSocket)",
            _ => "chatroom (socket.io-client 4.x, Engine.IO v4, WebSocket)",
        };
        let _ = writeln!(md, "## {title}\n");
        table(&runs, proto, &mut md);
        md.push('\n');
    }
    errors_section(&runs, &mut md);
    std::fs::write(dir.join("results.md"), &md).expect("write results.md");
    if let Err(e) = chart(&runs, &dir.join("chart.svg")) {
        eprintln!("bench-report: chart: {e}");
    }
    println!("{md}");
}

// ---- chart --------------------------------------------------------------------------------

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn chart(runs: &Runs, path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, (1280, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(470);
    let tops = top.split_evenly((1, 2));
    for (area, proto) in tops.iter().zip(PROTOCOLS) {
        latency_panel(runs, area, proto)?;
    }
    let bottoms = bottom.split_evenly((1, 2));
    bar_panel(
        runs,
        &bottoms[0],
        "closed-loop relay, delivered msgs/s (200 pairs, window 8)",
        "relay-closed",
        &["relay", "delivered_per_s"],
        1.0,
        "msgs/s",
    )?;
    let rss_key = if PROTOCOLS
        .iter()
        .any(|p| runs.get(p, "gateway", "join10k").is_some())
    {
        "join10k"
    } else {
        "join"
    };
    let rss_title = if rss_key == "join10k" {
        "RSS per joined idle client, KiB (10,000 clients)"
    } else {
        "RSS per joined idle client, KiB (2,000 clients)"
    };
    bar_panel(
        runs,
        &bottoms[1],
        rss_title,
        rss_key,
        &["server", "rss_per_client_kib"],
        1.0,
        "KiB",
    )?;
    root.present()?;
    Ok(())
}

/// x = 1 / (1 − quantile), on a log axis: 2 = p50, 10 = p90, 100 = p99, ...
fn latency_panel<DB: DrawingBackend>(
    runs: &Runs,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    proto: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut series = Vec::new();
    let mut ymax: f64 = 0.1;
    for s in SERVERS {
        let Some(v) = runs.get(proto, s, "relay-open") else {
            continue;
        };
        let Some(points) = v["relay"]["latency_curve"].as_array() else {
            continue;
        };
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()? / 1000.0)))
            .map(|(q, ms)| ((1.0 / (1.0 - q).max(1e-5)).min(100_000.0), ms))
            .collect();
        for &(_, y) in &pts {
            ymax = ymax.max(y);
        }
        series.push((s, pts));
    }
    let title = format!(
        "{}: latency by percentile at 5,000 msgs/s",
        if proto == "webrtcroom" {
            "WebRtcRoom"
        } else {
            "chatroom"
        }
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (1.0f64..100_000.0f64).log_scale(),
            (0.01f64..ymax * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency, ms (log)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            if p < 99.0 {
                format!("{p:.0}%")
            } else {
                let s = format!("{p:.3}");
                format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()?;
    for (s, pts) in series {
        let c = color(s);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(3)))?
            .label(server_name(s, proto))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn bar_panel<DB: DrawingBackend>(
    runs: &Runs,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    scenario: &str,
    path: &[&str],
    scale: f64,
    unit: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut vals = Vec::new();
    let mut ymax: f64 = 1.0;
    for (pi, proto) in PROTOCOLS.iter().enumerate() {
        for (si, s) in SERVERS.iter().enumerate() {
            if let Some(v) = runs.num(proto, s, scenario, path) {
                let v = v * scale;
                ymax = ymax.max(v);
                vals.push((pi, si, *s, v));
            }
        }
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..8f64, 0f64..ymax * 1.45)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        .y_label_formatter(&|y| {
            if *y >= 10_000.0 {
                format!("{}k", (*y / 1000.0).round())
            } else {
                format!("{y:.0}")
            }
        })
        .draw()?;
    for (pi, si, s, v) in &vals {
        let x0 = 0.5 + *pi as f64 * 4.0 + *si as f64;
        let c = color(s);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x0, 0.0), (x0 + 0.9, *v)],
            c.filled(),
        )))?;
        let label = if *v >= 10_000.0 {
            format!("{:.0}k", v / 1000.0)
        } else {
            format!("{v:.1}")
        };
        chart.draw_series(std::iter::once(Text::new(
            label,
            (x0 + 0.05, *v + ymax * 0.03),
            ("sans-serif", 14),
        )))?;
    }
    for (pi, proto) in PROTOCOLS.iter().enumerate() {
        let name = if *proto == "webrtcroom" {
            "WebRtcRoom"
        } else {
            "chatroom"
        };
        chart.draw_series(std::iter::once(Text::new(
            name.to_string(),
            (0.5 + pi as f64 * 4.0 + 0.6, -ymax * 0.07),
            ("sans-serif", 16),
        )))?;
    }
    for (si, s) in SERVERS.iter().enumerate() {
        let c = color(s);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (0.0, 0.0)],
                c.filled(),
            )))?
            .label(match *s {
                "gateway" => "gateway",
                "node" => "Node socket.io",
                _ => "raw relay",
            })
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        let _ = si;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
