//! Limits on what costs the node without a token's owner having earned it: anonymous visitor
//! sessions per address, conversations started per visitor and per address (a start/close
//! loop would otherwise pile them up in the site's state and the archive), and transcripts
//! (each renders a whole conversation: one at a time per asker, and a few a minute). GCRA
//! limiters from `governor`, keyed; a refusal says how long to wait. The HTTP API's own
//! per-caller limit is in `api/caller.rs`, a connection's frame rate in `ws/conn.rs`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::core::{SiteId, VisitorId};

/// Transcripts one asker may have rendered in a minute.
const TRANSCRIPTS_PER_MINUTE: u32 = 10;

/// The limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbuseLimits {
    /// Anonymous visitor sessions (`POST /v1/visitor/session`) per address and minute.
    pub sessions_per_ip_minute: u32,
    /// Conversations a visitor starts per hour.
    pub starts_per_visitor_hour: u32,
    /// Conversations started from one address per hour (an office shares one).
    pub starts_per_ip_hour: u32,
}

pub struct Abuse {
    sessions: DefaultKeyedRateLimiter<IpAddr>,
    starts_by_visitor: DefaultKeyedRateLimiter<(SiteId, VisitorId)>,
    starts_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    transcripts: DefaultKeyedRateLimiter<String>,
    /// Askers with a transcript being rendered now.
    rendering: Arc<DashMap<String, ()>>,
    clock: DefaultClock,
}

/// Who an address stands for: an IPv4 address itself (a v4-mapped IPv6 one as IPv4), and an
/// IPv6 address's /64, which one client usually holds whole.
pub fn client(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least one")
}

/// `n` an hour, of which a third (at least one) at once.
fn per_hour(n: u32) -> Quota {
    Quota::per_hour(nz(n)).allow_burst(nz(n / 3))
}

impl Abuse {
    pub fn new(l: AbuseLimits) -> Abuse {
        Abuse {
            sessions: RateLimiter::keyed(Quota::per_minute(nz(l.sessions_per_ip_minute))),
            starts_by_visitor: RateLimiter::keyed(per_hour(l.starts_per_visitor_hour)),
            starts_by_ip: RateLimiter::keyed(per_hour(l.starts_per_ip_hour)),
            transcripts: RateLimiter::keyed(
                Quota::per_minute(nz(TRANSCRIPTS_PER_MINUTE)).allow_burst(nz(5)),
            ),
            rendering: Arc::new(DashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn wait(&self, not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
        not_until
            .wait_time_from(self.clock.now())
            .max(Duration::from_secs(1))
    }

    /// One more anonymous session from `ip`, or how long to wait.
    pub fn session(&self, ip: IpAddr) -> Result<(), Duration> {
        self.sessions
            .check_key(&client(ip))
            .map_err(|n| self.wait(n))
    }

    /// One more conversation started by `visitor` (from `ip`, when known), or how long to
    /// wait.
    pub fn start(
        &self,
        ip: Option<IpAddr>,
        site: &SiteId,
        visitor: &VisitorId,
    ) -> Result<(), Duration> {
        if let Some(ip) = ip {
            self.starts_by_ip
                .check_key(&client(ip))
                .map_err(|n| self.wait(n))?;
        }
        self.starts_by_visitor
            .check_key(&(site.clone(), visitor.clone()))
            .map_err(|n| self.wait(n))
    }

    /// A transcript for `asker` (a site and a user, or an API key): at most one at a time and
    /// a few a minute. The slot is held until it drops.
    pub fn transcript(&self, asker: String) -> Result<TranscriptSlot, Duration> {
        if self.rendering.insert(asker.clone(), ()).is_some() {
            return Err(Duration::from_secs(1));
        }
        let slot = TranscriptSlot {
            asker,
            rendering: self.rendering.clone(),
        };
        self.transcripts
            .check_key(&slot.asker)
            .map_err(|n| self.wait(n))?;
        Ok(slot)
    }

    /// Forgets keys that are within their limits again (called every minute).
    pub fn shrink(&self) {
        self.sessions.retain_recent();
        self.starts_by_visitor.retain_recent();
        self.starts_by_ip.retain_recent();
        self.transcripts.retain_recent();
    }
}

/// A transcript being rendered for its asker.
pub struct TranscriptSlot {
    asker: String,
    rendering: Arc<DashMap<String, ()>>,
}

impl Drop for TranscriptSlot {
    fn drop(&mut self) {
        self.rendering.remove(&self.asker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Abuse {
        Abuse::new(AbuseLimits {
            sessions_per_ip_minute: 3,
            starts_per_visitor_hour: 6,
            starts_per_ip_hour: 30,
        })
    }

    #[test]
    fn a_visitor_starting_in_a_loop_is_stopped_and_others_are_not() {
        let a = limits();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let site = SiteId::from("demo");
        let v = VisitorId::from("v1");
        // A third of the hour's six at once.
        assert!(a.start(Some(ip), &site, &v).is_ok());
        assert!(a.start(Some(ip), &site, &v).is_ok());
        let wait = a.start(Some(ip), &site, &v).unwrap_err();
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(600));
        // Another visitor at the same address still may.
        assert!(a.start(Some(ip), &site, &VisitorId::from("v2")).is_ok());
    }

    #[test]
    fn one_transcript_at_a_time_per_asker() {
        let a = limits();
        let first = a.transcript("demo/v1".into()).unwrap();
        assert!(a.transcript("demo/v1".into()).is_err(), "while one renders");
        assert!(a.transcript("demo/v2".into()).is_ok(), "another asker");
        drop(first);
        assert!(a.transcript("demo/v1".into()).is_ok(), "after it is done");
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client(a), client(b));
        assert_ne!(client(a), client("2001:db8:1:3::1".parse().unwrap()));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(client(mapped), "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn sessions_per_address() {
        let a = limits();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..3 {
            assert!(a.session(ip).is_ok());
        }
        assert!(a.session(ip).is_err());
        assert!(a.session("198.51.100.2".parse().unwrap()).is_ok());
    }
}
