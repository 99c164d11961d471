//! `reconnect-storm`: visitors and operators chat (optionally), then every visitor's socket
//! is cut at once; while they are away each operator writes `--missed` messages into each
//! of its conversations; then every visitor reconnects at once with `hello` + cursors. A
//! visitor has resumed when it holds every seq up to the conversation's `last_seq` from
//! `welcome`. Losses, duplicates and redeliveries of the replay are counted by the same
//! ledgers as in `chat`; the time until the last visitor resumed is the headline number.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::chat::{setup, wind_down, Cast};
use super::Env;
use crate::cli::StormArgs;
use crate::roles::Phase;
use crate::stats::C;

pub async fn run(env: &mut Env, a: &StormArgs) -> Result<()> {
    let cast = Cast {
        visitors: a.visitors,
        operators: a.operators,
        rate: a.rate,
    };
    setup(env, &cast).await?;
    let n_vis = env.slot.share_len(a.visitors) as u64;
    let n_ops = env.slot.share_len(a.operators) as u64;

    if a.rate > 0.0 && !a.chat.is_zero() {
        env.phase(Phase::Run, "chat");
        tokio::time::sleep(a.chat).await;
    }
    env.barrier("cut").await?;
    env.phase(Phase::Cut, "cut");
    if !env
        .wait_for(Duration::from_secs(10), |s| s.get(C::Cut) >= n_vis)
        .await
    {
        let cut = env.stats().get(C::Cut);
        env.shortfall("visitors_not_cut", n_vis.saturating_sub(cut));
    }
    env.barrier("away").await?;

    env.phase(Phase::Push, "push");
    if !env
        .wait_for(env.common.setup_timeout, |s| s.get(C::PushDone) >= n_ops)
        .await
    {
        let done = env.stats().get(C::PushDone);
        env.shortfall("operators_push_unfinished", n_ops.saturating_sub(done));
    }
    env.barrier("pushed").await?;

    let storm = Instant::now();
    env.phase(Phase::Resume, "resume");
    let all = env
        .wait_for(env.common.duration, |s| s.get(C::Resumed) >= n_vis)
        .await;
    let took = storm.elapsed().as_millis() as u64;
    let resumed = env.stats().get(C::Resumed);
    if all {
        env.maxes.insert("all_resumed_ms".into(), took);
    } else {
        env.shortfall("visitors_not_resumed", n_vis.saturating_sub(resumed));
        env.maxes.insert("all_resumed_ms".into(), u64::MAX);
    }
    env.sums.insert("visitors_resumed".into(), resumed);
    env.barrier("resumed").await?;

    if a.rate > 0.0 && !a.chat.is_zero() {
        env.ctx.stats.set_phase("chat");
        tokio::time::sleep(a.chat).await;
    }
    wind_down(env, n_vis + n_ops).await
}
