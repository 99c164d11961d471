//! `chat`: operators connect and go active, visitors connect, start conversations and wait
//! for an operator; then visitors send at the total rate for `--duration` while operators
//! answer every message; then sending stops, in-flight messages drain, and every
//! participant reports what it saw.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::Env;
use crate::cli::ChatArgs;
use crate::roles::{operator, visitor, Phase};
use crate::stats::C;

/// The people of a chat-like scenario.
pub struct Cast {
    pub visitors: usize,
    pub operators: usize,
    /// Visitor messages per second, all visitors together.
    pub rate: f64,
}

/// Brings up operators (active) and visitors (with an assigned conversation), then meets
/// the other processes at `connected`.
pub async fn setup(env: &mut Env, cast: &Cast) -> Result<()> {
    let started = Instant::now();
    let ops: Vec<usize> = env.slot.share(cast.operators).collect();
    let vis: Vec<usize> = env.slot.share(cast.visitors).collect();
    warn_about_rate_limits(env, cast);
    env.barrier("baseline").await?;

    env.phase(Phase::Setup, "operators");
    let ctx = env.ctx.clone();
    let n_ops = ops.len() as u64;
    env.spawn_paced(ops, env.connect_rate(), |index| {
        operator::run(
            ctx.clone(),
            operator::Plan {
                index,
                socket: index,
            },
        )
    })
    .await;
    let limit = env.common.setup_timeout;
    // Stop waiting early when every operator's first attempt failed: nothing got through.
    let active_or_hopeless = |s: &crate::stats::Stats| {
        s.get(C::OperatorsActive) >= n_ops
            || (s.get(C::ConnOk) == 0 && s.get(C::ConnFailed) >= n_ops)
    };
    let all_active = env.wait_for(limit, active_or_hopeless).await;
    env.require_some_connection()?;
    if !all_active || env.stats().get(C::OperatorsActive) < n_ops {
        let active = env.stats().get(C::OperatorsActive);
        env.shortfall("operators_not_active", n_ops.saturating_sub(active));
    }
    env.barrier("operators").await?;

    env.ctx.stats.set_phase("visitors");
    // Each visitor sends every `visitors / rate` seconds.
    let period = (cast.rate > 0.0 && cast.visitors > 0)
        .then(|| Duration::from_secs_f64(cast.visitors as f64 / cast.rate));
    let first_socket = cast.operators;
    let n_vis = vis.len() as u64;
    env.spawn_paced(vis, env.connect_rate(), |index| {
        let plan = visitor::Plan {
            index,
            socket: first_socket + index,
            period,
        };
        visitor::run(ctx.clone(), plan)
    })
    .await;
    let left = limit
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(5));
    if !env.wait_for(left, |s| s.get(C::Assigned) >= n_vis).await {
        let assigned = env.stats().get(C::Assigned);
        env.shortfall("visitors_unassigned", n_vis.saturating_sub(assigned));
    }
    env.barrier("connected").await
}

/// Stops sending, waits `--drain`, collects every participant's ledger and closes.
pub async fn wind_down(env: &mut Env, participants: u64) -> Result<()> {
    env.phase(Phase::Stop, "drain");
    tokio::time::sleep(env.common.drain).await;
    env.barrier("drained").await?;
    env.phase(Phase::Snapshot, "snapshot");
    let all = env
        .wait_for(Duration::from_secs(10), |s| {
            s.get(C::Snapshots) >= participants
        })
        .await;
    if !all {
        // Stragglers report when they close or are aborted; whoever still has not is
        // counted as a missing report (which fails the run) in the report.
        eprintln!(
            "loadtest: {} of {participants} participants had not reported after 10 s",
            participants.saturating_sub(env.stats().get(C::Snapshots))
        );
    }
    env.finish().await;
    Ok(())
}

pub async fn run(env: &mut Env, a: &ChatArgs) -> Result<()> {
    let cast = Cast {
        visitors: a.visitors,
        operators: a.operators,
        rate: a.rate,
    };
    setup(env, &cast).await?;
    env.phase(Phase::Run, "chat");
    tokio::time::sleep(env.common.duration).await;
    env.barrier("sent").await?;
    let participants = (env.slot.share_len(a.visitors) + env.slot.share_len(a.operators)) as u64;
    wind_down(env, participants).await
}

/// Operators answer every visitor message, and accept at `--op-pace`: say so when the
/// gateway's default rate limit (20 frames/s, burst 40) will bite.
fn warn_about_rate_limits(env: &Env, cast: &Cast) {
    if cast.operators == 0 {
        env.note("no operators: visitors will wait for an assignment until the setup timeout");
        return;
    }
    let answers = cast.rate / cast.operators as f64;
    if answers > 15.0 {
        env.note(&format!(
            "each operator answers {answers:.0} messages/s; the gateway's default limit is 20 \
             frames/s per connection: start it with GATEWAY_RATE_PER_SEC / GATEWAY_RATE_BURST \
             raised, or add operators"
        ));
    }
    let per_visitor = cast.rate / cast.visitors.max(1) as f64;
    if per_visitor > 15.0 {
        env.note(&format!(
            "each visitor sends {per_visitor:.0} messages/s, near the gateway's default limit"
        ));
    }
    if env.common.op_pace > 0.0 {
        let accept_secs = cast.visitors as f64 / cast.operators as f64 / env.common.op_pace;
        if accept_secs > env.common.setup_timeout.as_secs_f64() / 2.0 {
            env.note(&format!(
                "accepting {} conversations at --op-pace {} per operator takes ~{accept_secs:.0}s; \
                 raise --op-pace (and the gateway's rate limit) or --setup-timeout",
                cast.visitors, env.common.op_pace
            ));
        }
    }
}
