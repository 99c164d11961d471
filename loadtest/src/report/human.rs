//! The human summary printed at the end of a run.

use std::fmt::Write as _;

use super::*;

impl Report {
    /// The human summary printed at the end of a run.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let w = &mut o;
        let s = &self.settings.common;
        let _ = writeln!(
            w,
            "\n== loadtest {} · {} · {} node(s) · {} process(es) · {:.1}s ==",
            self.scenario,
            match s.encoding {
                crate::proto::Encoding::Json => "json",
                crate::proto::Encoding::Msgpack => "msgpack",
            },
            s.urls.len(),
            self.processes,
            self.wall_s
        );
        if let Some(r) = &self.routing {
            let _ = writeln!(w, "routing        {r}");
        }
        if s.latency_from == crate::cli::LatencyFrom::Scheduled {
            let _ = writeln!(
                w,
                "latency from   the rate schedule (--latency-from scheduled): sends that fell \
                 behind it count their wait"
            );
        }
        let c = &self.connections;
        let _ = writeln!(
            w,
            "connections    {} ok, {} failed, {} reconnects, peak {} open",
            c.ok, c.failed, c.reconnects, c.peak_open
        );
        if c.by_node.len() > 1 {
            let list: Vec<String> = c.by_node.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(w, "sessions/node  {}", list.join(", "));
        }
        let m = &self.messages;
        if m.sent > 0 || m.received_v2o + m.received_o2v > 0 {
            let _ = writeln!(
                w,
                "messages       {} sent ({} re-sent), {} acked, {} unacked, {} refused, received \
                 v→o {} o→v {}{}",
                m.sent,
                m.resent,
                m.acked,
                m.unacked,
                m.refused,
                m.received_v2o,
                m.received_o2v,
                if m.delivered_per_s > 0.0 {
                    format!(", {:.0} delivered/s", m.delivered_per_s)
                } else {
                    String::new()
                }
            );
            let _ = writeln!(
                w,
                "delivery       lost {} (v→o {}, o→v {}), duplicated {}, out of order {}, \
                 redelivered {}, replayed {} · {} conversations",
                m.lost,
                m.lost_v2o,
                m.lost_o2v,
                m.duplicated,
                m.out_of_order,
                m.redelivered,
                m.replayed,
                m.conversations
            );
        }
        if m.participants > 0 {
            let _ = writeln!(
                w,
                "reports        {} of {} participants reported{}, {} conversations one-sided{}",
                m.participants - m.reports_missing,
                m.participants,
                if m.reports_missing > 0 {
                    format!(
                        " ({} missing: loss in their conversations is unknown)",
                        m.reports_missing
                    )
                } else {
                    String::new()
                },
                m.one_sided_conversations,
                if m.unverified > 0 {
                    format!(" ({} acked messages unverified)", m.unverified)
                } else {
                    String::new()
                }
            );
        }
        for (name, label) in [
            ("v2o", "visitor→op"),
            ("o2v", "op→visitor"),
            ("ack", "send→ack"),
            ("connect", "connect"),
            ("welcome", "hello→welcome"),
            ("session", "connect+welcome"),
            ("resume", "resume"),
        ] {
            if let Some(sum) = self.latency_us.get(name).filter(|s| s.count > 0) {
                let _ = writeln!(w, "{label:<15}{}", sum.line());
            }
        }
        if let Some(i) = &self.idle {
            let per = i
                .rss_per_socket_bytes
                .map(|b| format!("{:.2} KiB per socket", b / 1024.0))
                .unwrap_or_else(|| "give --gateway-pid for memory per socket".into());
            let rss = match (i.rss_before_kb, i.rss_after_kb) {
                (Some(b), Some(a)) => format!(" (RSS {b} KiB → {a} KiB)"),
                _ => String::new(),
            };
            let _ = writeln!(
                w,
                "idle           {} of {} sockets held: {per}{rss}",
                i.open_at_sample, i.sockets
            );
        }
        if let Some(st) = &self.storm {
            let _ = writeln!(
                w,
                "storm          {} cut, {} of {} resumed{}, {} not recovered",
                st.cut,
                st.resumed,
                st.visitors,
                st.all_resumed_ms
                    .map(|ms| format!(" in {}", fmt_us(ms * 1000)))
                    .unwrap_or_default(),
                st.not_recovered
            );
        }
        if let Some(r) = &self.ramp {
            for s in &r.steps {
                let _ =
                    writeln!(
                    w,
                    "ramp step      {:>7.0}/s: {} ok, {} failed, connect+welcome p50 {} p99 {}{}",
                    s.rate,
                    s.ok,
                    s.failed,
                    fmt_us(s.session_us.p50),
                    fmt_us(s.session_us.p99),
                    s.stopped_by.as_ref().map(|w| format!("  ← stop: {w}")).unwrap_or_default()
                );
            }
            let _ = writeln!(
                w,
                "ramp           held {} connections/s; {}",
                r.held_rate
                    .map(|r| format!("{r:.0}"))
                    .unwrap_or_else(|| "no".into()),
                r.stopped_by.as_deref().unwrap_or("ran to --duration")
            );
        }
        let g = &self.gateway;
        if let Some(cpu) = g.cpu_us_per_message {
            let _ = writeln!(
                w,
                "gateway CPU    {cpu:.1} µs per delivered message ({:.1}% of a core, {} process(es))",
                g.cpu_percent.unwrap_or(0.0),
                g.pids.len()
            );
        }
        if let Some(cpu) = g.redis_cpu_us_per_message {
            let _ = writeln!(
                w,
                "redis CPU      {cpu:.1} µs per delivered message ({:.1}% of a core)",
                g.redis_cpu_percent.unwrap_or(0.0)
            );
        }
        if let Some(cpu) = g.server_cpu_us_per_message {
            let _ = writeln!(
                w,
                "server CPU     {cpu:.1} µs per delivered message (gateways + redis)"
            );
        }
        if let Some(last) = g.samples.iter().rev().find_map(|s| s.rss_kb) {
            let _ = writeln!(w, "gateway RSS    {last} KiB at the last barrier");
        }
        let _ = writeln!(w, "load tester    {} ms CPU", self.loadtest_cpu_ms);
        if !self.errors.is_empty() {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                w,
                "errors         {} — {}",
                self.errors_total,
                list.join(", ")
            );
        }
        if !self.closes.is_empty() {
            let list: Vec<String> = self
                .closes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(w, "closes         {}", list.join(", "));
        }
        for ch in &self.checks {
            let _ = writeln!(
                w,
                "{} {}: {} (limit {})",
                if ch.pass { "PASS" } else { "FAIL" },
                ch.name,
                ch.actual,
                ch.limit
            );
        }
        let _ = writeln!(
            w,
            "{}",
            if self.pass {
                "result: PASS"
            } else {
                "result: FAIL"
            }
        );
        o
    }
}
