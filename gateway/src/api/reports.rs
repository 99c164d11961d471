//! Reports ("Итоги"): conversations of a range grouped by day, hour, operator, queue, outcome
//! or tag, with answered / missed / abandoned counts and percentiles of first response, wait
//! and duration; and per operator, their conversations and their online and active time.
//!
//! Computed from the archive's figures of each conversation in the range (created in it);
//! days and hours are in the caller's `utc_offset`, and every day or hour of the range has a
//! row, empty or not, so that a chart has no holes.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::{json, Api, Need, Params, Problem};
use crate::archive::{OperatorRecord, ReportQuery, ReportRow};
use crate::clock::now_ms;
use crate::service::Engine;

const DAY_MS: u64 = 24 * 3600 * 1000;
const HOUR_MS: u64 = 3600 * 1000;
/// The most rows a day or hour report fills in.
const MAX_BUCKETS: u64 = 800;

/// The 50th and 90th percentiles (nearest rank) of a figure; `null` without data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p90: Option<u64>,
}

impl Percentiles {
    fn of(mut v: Vec<u64>) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            p50: Some(at(0.5)),
            p90: Some(at(0.9)),
        }
    }
}

/// One row of a summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct SummaryRow {
    /// The day (`YYYY-MM-DD`), hour (`YYYY-MM-DDTHH`), operator, queue, outcome or tag; `""`
    /// for conversations without one (no operator, no outcome).
    pub key: String,
    pub started: u64,
    /// An operator wrote at least once.
    pub answered: u64,
    /// Ended without any operator message.
    pub missed: u64,
    /// The visitor left while it waited.
    pub abandoned: u64,
    pub closed: u64,
    pub messages: u64,
    /// From the visitor's first message to the first operator message.
    pub first_response_ms: Percentiles,
    /// From the start to an operator taking it.
    pub wait_ms: Percentiles,
    /// From the start to the close.
    pub duration_ms: Percentiles,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    pub from: u64,
    pub to: u64,
    pub group_by: String,
    pub rows: Vec<SummaryRow>,
    /// Every conversation of the range once (a conversation with two tags is in two rows).
    pub totals: SummaryRow,
}

fn summarise(key: String, rows: &[&ReportRow]) -> SummaryRow {
    let figure = |f: fn(&ReportRow) -> Option<u64>| {
        Percentiles::of(rows.iter().filter_map(|r| f(r)).collect())
    };
    SummaryRow {
        key,
        started: rows.len() as u64,
        answered: rows.iter().filter(|r| r.answered).count() as u64,
        missed: rows.iter().filter(|r| r.closed && !r.answered).count() as u64,
        abandoned: rows.iter().filter(|r| r.abandoned).count() as u64,
        closed: rows.iter().filter(|r| r.closed).count() as u64,
        messages: rows.iter().map(|r| r.messages).sum(),
        first_response_ms: figure(|r| r.first_response_ms),
        wait_ms: figure(|r| r.wait_ms),
        duration_ms: figure(|r| r.duration_ms),
    }
}

/// The range and filters every report takes.
struct Range {
    q: ReportQuery,
    offset_ms: i64,
}

fn range(p: &mut Params) -> Range {
    let now = now_ms();
    let to = p.number("to").unwrap_or(now);
    let from = p.number("from").unwrap_or(to.saturating_sub(7 * DAY_MS));
    if from >= to {
        p.reject("from", "must be before to");
    }
    let offset_ms = match p.text("utc_offset", 6) {
        Some(s) => match parse_offset(&s) {
            Some(o) => o,
            None => {
                p.reject("utc_offset", "like +03:00 or -05:30");
                0
            }
        },
        None => 0,
    };
    Range {
        q: ReportQuery {
            from,
            to,
            queue: p.text("queue", 128),
            operator: p.text("operator", 128),
        },
        offset_ms,
    }
}

/// `+HH:MM` / `-HH:MM` (up to ±14:00) in ms.
fn parse_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' | b' ' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && h * 60 + m <= 14 * 60).then_some(sign * (h * 60 + m) * 60_000)
}

/// `YYYY-MM-DD` (and `THH`) of a local time.
fn bucket_key(ms: u64, offset_ms: i64, hourly: bool) -> String {
    let local = (ms as i64 + offset_ms).max(0) as u64;
    let text = crate::transcript::iso(local);
    if hourly {
        format!("{}T{}", &text[..10], &text[11..13])
    } else {
        text[..10].to_owned()
    }
}

/// Conversations of a range, grouped, with counts and percentiles.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/reports/summary",
    tag = "reports",
    params(
        ("site" = String, Path),
        ("from" = Option<u64>, Query, description = "Conversations created at or after (Unix ms; default: 7 days before to)"),
        ("to" = Option<u64>, Query, description = "… and before (Unix ms; default: now)"),
        ("queue" = Option<String>, Query),
        ("operator" = Option<String>, Query),
        ("group_by" = Option<String>, Query, description = "day (default), hour, operator, queue, outcome or tag"),
        ("utc_offset" = Option<String>, Query, description = "Days and hours in this offset, like +03:00 (default +00:00)"),
    ),
    responses(
        (status = 200, body = Summary),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn summary<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::ReadAll).await?;
    let mut p = Params::new(raw.as_deref());
    let r = range(&mut p);
    let group_by = p
        .one_of(
            "group_by",
            &["day", "hour", "operator", "queue", "outcome", "tag"],
        )
        .unwrap_or_else(|| "day".to_owned());
    let step = match group_by.as_str() {
        "day" => Some(DAY_MS),
        "hour" => Some(HOUR_MS),
        _ => None,
    };
    if let Some(step) = step {
        if r.q.to.saturating_sub(r.q.from) / step > MAX_BUCKETS {
            p.reject("from", &format!("at most {MAX_BUCKETS} rows by {group_by}"));
        }
    }
    p.done()?;
    let archive = api.gw.archive_or_refuse()?;
    let all = archive.report_rows(&who.site, &r.q).await?;
    let mut groups: BTreeMap<String, Vec<&ReportRow>> = BTreeMap::new();
    if let Some(step) = step {
        // Every bucket of the range, in order.
        let mut t = r.q.from;
        while t < r.q.to {
            groups
                .entry(bucket_key(t, r.offset_ms, step == HOUR_MS))
                .or_default();
            t += step;
        }
        groups
            .entry(bucket_key(r.q.to - 1, r.offset_ms, step == HOUR_MS))
            .or_default();
    }
    for row in &all {
        let keys: Vec<String> = match group_by.as_str() {
            "day" => vec![bucket_key(row.created_at, r.offset_ms, false)],
            "hour" => vec![bucket_key(row.created_at, r.offset_ms, true)],
            "operator" => vec![row.operator.clone().unwrap_or_default()],
            "queue" => vec![row.queue.clone()],
            "outcome" => vec![row.outcome.clone().unwrap_or_default()],
            _ => row.tags.clone(),
        };
        for k in keys {
            groups.entry(k).or_default().push(row);
        }
    }
    let rows = groups
        .into_iter()
        .map(|(k, rows)| summarise(k, &rows))
        .collect();
    let everything: Vec<&ReportRow> = all.iter().collect();
    Ok(json(
        StatusCode::OK,
        &Summary {
            from: r.q.from,
            to: r.q.to,
            group_by,
            rows,
            totals: summarise(String::new(), &everything),
        },
    ))
}

/// One operator's figures over a range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct OperatorRow {
    pub operator: String,
    pub name: String,
    /// Conversations they held last, started in the range.
    pub conversations: u64,
    pub answered: u64,
    /// Connected, in the range.
    pub online_ms: u64,
    /// Connected with status `active` (taking conversations), in the range.
    pub active_ms: u64,
    pub first_response_ms: Percentiles,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorsReport {
    pub from: u64,
    pub to: u64,
    pub operators: Vec<OperatorRow>,
}

/// Online and active time of each operator in `[from, to)` from their status changes (the
/// first of each operator may precede the range: it says where they stood at its start).
fn presence_times(
    records: &[OperatorRecord],
    from: u64,
    to: u64,
) -> BTreeMap<String, (String, u64, u64)> {
    let mut out: BTreeMap<String, (String, u64, u64)> = BTreeMap::new();
    // operator → (since, online, active)
    let mut state: BTreeMap<&str, (u64, bool, bool)> = BTreeMap::new();
    let add = |out: &mut BTreeMap<String, (String, u64, u64)>,
               op: &str,
               since: u64,
               until: u64,
               online: bool,
               active: bool| {
        let (a, b) = (since.max(from), until.min(to));
        if b > a {
            let e = out.entry(op.to_owned()).or_default();
            if online {
                e.1 += b - a;
            }
            if online && active {
                e.2 += b - a;
            }
        }
    };
    for r in records {
        if let Some((since, online, active)) = state.get(r.operator.as_str()).copied() {
            add(&mut out, &r.operator, since, r.ts, online, active);
        }
        state.insert(&r.operator, (r.ts, r.online, r.status == "active"));
        out.entry(r.operator.clone()).or_default().0 = r.name.clone();
    }
    let end = to.min(now_ms());
    for (op, (since, online, active)) in state {
        add(&mut out, op, since, end, online, active);
    }
    out
}

/// Each operator's conversations, online and active time over a range.
#[utoipa::path(
    get,
    path = "/v1/sites/{site}/reports/operators",
    tag = "reports",
    params(
        ("site" = String, Path),
        ("from" = Option<u64>, Query, description = "Unix ms (default: 7 days before to)"),
        ("to" = Option<u64>, Query, description = "Unix ms (default: now)"),
        ("queue" = Option<String>, Query),
        ("operator" = Option<String>, Query),
    ),
    responses(
        (status = 200, body = OperatorsReport),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn operators<E: Engine>(
    State(api): State<Api<E>>,
    Path(site): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let who = api.acting(&headers, &site, Need::ReadAll).await?;
    let mut p = Params::new(raw.as_deref());
    let r = range(&mut p);
    p.done()?;
    let archive = api.gw.archive_or_refuse()?;
    let rows = archive.report_rows(&who.site, &r.q).await?;
    let records = archive.operator_records(&who.site, &r.q).await?;
    let times = presence_times(&records, r.q.from, r.q.to);
    let mut by_op: BTreeMap<String, Vec<&ReportRow>> = BTreeMap::new();
    for row in &rows {
        if let Some(op) = &row.operator {
            by_op.entry(op.clone()).or_default().push(row);
        }
    }
    let mut ids: Vec<String> = by_op.keys().chain(times.keys()).cloned().collect();
    ids.sort_unstable();
    ids.dedup();
    if let Some(only) = &r.q.operator {
        ids.retain(|i| i == only);
    }
    let operators = ids
        .into_iter()
        .map(|id| {
            let convs = by_op.get(&id).map(Vec::as_slice).unwrap_or_default();
            let (name, online_ms, active_ms) = times.get(&id).cloned().unwrap_or_default();
            OperatorRow {
                name: if name.is_empty() { id.clone() } else { name },
                conversations: convs.len() as u64,
                answered: convs.iter().filter(|r| r.answered).count() as u64,
                online_ms,
                active_ms,
                first_response_ms: Percentiles::of(
                    convs.iter().filter_map(|r| r.first_response_ms).collect(),
                ),
                operator: id,
            }
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &OperatorsReport {
            from: r.q.from,
            to: r.q.to,
            operators,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(Percentiles::of(vec![]), Percentiles::default());
        let p = Percentiles::of((1..=10).collect());
        assert_eq!((p.p50, p.p90), (Some(5), Some(9)));
        let p = Percentiles::of(vec![7]);
        assert_eq!((p.p50, p.p90), (Some(7), Some(7)));
    }

    #[test]
    fn offsets_and_buckets() {
        assert_eq!(parse_offset("+03:00"), Some(3 * HOUR_MS as i64));
        assert_eq!(parse_offset("-05:30"), Some(-(5 * 60 + 30) * 60_000));
        assert_eq!(parse_offset("+15:00"), None);
        assert_eq!(parse_offset("03:00"), None);
        // 2023-11-14 22:13:20 UTC is the 15th in Moscow.
        assert_eq!(bucket_key(1_700_000_000_000, 0, false), "2023-11-14");
        assert_eq!(
            bucket_key(1_700_000_000_000, 3 * HOUR_MS as i64, true),
            "2023-11-15T01"
        );
    }

    #[test]
    fn online_and_active_time_is_clipped_to_the_range() {
        let rec = |ts, status: &str, online| OperatorRecord {
            site: crate::core::SiteId::from("s"),
            operator: "a".into(),
            name: "Ann".into(),
            status: status.into(),
            online,
            ts,
        };
        // Online and active from before the range, away at 150, offline at 180.
        let t = presence_times(
            &[
                rec(50, "active", true),
                rec(150, "away", true),
                rec(180, "away", false),
            ],
            100,
            200,
        );
        assert_eq!(t["a"], ("Ann".to_owned(), 80, 50));
    }
}
