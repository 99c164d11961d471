//! `/metrics` of a real gateway process (one node, the in-memory engine): what a short chat
//! moves, and a reader stuck behind a full socket. A process of its own, because the metrics
//! recorder is process-wide: in-process nodes of the `it` tests would count each other.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::multinode::{hears, in_queue, operator, say, start, visitor, with};

/// Scrapes until `pred` holds (gauges are refreshed on a timer); meanwhile `keep` send pongs,
/// so that the short ping interval does not cut them for silence.
async fn metrics_until(
    node: &Node,
    keep: &mut [&mut Client],
    what: &str,
    pred: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for c in keep.iter_mut() {
            c.send(json!({"t": "pong"})).await;
        }
        let m = node.metrics().await;
        if pred(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh node exports every metric before anything happened: each name with its help, and
/// every labelled series (roles, close reasons, frame types, error codes, states, timer and
/// engine error kinds) at zero, so that dashboards and alerts see zero, not "no data".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_exports_every_metric_at_zero() {
    let node = Node::start("z", &base_env());
    let m = node.metrics().await;
    for name in gateway::metrics::ALL {
        assert!(
            m.text.contains(&format!("# HELP {name} ")),
            "{name} is not described:\n{}",
            m.text
        );
        assert!(
            !m.all(name).is_empty() || m.find(&format!("{name}_count"), &[]).is_some(),
            "{name} has no series"
        );
    }
    let zero = |name: &str, labels: &[(&str, &str)]| {
        assert_eq!(
            m.find(name, labels),
            Some(0.0),
            "{name} {labels:?}:\n{}",
            m.text
        );
    };
    for role in ["visitor", "operator", "supervisor"] {
        zero("gateway_messages_total", &[("role", role)]);
        zero("gateway_connections", &[("role", role)]);
        zero(
            "gateway_connections_closed_total",
            &[("role", role), ("reason", "too_slow")],
        );
    }
    for t in gateway::metrics::FRAME_TYPES {
        zero("gateway_frames_in_total", &[("type", t)]);
    }
    for code in gateway::metrics::ERROR_CODES {
        zero("gateway_error_frames_total", &[("code", code)]);
    }
    for state in ["queued", "offered", "active"] {
        zero("gateway_conversations", &[("state", state)]);
    }
    for kind in [
        "offer",
        "reassign",
        "inactive",
        "callback",
        "visitor_grace",
        "operator_grace",
    ] {
        zero("gateway_timers_fired_total", &[("kind", kind)]);
    }
    for kind in ["timeout", "connection", "protocol", "conflict"] {
        zero("gateway_engine_errors_total", &[("kind", kind)]);
    }
    zero("gateway_slow_consumer_closes_total", &[]);
    zero("gateway_delivery_latency_seconds_count", &[]);
    drop(node);
}

/// A visitor and an operator chat (3 + 2 messages): connections by role, frames in by type
/// and out, messages by role, the delivery latency histogram and the conversations gauge
/// (the queue sizes) all move by what happened, and the connection gauge goes back down
/// when the visitor leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_short_chat() {
    // The outbound queue gauge is refreshed once a ping interval: a short one.
    let node = Node::start("m", &with(base_env(), &[("GATEWAY_PING_INTERVAL", "1s")]));
    let before = node.metrics().await;
    assert_eq!(
        before.get("gateway_messages_total", &[("role", "visitor")]),
        0.0
    );
    let mut op = operator(&node, "op1", "Olga").await;
    let mut v = visitor(&node, "v1").await;
    let conv = start(&mut v).await;
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    metrics_until(
        &node,
        &mut [&mut op, &mut v],
        "one conversation queued, in the totals and in the site's own gauges",
        |m| {
            m.get("gateway_conversations", &[("state", "queued")]) == 1.0
                && m.find(
                    "gateway_site_conversations",
                    &[("site", "demo"), ("state", "queued")],
                ) == Some(1.0)
                && m.find("gateway_site_connections", &[("site", "demo")]) == Some(2.0)
        },
    )
    .await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    for i in 0..3 {
        let text = format!("visitor {i}");
        say(&mut v, &conv, &format!("v-{i}"), &text).await;
        hears(&mut op, &conv, &text).await;
    }
    for i in 0..2 {
        let text = format!("operator {i}");
        say(&mut op, &conv, &format!("o-{i}"), &text).await;
        hears(&mut v, &conv, &text).await;
    }
    let m = metrics_until(
        &node,
        &mut [&mut op, &mut v],
        "one conversation active, none queued",
        |m| {
            m.get("gateway_conversations", &[("state", "active")]) == 1.0
                && m.get("gateway_conversations", &[("state", "queued")]) == 0.0
        },
    )
    .await;
    let text = &m.text;
    // Connections by role.
    for role in ["visitor", "operator"] {
        assert_eq!(
            m.get("gateway_connections", &[("role", role)]),
            1.0,
            "{role}\n{text}"
        );
        assert_eq!(
            m.get("gateway_connections_opened_total", &[("role", role)]),
            1.0,
            "{role}\n{text}"
        );
    }
    // Messages stored, by author role: exactly what was sent.
    assert_eq!(
        m.get("gateway_messages_total", &[("role", "visitor")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        m.get("gateway_messages_total", &[("role", "operator")]),
        2.0,
        "{text}"
    );
    // Frames in, by type.
    for (t, n) in [
        ("hello", 2.0),
        ("status", 1.0),
        ("start", 1.0),
        ("accept", 1.0),
        ("send", 5.0),
    ] {
        assert_eq!(
            m.get("gateway_frames_in_total", &[("type", t)]),
            n,
            "{t}\n{text}"
        );
    }
    // Frames out: at least the two welcomes, five acks, and each message to both sides.
    let out = m.get("gateway_frames_out_total", &[]);
    assert!(out >= 2.0 + 5.0 + 10.0, "frames out {out}\n{text}");
    // Delivery latency: a histogram with the configured buckets, one observation per
    // delivered message (the five, and the system "joined" message).
    let count = m.get("gateway_delivery_latency_seconds_count", &[]);
    assert!(count >= 6.0, "latency count {count}\n{text}");
    let buckets = m.all("gateway_delivery_latency_seconds_bucket");
    assert!(buckets.len() >= 12, "{buckets:?}");
    assert_eq!(
        m.get("gateway_delivery_latency_seconds_bucket", &[("le", "+Inf")]),
        count
    );
    let mut counts: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(labels, v)| {
            let le = labels
                .trim_start_matches("le=\"")
                .trim_end_matches('"')
                .parse::<f64>()
                .unwrap_or(f64::INFINITY);
            (le, *v)
        })
        .collect();
    counts.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        counts.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets: {counts:?}"
    );
    // Loopback, one node: every delivery within a second.
    assert_eq!(
        m.get("gateway_delivery_latency_seconds_bucket", &[("le", "1")]),
        count,
        "{text}"
    );
    assert!(m
        .find("gateway_delivery_latency_seconds_sum", &[])
        .is_some());
    // Outbound queues: the gauge is exported once a ping interval passed, and readers that
    // keep up leave nothing queued (see the stuck reader below for it moving).
    let m = metrics_until(
        &node,
        &mut [&mut op, &mut v],
        "the outbound queue gauge",
        |m| m.find("gateway_outbound_queued_bytes", &[]).is_some(),
    )
    .await;
    let queued = m.get("gateway_outbound_queued_bytes", &[]);
    assert!(queued < 4096.0, "{queued} bytes queued on average");

    drop(v);
    let m = metrics_until(
        &node,
        &mut [&mut op],
        "the visitor's connection gone",
        |m| m.get("gateway_connections", &[("role", "visitor")]) == 0.0,
    )
    .await;
    assert_eq!(
        m.get(
            "gateway_connections_closed_total",
            &[("role", "visitor"), ("reason", "client")]
        ),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(m.get("gateway_connections", &[("role", "operator")]), 1.0);
}

/// A visitor whose socket does not read (a 4 KiB receive buffer) while the operator floods
/// the conversation. Once the kernel's buffers are full, the node's queue for it shows in
/// `gateway_outbound_queued_bytes`, never above `GATEWAY_OUTBOUND_MAX_BYTES`, and the
/// process' resident memory grows by no more than that budget (plus slack) while it is
/// stuck; flooding on past the budget cuts it with 4008, which the client finds on the
/// wire once it reads, and `gateway_slow_consumer_closes_total` counts it.
///
/// The phases are sized from the kernel: Linux lets a socket's send buffer grow to
/// `tcp_wmem` max (4 MiB here), so the first flood (5 MiB) fills the kernel and leaves
/// 0.8–5 MiB in the node's queue, under the 8 MiB budget; the second (9 MiB) overflows it.
/// The gauge is refreshed once a ping interval (1 s here); the stuck reader sends pongs, which
/// the node reads though it cannot write to it, so it is cut for reading too slowly, not for
/// silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_reader_shows_in_the_outbound_gauge_within_its_budget_then_is_cut_with_4008() {
    const BUDGET: u64 = 8 << 20;
    let wmem_max: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20);
    assert!(
        wmem_max <= 4 << 20,
        "tcp_wmem max {wmem_max}: the phases below assume at most 4 MiB"
    );
    let env = with(
        base_env(),
        &[
            ("GATEWAY_PING_INTERVAL", "1s"),
            ("GATEWAY_OUTBOUND_MAX_BYTES", &BUDGET.to_string()),
            ("GATEWAY_MAX_LOG", "20"),
            ("GATEWAY_RATE_PER_SEC", "100000"),
            ("GATEWAY_RATE_BURST", "100000"),
        ],
    );
    let node = Node::start("m", &env);
    let mut op = operator(&node, "op1", "Olga").await;

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(node.addr).await.unwrap();
    let (slow, _) = tokio_tungstenite::client_async(node.ws_url(), stream)
        .await
        .unwrap();
    let (mut slow_tx, mut slow_rx) = slow.split();
    let send = |v: Value| Message::Text(v.to_string().into());
    slow_tx
        .send(send(
            json!({"t": "hello", "token": token("visitor", "slow", "Slow")}),
        ))
        .await
        .unwrap();
    slow_tx
        .send(send(json!({"t": "start", "rid": 1})))
        .await
        .unwrap();
    let conv = loop {
        let m = tokio::time::timeout(WAIT, slow_rx.next())
            .await
            .expect("the answer to start")
            .unwrap()
            .unwrap();
        let f: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        if f["t"] == "ok" && f["rid"] == 1 {
            break f["conv"]["id"].as_str().unwrap().to_owned();
        }
    };
    // From here on it never reads; it writes a pong now and then, so that it is cut for
    // reading too slowly, not for silence.
    let keepalive = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            if slow_tx.send(send(json!({"t": "pong"}))).await.is_err() {
                return;
            }
        }
    });
    op.recv_until("queued", |f| in_queue(f, &conv)).await;
    assert_eq!(
        op.request(json!({"t": "accept", "conv": conv})).await["t"],
        "ok"
    );
    let baseline_kib = node.rss_kib();
    let text = "z".repeat(8000);
    let msgs = |bytes: u64| bytes.div_ceil(text.len() as u64);
    let mut sent = 0;
    for _ in 0..msgs(5 << 20) {
        say(&mut op, &conv, &format!("o-{sent}"), &text).await;
        sent += 1;
    }
    op.take_backlog();

    // Stuck: the queue shows at the gauge's next refresh (once a ping interval); it and the
    // process' memory stay within the budget at every sample.
    let deadline = tokio::time::Instant::now() + WAIT;
    let queued = loop {
        op.send(json!({"t": "pong"})).await;
        let m = node.metrics().await;
        let queued = m.get("gateway_outbound_queued_bytes", &[]);
        let rss = node.rss_kib();
        assert!(
            queued <= BUDGET as f64,
            "{queued} bytes queued, budget {BUDGET}"
        );
        assert!(
            rss <= baseline_kib + BUDGET / 1024 + 32 * 1024,
            "RSS {rss} KiB, {baseline_kib} KiB before the flood"
        );
        assert_eq!(
            m.get("gateway_slow_consumer_closes_total", &[]),
            0.0,
            "cut before its queue reached the budget:\n{}",
            m.text
        );
        if queued > 0.0 {
            break queued;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck reader's queue never showed:\n{}",
            m.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(queued > 0.0);

    // On past the budget, watching the counter every 128 KiB: cut.
    let mut cut = false;
    for _ in 0..msgs(9 << 20) / 16 {
        for _ in 0..16 {
            say(&mut op, &conv, &format!("o-{sent}"), &text).await;
            sent += 1;
        }
        op.take_backlog();
        if node
            .metrics()
            .await
            .get("gateway_slow_consumer_closes_total", &[])
            == 1.0
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "not cut after {sent} messages:\n{}",
        node.metrics().await.text
    );
    // The client reads at last: what was in flight, then the close frame.
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match slow_rx.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the stream broke before a close frame: {e}"),
                None => panic!("the stream ended without a close frame"),
            }
        }
    })
    .await
    .expect("the slow client's stream ends");
    assert_eq!(code, Some(4008));
    let m = node.metrics().await;
    assert_eq!(
        m.get(
            "gateway_connections_closed_total",
            &[("role", "visitor"), ("reason", "too_slow")]
        ),
        1.0,
        "{}",
        m.text
    );
    keepalive.abort();
    // Its queue is gone; the operator goes on.
    metrics_until(&node, &mut [&mut op], "nothing queued", |m| {
        m.get("gateway_outbound_queued_bytes", &[]) == 0.0
    })
    .await;
    say(&mut op, &conv, "o-last", "still here").await;
}

/// Past `GATEWAY_METRICS_SITES`, sites are summed as `other`: the series stay bounded
/// however many sites a deployment serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_labels_stay_bounded() {
    let node = Node::start("m0", &with(base_env(), &[("GATEWAY_METRICS_SITES", "0")]));
    let mut v = visitor(&node, "v1").await;
    start(&mut v).await;
    let m = metrics_until(&node, &mut [&mut v], "the site summed as other", |m| {
        m.find(
            "gateway_site_conversations",
            &[("site", "other"), ("state", "queued")],
        ) == Some(1.0)
    })
    .await;
    assert!(
        !m.text.contains("site=\"demo\""),
        "no site is labelled by its id:\n{}",
        m.text
    );
}

/// `/metrics` is not public: on the client port it answers only this machine (not a request a
/// proxy forwarded), and with `GATEWAY_METRICS_LISTEN` only that listener serves it.
#[tokio::test]
async fn metrics_are_served_to_this_machine_or_on_their_own_listener_only() {
    let node = Node::start("m1", &base_env());
    let (status, body) = http_get(&node.http("/metrics")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let forwarded = http_request(
        "GET",
        &node.http("/metrics"),
        &[("X-Forwarded-For", "203.0.113.7")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(forwarded.0, 404, "{}", forwarded.1);

    let port = testsupport::free_port();
    let at = format!("127.0.0.1:{port}");
    let own = Node::start("m2", &with(base_env(), &[("GATEWAY_METRICS_LISTEN", &at)]));
    let (status, _) = http_get(&own.http("/metrics")).await.unwrap();
    assert_eq!(status, 404, "not on the client port");
    let (status, body) = http_get(&format!("http://{at}/metrics")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# HELP gateway_connections "), "{body}");
    // And nothing else there.
    let (status, _) = http_get(&format!("http://{at}/v1/openapi.json"))
        .await
        .unwrap();
    assert_eq!(status, 404);
}
