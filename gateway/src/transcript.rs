//! Transcripts of a conversation: plain text, HTML or JSON, with system messages in the
//! reader's language. The HTTP API, the visitor's download and e-mails render them here.

use crate::i18n::Lang;
use crate::protocol::{Conversation, Msg, Role};

/// A transcript's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Html,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "html" => Some(Format::Html),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Html => "html",
            Format::Json => "json",
        }
    }
}

/// A conversation's transcript in `format`.
pub fn render(format: Format, c: &Conversation, messages: &[Msg], lang: Lang) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(
            &serde_json::json!({"conversation": c, "messages": messages}),
        )
        .expect("a transcript serialises"),
        Format::Html => transcript_html(c, messages, lang),
        Format::Text => transcript_text(messages, lang),
    }
}

fn author_label(m: &Msg) -> String {
    match m.from.role {
        Role::System => "—".to_owned(),
        _ => m
            .from
            .name
            .clone()
            .unwrap_or_else(|| m.from.role.as_str().to_owned()),
    }
}

/// A message's text for a reader of `lang`: a system message rendered from its code when
/// this version knows it, else the text as stored.
fn text_in(m: &Msg, lang: Lang) -> String {
    m.code
        .as_deref()
        .filter(|_| m.from.role == Role::System)
        .and_then(|code| {
            let none = std::collections::BTreeMap::new();
            crate::i18n::render_code(code, m.args.as_ref().unwrap_or(&none), lang)
        })
        .unwrap_or_else(|| m.text.clone())
}

/// The text transcript: one entry per message, `[time] author: text`. A message's own line
/// breaks are kept, its further lines indented, so that no text can forge an entry (a line
/// starting with a time and another author); an author's name is kept to one line.
pub fn transcript_text(messages: &[Msg], lang: Lang) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&format!(
            "[{}] {}: {}\n",
            iso(m.ts),
            crate::mail::one_line(&author_label(m)),
            indented(&text_in(m, lang))
        ));
    }
    out
}

/// `s` with every line after the first indented by four spaces (any of `\r\n`, `\r`, `\n`
/// and the Unicode line separators ends a line), and other control characters but tabs as
/// spaces.
fn indented(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' | '\n' | '\u{0b}' | '\u{0c}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\n    ");
            }
            '\t' => out.push('\t'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

pub fn transcript_html(c: &Conversation, messages: &[Msg], lang: Lang) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>Transcript {}</title><h1>Conversation {}</h1>{}",
        esc(&c.id),
        esc(&c.id),
        messages_table(messages, lang)
    )
}

/// The messages as an HTML table: time, author, text, every value escaped.
pub fn messages_table(messages: &[Msg], lang: Lang) -> String {
    let mut out = String::from("<table>");
    for m in messages {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            iso(m.ts),
            esc(&author_label(m)),
            esc(&text_in(m, lang))
        ));
    }
    out.push_str("</table>");
    out
}

/// Text made safe to put in HTML (text and attribute values).
pub fn escape(s: &str) -> String {
    esc(s)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `YYYY-MM-DD HH:MM:SS` UTC from Unix ms (civil-from-days; no date crate needed for this).
pub fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, mi, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let z = (secs / 86400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01 00:00:00");
        assert_eq!(iso(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(iso(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn a_message_cannot_forge_a_line_of_the_text_transcript() {
        let m = |name: &str, text: &str| Msg {
            conv: "c1".into(),
            seq: 1,
            from: crate::protocol::Author {
                role: Role::Visitor,
                id: "v1".into(),
                name: Some(name.into()),
            },
            text: text.into(),
            ts: 0,
            cid: None,
            code: None,
            args: None,
        };
        let forged =
            "hi\n[1970-01-01 00:00:01] Olga: send me your card number\r[x] y: z\u{2028}[a] b: c";
        let t = transcript_text(&[m("Ann\n[1970] Olga", forged)], Lang::En);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "[1970-01-01 00:00:00] Ann [1970] Olga: hi");
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[1..].iter().all(|l| l.starts_with("    [")),
            "every further line indented: {t}"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<b>&\""), "&lt;b&gt;&amp;&quot;");
    }
}
