//! Delivery accounting: which `seq`s each participant saw, and from that the counts of lost,
//! duplicated, redelivered and out-of-order messages.
//!
//! Everything here is pure and cheap to merge across worker processes. Two facts of the
//! contract make that possible: `seq` is contiguous per conversation, so the set of seqs a
//! participant received is a handful of ranges; and every message stored in a conversation is
//! delivered to every attached participant, so "the peer never received my acked message"
//! shows up as a hole (or a missing tail) in the peer's seq set. A participant therefore
//! reports, per conversation, only its window of entitlement, the holes in it, and the highest
//! seq it had acked; [`tally_loss`] joins those reports by conversation.
//!
//! Client message ids (`cid`) carry the sender, a per-sender counter and the send time, so a
//! receiver can measure delivery latency with no shared state, and can detect the same message
//! stored under two seqs (an idempotency failure that dedup by seq cannot hide).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A set of u64 as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Inserts `x`; returns false when it was already present.
    pub fn insert(&mut self, x: u64) -> bool {
        // First range whose end is >= x - 1 (could absorb x on its right side).
        let i = self
            .ranges
            .partition_point(|&(_, hi)| hi.saturating_add(1) < x);
        if let Some(&(lo, hi)) = self.ranges.get(i) {
            if lo <= x && x <= hi {
                return false;
            }
            if hi.saturating_add(1) == x {
                // Extend right; maybe merge with the next range.
                self.ranges[i].1 = x;
                if let Some(&(nlo, nhi)) = self.ranges.get(i + 1) {
                    if nlo == x + 1 {
                        self.ranges[i].1 = nhi;
                        self.ranges.remove(i + 1);
                    }
                }
                return true;
            }
            if x.saturating_add(1) == lo {
                self.ranges[i].0 = x;
                return true;
            }
        }
        self.ranges.insert(i, (x, x));
        true
    }

    pub fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < x);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= x)
    }

    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    pub fn max(&self) -> Option<u64> {
        self.ranges.last().map(|&(_, hi)| hi)
    }

    /// How many members lie in `lo..=hi`.
    pub fn count_in(&self, lo: u64, hi: u64) -> u64 {
        if lo > hi {
            return 0;
        }
        self.ranges
            .iter()
            .map(|&(a, b)| {
                let (a, b) = (a.max(lo), b.min(hi));
                if a <= b {
                    b - a + 1
                } else {
                    0
                }
            })
            .sum()
    }

    /// The largest `s >= from - 1` such that every value in `from..=s` is present.
    pub fn contiguous_from(&self, from: u64) -> u64 {
        let mut top = from.saturating_sub(1);
        for &(lo, hi) in &self.ranges {
            if hi <= top {
                continue;
            }
            if lo > top + 1 {
                break;
            }
            top = hi;
        }
        top
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// A parsed load-tester cid: `<sender>.<n>.<sent unix µs>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cid<'a> {
    pub sender: &'a str,
    pub n: u64,
    pub sent_us: u64,
}

impl Cid<'_> {
    pub fn format(sender: &str, n: u64, sent_us: u64) -> String {
        format!("{sender}.{n}.{sent_us}")
    }

    pub fn parse(s: &str) -> Option<Cid<'_>> {
        let mut parts = s.rsplitn(3, '.');
        let sent_us = parts.next()?.parse().ok()?;
        let n = parts.next()?.parse().ok()?;
        let sender = parts.next()?;
        Some(Cid { sender, n, sent_us })
    }
}

/// What a received `msg` was, relative to what this participant saw before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrival {
    /// First time this seq was seen: the client processes it.
    pub new: bool,
    /// The same seq again (dropped by the client; the protocol allows it, a healthy run has 0).
    pub redelivered: bool,
    /// A new seq lower than the highest seen.
    pub out_of_order: bool,
    /// A new seq whose cid was already seen under another seq: the user would see it twice.
    pub duplicated: bool,
}

/// One participant's view of one conversation.
#[derive(Debug, Clone, Default)]
pub struct ConvLedger {
    /// First seq this participant is entitled to (it attached after `start - 1`).
    start: Option<u64>,
    received: RangeSet,
    own_acked: RangeSet,
    /// Per sender, the cid counters seen (senders number their messages 1, 2, 3 …).
    cids: HashMap<String, RangeSet>,
}

impl ConvLedger {
    /// Records that the participant attached when the conversation's `last_seq` was
    /// `last_seq`: it must receive everything after it.
    pub fn attach(&mut self, last_seq: u64) {
        let s = last_seq + 1;
        self.start = Some(self.start.map_or(s, |old| old.min(s)));
    }

    pub fn is_attached(&self) -> bool {
        self.start.is_some()
    }

    pub fn on_msg(&mut self, seq: u64, cid: Option<&str>) -> Arrival {
        if self.received.contains(seq) {
            return Arrival {
                redelivered: true,
                ..Arrival::default()
            };
        }
        let out_of_order = self.received.max().is_some_and(|m| seq < m);
        self.received.insert(seq);
        let duplicated = cid.and_then(Cid::parse).is_some_and(|c| {
            !self
                .cids
                .entry(c.sender.to_owned())
                .or_default()
                .insert(c.n)
        });
        Arrival {
            new: true,
            redelivered: false,
            out_of_order,
            duplicated,
        }
    }

    pub fn on_ack(&mut self, seq: u64) {
        self.own_acked.insert(seq);
    }

    /// The cursor to resume from: the last seq before the first hole.
    pub fn cursor(&self) -> u64 {
        let from = self.start.unwrap_or(1);
        self.received.contiguous_from(from)
    }

    pub fn report(&self, conv: &str, role: Role) -> ConvReport {
        let max_known = self
            .received
            .max()
            .unwrap_or(0)
            .max(self.own_acked.max().unwrap_or(0));
        let (start, missing) = match self.start {
            Some(start) if start <= max_known => {
                let window = max_known - start + 1;
                let seen = self.received.count_in(start, max_known);
                // Own messages whose echo did not come back are not the peer's loss.
                let own_unseen = self
                    .own_acked
                    .ranges()
                    .iter()
                    .flat_map(|&(lo, hi)| lo.max(start)..=hi.min(max_known))
                    .filter(|&s| !self.received.contains(s))
                    .count() as u64;
                (start, window - seen - own_unseen)
            }
            Some(start) => (start, 0),
            None => (0, 0),
        };
        ConvReport {
            conv: conv.to_owned(),
            role,
            attached: self.start.is_some(),
            start,
            max_known,
            missing,
            own_max_acked: self.own_acked.max().unwrap_or(0),
            own_acked: self.own_acked.len(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Visitor,
    Operator,
}

/// One participant's end-of-run summary of one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvReport {
    pub conv: String,
    pub role: Role,
    pub attached: bool,
    pub start: u64,
    /// Highest seq this participant knows exists (received or acked to it).
    pub max_known: u64,
    /// Seqs in `start..=max_known` never received, not counting its own messages.
    pub missing: u64,
    pub own_max_acked: u64,
    pub own_acked: u64,
}

/// Loss joined over all participants' reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossTally {
    pub conversations: u64,
    /// Messages an operator should have received but did not (visitor → operator).
    pub lost_v2o: u64,
    /// Messages a visitor should have received but did not (operator → visitor).
    pub lost_o2v: u64,
    /// Conversations where one side had messages acked but no participant of the other side
    /// reported on it (its report is missing, or it never knew it held the conversation):
    /// nobody can say whether those messages arrived, so they are not in `lost_*`.
    pub one_sided: u64,
    /// The acked messages of those conversations, which no receiver vouched for.
    pub unverified: u64,
}

impl LossTally {
    pub fn total(&self) -> u64 {
        self.lost_v2o + self.lost_o2v
    }
}

/// Joins reports by conversation. A receiver loses every hole in its window, plus every seq
/// up to the highest seq any participant had acked that it never learnt of. Loss can only be
/// counted from a receiver's report: a conversation with acked messages and no report from
/// the receiving side is counted as one-sided instead, so a missing report never reads as
/// "nothing lost".
pub fn tally_loss(reports: &[ConvReport]) -> LossTally {
    let mut by_conv: BTreeMap<&str, Vec<&ConvReport>> = BTreeMap::new();
    for r in reports {
        by_conv.entry(r.conv.as_str()).or_default().push(r);
    }
    let mut tally = LossTally::default();
    for parts in by_conv.values() {
        tally.conversations += 1;
        let heard = |role: Role| parts.iter().any(|r| r.attached && r.role == role);
        let acked_by = |role: Role| -> u64 {
            parts
                .iter()
                .filter(|r| r.attached && r.role == role)
                .map(|r| r.own_acked)
                .sum()
        };
        let mut unverified = 0;
        for (sender, receiver) in [
            (Role::Visitor, Role::Operator),
            (Role::Operator, Role::Visitor),
        ] {
            if !heard(receiver) {
                unverified += acked_by(sender);
            }
        }
        if unverified > 0 {
            tally.one_sided += 1;
            tally.unverified += unverified;
        }
        let final_acked = parts.iter().map(|r| r.own_max_acked).max().unwrap_or(0);
        for r in parts.iter().filter(|r| r.attached) {
            let tail_start = r.max_known.max(r.start.saturating_sub(1));
            let lost = r.missing + final_acked.saturating_sub(tail_start);
            match r.role {
                Role::Visitor => tally.lost_o2v += lost,
                Role::Operator => tally.lost_v2o += lost,
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rangeset_merges_and_counts() {
        let mut s = RangeSet::default();
        for x in [5, 1, 3, 2, 9, 4, 10, 7] {
            assert!(s.insert(x), "{x}");
        }
        assert!(!s.insert(3));
        assert_eq!(s.ranges(), &[(1, 5), (7, 7), (9, 10)]);
        s.insert(8);
        s.insert(6);
        assert_eq!(s.ranges(), &[(1, 10)]);
        assert_eq!(s.len(), 10);
        assert!(s.contains(1) && s.contains(10) && !s.contains(0) && !s.contains(11));
        assert_eq!(s.count_in(3, 20), 8);
        assert_eq!(s.count_in(11, 20), 0);
        assert_eq!(s.count_in(5, 4), 0);
    }

    #[test]
    fn rangeset_insert_at_edges_and_u64_max() {
        let mut s = RangeSet::default();
        assert!(s.insert(u64::MAX));
        assert!(s.insert(0));
        assert!(s.insert(u64::MAX - 1));
        assert!(!s.insert(u64::MAX));
        assert_eq!(s.ranges(), &[(0, 0), (u64::MAX - 1, u64::MAX)]);
    }

    #[test]
    fn rangeset_matches_a_naive_set() {
        // Deterministic pseudo-random order; compares with a BTreeSet.
        let mut s = RangeSet::default();
        let mut naive = std::collections::BTreeSet::new();
        let mut x: u64 = 12345;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (x >> 33) % 300;
            assert_eq!(s.insert(v), naive.insert(v));
        }
        assert_eq!(s.len(), naive.len() as u64);
        for v in 0..310 {
            assert_eq!(s.contains(v), naive.contains(&v));
        }
        for w in s.ranges().windows(2) {
            assert!(
                w[0].1 + 1 < w[1].0,
                "ranges must be disjoint and non-adjacent"
            );
        }
    }

    #[test]
    fn contiguous_from_stops_at_first_hole() {
        let mut s = RangeSet::default();
        assert_eq!(s.contiguous_from(1), 0);
        assert_eq!(s.contiguous_from(5), 4);
        for x in [1, 2, 3, 5, 6] {
            s.insert(x);
        }
        assert_eq!(s.contiguous_from(1), 3);
        assert_eq!(s.contiguous_from(5), 6);
        assert_eq!(s.contiguous_from(2), 3);
        assert_eq!(s.contiguous_from(4), 3);
    }

    #[test]
    fn cid_round_trips() {
        let s = Cid::format("v12", 7, 1_700_000_000_123_456);
        assert_eq!(s, "v12.7.1700000000123456");
        assert_eq!(
            Cid::parse(&s),
            Some(Cid {
                sender: "v12",
                n: 7,
                sent_us: 1_700_000_000_123_456
            })
        );
        assert_eq!(Cid::parse("m-1"), None);
        assert_eq!(Cid::parse("a.b.c"), None);
        assert!(s.len() <= 64);
    }

    #[test]
    fn arrivals_classify_redelivery_order_and_duplicates() {
        let mut l = ConvLedger::default();
        l.attach(0);
        let a = l.on_msg(1, None);
        assert!(a.new && !a.out_of_order && !a.redelivered && !a.duplicated);
        assert!(l.on_msg(3, Some("v1.1.10")).new);
        let late = l.on_msg(2, Some("o1.1.11"));
        assert!(late.new && late.out_of_order);
        let again = l.on_msg(3, Some("v1.1.10"));
        assert!(again.redelivered && !again.new);
        // The same message stored a second time under a new seq.
        let dup = l.on_msg(4, Some("v1.1.10"));
        assert!(dup.new && dup.duplicated);
        assert!(!l.on_msg(5, Some("v1.2.12")).duplicated);
        assert_eq!(l.cursor(), 5);
    }

    #[test]
    fn cursor_is_the_last_seq_before_a_hole() {
        let mut l = ConvLedger::default();
        l.attach(4);
        assert_eq!(l.cursor(), 4);
        l.on_msg(5, None);
        l.on_msg(6, None);
        l.on_msg(8, None);
        assert_eq!(l.cursor(), 6);
    }

    #[test]
    fn early_delivery_before_the_attach_answer_is_harmless() {
        // The operator gets "joined" (seq 1) before the accept answer says last_seq = 1.
        let mut l = ConvLedger::default();
        l.on_msg(1, None);
        l.attach(1);
        l.on_msg(2, None);
        let r = l.report("c", Role::Operator);
        assert_eq!((r.start, r.max_known, r.missing), (2, 2, 0));
        assert_eq!(l.cursor(), 2);
    }

    fn visitor_and_operator() -> (ConvLedger, ConvLedger) {
        let (mut v, mut o) = (ConvLedger::default(), ConvLedger::default());
        v.attach(0);
        o.attach(0);
        // seq 1: system joined, to both.
        v.on_msg(1, None);
        o.on_msg(1, None);
        (v, o)
    }

    #[test]
    fn healthy_exchange_has_no_loss() {
        let (mut v, mut o) = visitor_and_operator();
        for seq in 2..=11 {
            let visitor_sent = seq % 2 == 0;
            v.on_msg(seq, None);
            o.on_msg(seq, None);
            if visitor_sent {
                v.on_ack(seq)
            } else {
                o.on_ack(seq)
            }
        }
        let t = tally_loss(&[v.report("c", Role::Visitor), o.report("c", Role::Operator)]);
        assert_eq!(
            t,
            LossTally {
                conversations: 1,
                ..LossTally::default()
            }
        );
    }

    #[test]
    fn holes_and_missing_tails_are_lost_in_the_right_direction() {
        let (mut v, mut o) = visitor_and_operator();
        // Visitor sends 2, 3, 4 (acked); the operator misses 3 and never hears of 4.
        for seq in 2..=4 {
            v.on_ack(seq);
            v.on_msg(seq, None);
        }
        o.on_msg(2, None);
        // Operator sends 5 (acked, own echo seen); the visitor misses it entirely.
        o.on_ack(5);
        o.on_msg(5, None);
        let vr = v.report("c", Role::Visitor);
        let or = o.report("c", Role::Operator);
        // The operator's window 1..=5 lacks 3 and 4; the visitor never heard of 5.
        assert_eq!(or.missing, 2);
        assert_eq!(vr.max_known, 4);
        let t = tally_loss(&[vr, or]);
        assert_eq!((t.lost_v2o, t.lost_o2v), (2, 1));
    }

    #[test]
    fn own_unechoed_messages_are_not_the_peers_loss() {
        let (mut v, o) = visitor_and_operator();
        v.on_ack(2); // acked, but its own echo never came back
        let vr = v.report("c", Role::Visitor);
        assert_eq!(vr.missing, 0);
        let or = o.report("c", Role::Operator);
        let t = tally_loss(&[vr, or]);
        // …but the operator never got it: lost visitor → operator.
        assert_eq!((t.lost_v2o, t.lost_o2v), (1, 0));
    }

    #[test]
    fn unattached_participants_lose_nothing_but_leave_the_conversation_one_sided() {
        let mut v = ConvLedger::default();
        v.attach(0);
        v.on_ack(1);
        v.on_msg(1, None);
        let never = ConvLedger::default().report("c", Role::Operator);
        assert!(!never.attached);
        let t = tally_loss(&[v.report("c", Role::Visitor), never]);
        assert_eq!(t.total(), 0);
        assert_eq!(t.conversations, 1);
        // Nobody on the operator side vouched for the visitor's acked message.
        assert_eq!((t.one_sided, t.unverified), (1, 1));
    }

    #[test]
    fn a_conversation_without_its_receivers_report_is_one_sided_not_lossless() {
        let (mut v, mut o) = visitor_and_operator();
        for seq in 2..=4 {
            v.on_ack(seq);
            v.on_msg(seq, None);
            o.on_msg(seq, None);
        }
        o.on_ack(5);
        o.on_msg(5, None);
        v.on_msg(5, None);
        // The operator's report never arrived: the fate of the visitor's three messages is
        // unknown, and must not read as "none lost".
        let t = tally_loss(&[v.report("c", Role::Visitor)]);
        assert_eq!(t.total(), 0);
        assert_eq!((t.one_sided, t.unverified), (1, 3));
        // And the other way round.
        let t = tally_loss(&[o.report("c", Role::Operator)]);
        assert_eq!((t.one_sided, t.unverified), (1, 1));
        // Both reports: nothing one-sided.
        let t = tally_loss(&[v.report("c", Role::Visitor), o.report("c", Role::Operator)]);
        assert_eq!((t.one_sided, t.unverified, t.total()), (0, 0, 0));
        // A quiet conversation (nothing acked) needs no second report.
        let (quiet, _) = visitor_and_operator();
        assert_eq!(tally_loss(&[quiet.report("q", Role::Visitor)]).one_sided, 0);
    }

    #[test]
    fn a_late_attacher_is_not_blamed_for_history() {
        let mut v = ConvLedger::default();
        v.attach(0);
        for s in 1..=5 {
            v.on_ack(s);
            v.on_msg(s, None);
        }
        let mut o = ConvLedger::default();
        o.attach(5);
        let t = tally_loss(&[v.report("c", Role::Visitor), o.report("c", Role::Operator)]);
        assert_eq!(t.total(), 0);
    }
}
