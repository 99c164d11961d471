use super::*;
use crate::ledger::{ConvLedger, Role};
use crate::stats::Stats;
use clap::Parser;

fn cli(args: &[&str]) -> Cli {
    let mut all = vec!["loadtest"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap()
}

/// A chat outcome: one conversation, visitor sent 2 and 4, operator answered 3 (and 5,
/// which the visitor never got when `lose_one`).
fn chat_outcome(lose_one: bool, v2o_us: u64) -> Outcome {
    let stats = Stats::default();
    let (mut v, mut o) = (ConvLedger::default(), ConvLedger::default());
    v.attach(0);
    o.attach(0);
    for seq in 1..=5 {
        let by_visitor = seq % 2 == 0;
        if by_visitor {
            v.on_ack(seq);
            stats.inc(C::RecvV2o);
            stats.record_us(H::V2o, v2o_us);
        } else if seq > 1 {
            o.on_ack(seq);
            stats.inc(C::RecvO2v);
            stats.record_us(H::O2v, 500);
        }
        o.on_msg(seq, None);
        if !(lose_one && seq == 5) {
            v.on_msg(seq, None);
        }
    }
    // Both participants reported.
    stats.add(C::Snapshots, 2);
    Outcome {
        stats: stats.snapshot(),
        convs: vec![
            v.report("c1", Role::Visitor),
            o.report("c1", Role::Operator),
        ],
        processes: 1,
        ..Outcome::default()
    }
}

#[test]
fn a_healthy_chat_passes_its_thresholds() {
    let cli = cli(&[
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
        "--max-p99",
        "5ms",
        "--max-lost",
        "0",
        "--max-dup",
        "0",
    ]);
    let r = build(
        &cli,
        "t",
        chat_outcome(false, 900),
        &[],
        Duration::from_secs(3),
    );
    assert!(r.pass, "{}", r.human());
    assert_eq!(r.messages.lost, 0);
    assert_eq!(r.checks.len(), 6);
    let text = r.human();
    assert!(text.contains("result: PASS"), "{text}");
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["scenario"], "chat");
    assert_eq!(json["messages"]["lost"], 0);
    assert!(json["latency_us"]["v2o"]["p99"].as_u64().unwrap() >= 899);
    assert!(json["settings"].get("secret").is_none());
}

#[test]
fn loss_and_latency_fail_the_run() {
    let cli = cli(&[
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
        "--max-lost",
        "0",
    ]);
    let r = build(
        &cli,
        "t",
        chat_outcome(true, 900),
        &[],
        Duration::from_secs(3),
    );
    assert!(!r.pass);
    assert_eq!((r.messages.lost_o2v, r.messages.lost_v2o), (1, 0));
    assert!(
        r.human().contains("FAIL lost: 1 (limit 0)"),
        "{}",
        r.human()
    );

    let cli = super::tests::cli(&[
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
        "--max-p99",
        "5ms",
    ]);
    let r = build(
        &cli,
        "t",
        chat_outcome(false, 7_000),
        &[],
        Duration::from_secs(3),
    );
    assert!(!r.pass);
    // Without thresholds, only the sanity check applies.
    let cli = super::tests::cli(&["chat", "--visitors", "1", "--operators", "1"]);
    assert!(build(&cli, "t", chat_outcome(true, 7_000), &[], Duration::ZERO).pass);
}

#[test]
fn a_chat_that_delivered_nothing_fails() {
    let cli = cli(&["chat"]);
    let empty = Outcome {
        processes: 1,
        ..Outcome::default()
    };
    let r = build(&cli, "t", empty, &[], Duration::from_secs(1));
    assert!(!r.pass);
}

#[test]
fn a_missing_operator_report_fails_the_run_instead_of_hiding_its_loss() {
    // The operator's task never reported (aborted, or its worker died): its conversation
    // shows no v→o loss, but the run must not pass as if everything had been checked.
    let cli = cli(&[
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
        "--max-lost",
        "0",
    ]);
    let mut outcome = chat_outcome(false, 900);
    outcome.convs.retain(|r| r.role == Role::Visitor);
    outcome.stats.counters.insert(C::Snapshots.name().into(), 1);
    let r = build(&cli, "t", outcome, &[], Duration::from_secs(3));
    let text = r.human();
    assert!(!r.pass, "{text}");
    assert!(text.contains("1 of 2 participants reported"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["messages"]["reports_missing"], 1, "{json:#}");
    assert_eq!(json["messages"]["one_sided_conversations"], 1, "{json:#}");
    // The opt-out keeps the numbers but not the failure.
    let cli = super::tests::cli(&[
        "--allow-missing-reports",
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
    ]);
    let mut outcome = chat_outcome(false, 900);
    outcome.convs.retain(|r| r.role == Role::Visitor);
    outcome.stats.counters.insert(C::Snapshots.name().into(), 1);
    let r = build(&cli, "t", outcome, &[], Duration::from_secs(3));
    assert!(r.pass, "{}", r.human());
    assert_eq!(r.messages.reports_missing, 1);
}

#[test]
fn sends_never_acked_fail_a_chat_unless_allowed() {
    // A gateway that silently drops a send: no ack, no error, and so no loss either
    // (the message was never stored). It is counted when the sender's task ends.
    let with_unacked = || {
        let mut o = chat_outcome(false, 900);
        o.stats.counters.insert("sent".into(), 5);
        o.stats.counters.insert("acked".into(), 3);
        o.stats.counters.insert("unacked".into(), 1);
        o.stats.counters.insert("send_refused".into(), 1);
        o.stats.errors.insert("send:too_large".into(), 1);
        o
    };
    let cli = cli(&["chat", "--visitors", "1", "--operators", "1"]);
    let r = build(&cli, "t", with_unacked(), &[], Duration::from_secs(3));
    let text = r.human();
    assert!(!r.pass, "{text}");
    assert!(text.contains("1 unacked, 1 refused"), "{text}");
    assert!(text.contains("FAIL unacked: 1 (limit 0)"), "{text}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["messages"]["unacked"], 1, "{json:#}");
    assert_eq!(json["messages"]["refused"], 1, "{json:#}");
    let cli = super::tests::cli(&[
        "--max-unacked",
        "1",
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
    ]);
    assert!(build(&cli, "t", with_unacked(), &[], Duration::ZERO).pass);
    // Scenarios that send nothing have no default limit.
    let cli = super::tests::cli(&["idle", "--sockets", "0"]);
    let idle = Outcome {
        stats: with_unacked().stats,
        processes: 1,
        ..Outcome::default()
    };
    let r = build(&cli, "t", idle, &[], Duration::ZERO);
    assert!(
        r.checks.iter().all(|c| c.name != "unacked"),
        "{}",
        r.human()
    );
}

#[test]
fn a_dead_worker_fails_the_run() {
    // Two workers asked for, one result: the other's sockets and reports are gone.
    let cli = cli(&["--workers", "2", "idle", "--sockets", "10"]);
    let mut stats = Stats::default().snapshot();
    stats.errors.insert("worker:died".into(), 1);
    let outcome = Outcome {
        stats,
        sums: BTreeMap::from([("open_at_sample".into(), 10)]),
        processes: 1,
        ..Outcome::default()
    };
    let r = build(&cli, "t", outcome, &[], Duration::from_secs(2));
    let text = r.human();
    assert!(!r.pass, "{text}");
    assert!(text.contains("FAIL worker processes"), "{text}");
    // Both workers reported: no failure.
    let both = Outcome {
        sums: BTreeMap::from([("open_at_sample".into(), 10)]),
        processes: 2,
        ..Outcome::default()
    };
    assert!(build(&cli, "t", both, &[], Duration::ZERO).pass);
}

#[test]
fn the_latency_origin_is_in_the_settings_and_said_when_not_the_default() {
    let plain = cli(&["chat", "--visitors", "1", "--operators", "1"]);
    let r = build(&plain, "t", chat_outcome(false, 900), &[], Duration::ZERO);
    assert_eq!(
        serde_json::to_value(&r).unwrap()["settings"]["latency_from"],
        "sent"
    );
    assert!(!r.human().contains("latency from"), "{}", r.human());
    let sched = cli(&[
        "--latency-from",
        "scheduled",
        "chat",
        "--visitors",
        "1",
        "--operators",
        "1",
    ]);
    let r = build(&sched, "t", chat_outcome(false, 900), &[], Duration::ZERO);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["settings"]["latency_from"], "scheduled");
    assert!(
        r.human().contains("latency from   the rate schedule"),
        "{}",
        r.human()
    );
}

#[test]
fn idle_memory_per_socket_comes_from_the_barrier_samples() {
    let cli = cli(&["idle", "--sockets", "1000"]);
    let samples = vec![
        GatewaySample {
            at: "baseline".into(),
            rss_kb: Some(10_000),
            cpu_ms: Some(1),
            redis_cpu_ms: None,
            elapsed_ms: 0,
        },
        GatewaySample {
            at: "connected".into(),
            rss_kb: Some(17_000),
            cpu_ms: Some(90),
            redis_cpu_ms: None,
            elapsed_ms: 900,
        },
    ];
    let outcome = Outcome {
        sums: BTreeMap::from([("open_at_sample".into(), 1000)]),
        processes: 1,
        ..Outcome::default()
    };
    let r = build(&cli, "t", outcome, &samples, Duration::from_secs(2));
    let idle = r.idle.as_ref().unwrap();
    assert_eq!(idle.rss_per_socket_bytes, Some(7168.0));
    assert!(r.pass);
    assert!(r.human().contains("7.00 KiB per socket"), "{}", r.human());
}
