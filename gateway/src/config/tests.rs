use super::*;

#[test]
fn every_bad_setting_is_reported_at_once() {
    let raw = RawConfig {
        listen: "nope".into(),
        jwt_secret: Some("short".into()),
        hello_timeout: "soon".into(),
        ping_interval: "25s".into(),
        drain_window: "5s".into(),
        outbound_max_bytes: "10".into(),
        rate_per_sec: "0".into(),
        rate_burst: "40".into(),
        max_conns_per_ip: "10".into(),
        ws_read_buffer: "2048".into(),
        ws_write_buffer: "8192".into(),
        socket_send_buffer: "65536".into(),
        max_frame: "65536".into(),
        max_text: "8000".into(),
        visitor_token_ttl: "24h".into(),
        visitor_renew_within: "7d".into(),
        http_header_timeout: "10s".into(),
        http_body_timeout: "30s".into(),
        max_http_conns_per_ip: "1000".into(),
        shutdown_deadline: "30s".into(),
        sessions_per_ip: "60".into(),
        starts_per_visitor: "30".into(),
        starts_per_ip: "600".into(),
        webhook_disable_after: "24h".into(),
        delivery_lease: "2m".into(),
        max_log: "1000".into(),
        metrics_sites: "20".into(),
        allow_short_timers: "false".into(),
        jwt_algorithm: "RS256".into(),
        redis_url: Some("http://x".into()),
        redis_cluster: "maybe".into(),
        redis_timeout: "2s".into(),
        node_timeout: "1ms".into(),
        retention: "24h".into(),
        ..RawConfig::default()
    };
    let e = Config::from_raw(&raw).unwrap_err();
    let names: Vec<&str> = e.0.iter().map(|l| l.split(':').next().unwrap()).collect();
    for n in [
        "GATEWAY_LISTEN",
        "GATEWAY_JWT_SECRET",
        "GATEWAY_HELLO_TIMEOUT",
        "GATEWAY_OUTBOUND_MAX_BYTES",
        "GATEWAY_RATE_PER_SEC",
        "GATEWAY_REDIS_URL",
        "GATEWAY_REDIS_CLUSTER",
        "GATEWAY_NODE_TIMEOUT",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[test]
fn the_outbound_budget_holds_several_long_messages() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        raw: RawConfig,
    }
    let parse = |args: &[&str]| {
        let mut all = vec!["gateway"];
        all.extend_from_slice(args);
        Config::from_raw(&<Cli as clap::Parser>::parse_from(all).raw)
    };
    let e = parse(&["--outbound-max-bytes", "32768"]).unwrap_err();
    assert!(
        e.0[0].starts_with("GATEWAY_OUTBOUND_MAX_BYTES: 32768 holds fewer"),
        "{e:?}"
    );
    assert!(parse(&["--outbound-max-bytes", "32768", "--max-text", "4000"]).is_ok());
}

#[test]
fn redis_needs_a_shared_token_key() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        raw: RawConfig,
    }
    let raw =
        <Cli as clap::Parser>::parse_from(["gateway", "--redis-url", "redis://127.0.0.1:1"]).raw;
    let e = Config::from_raw(&raw).unwrap_err();
    assert!(
        e.0.iter()
            .any(|l| l.starts_with("GATEWAY_JWT_SECRET: required")),
        "{e:?}"
    );
    let raw = RawConfig {
        jwt_secret: Some("0123456789abcdef0123".into()),
        ..raw
    };
    assert!(Config::from_raw(&raw).unwrap().redis.is_some());
}

#[test]
fn sites_file_is_validated() {
    let ok = parse_sites(
        r#"[{"id":"a","queues":["sales","support"],"settings":{"routing":"offer"}}]"#,
        Bounds::default(),
    )
    .unwrap();
    assert_eq!(ok[0].widget_key, "a");
    assert_eq!(ok[0].queues.len(), 2);
    let bad = parse_sites(
        r#"[{"id":"a","settings":{"routing":"x"}},{"id":"b","settings":{"max_chats":0}}]"#,
        Bounds::default(),
    )
    .unwrap_err();
    assert_eq!(bad.len(), 2);
}
