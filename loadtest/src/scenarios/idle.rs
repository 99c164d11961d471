//! `idle`: open `--sockets` authenticated sockets that do nothing but answer pings, sample
//! the gateway's resident memory before and after (give `--gateway-pid`), hold them for
//! `--duration`, and sample again. Memory per socket = (after − before) / sockets open.

use anyhow::Result;

use super::Env;
use crate::cli::{IdleArgs, IdleRole};
use crate::roles::{idler, Phase};
use crate::stats::C;

pub async fn run(env: &mut Env, a: &IdleArgs) -> Result<()> {
    let mine: Vec<usize> = env.slot.share(a.sockets).collect();
    let n = mine.len() as u64;
    let role = match a.role {
        IdleRole::Visitor => "visitor",
        IdleRole::Operator => "operator",
    };
    env.barrier("baseline").await?;
    env.phase(Phase::Setup, "connect");
    let ctx = env.ctx.clone();
    env.spawn_paced(mine, env.connect_rate(), |socket| {
        idler::run(
            ctx.clone(),
            idler::Plan {
                socket,
                role,
                stay: None,
                chat: false,
            },
            |_| {},
        )
    })
    .await;
    let settled = |s: &crate::stats::Stats| s.get(C::ConnOk) + s.get(C::ConnFailed) >= n;
    if !env.wait_for(env.common.setup_timeout, settled).await {
        let done = env.stats().get(C::ConnOk) + env.stats().get(C::ConnFailed);
        env.shortfall("sockets_still_connecting", n.saturating_sub(done));
    }
    env.require_some_connection()?;
    env.ctx.stats.set_phase("settle");
    tokio::time::sleep(a.settle).await;
    env.sums.insert("open_at_sample".into(), env.stats().open());
    env.barrier("connected").await?;

    env.phase(Phase::Run, "hold");
    tokio::time::sleep(env.common.duration).await;
    env.sums.insert("open_at_end".into(), env.stats().open());
    env.barrier("held").await?;
    env.finish().await;
    Ok(())
}
