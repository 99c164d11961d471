//! E-mail over SMTP (`lettre`): the transport `GATEWAY_SMTP_URL` names, and messages built
//! so that nothing a visitor wrote can reach a header — addresses are parsed as mailboxes,
//! subjects lose their control characters, bodies are the message's parts, never headers.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the gateway reaches its mail server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtps://`: TLS from the first byte (port 465 by default).
    Tls,
    /// `smtp://`: STARTTLS, required (port 587 by default).
    StartTls,
    /// `smtp://…?tls=none`: plain text, for a relay on the same host or network.
    None,
}

impl SmtpConfig {
    /// Reads `smtp://user:pass@host:587`, `smtps://host`, `smtp://host:25?tls=none`.
    pub fn parse(url: &str) -> Result<SmtpConfig, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("expected smtp://… or smtps://…")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let mut security = match scheme {
            "smtps" => Security::Tls,
            "smtp" => Security::StartTls,
            other => return Err(format!("{other}: expected smtp or smtps")),
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match (&*k, &*v) {
                ("tls", "none") if scheme == "smtp" => security = Security::None,
                ("tls", "required" | "starttls") if scheme == "smtp" => {}
                _ => return Err(format!("unknown parameter {k}={v}")),
            }
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "bad port")?),
            None => (
                hostport,
                match security {
                    Security::Tls => 465,
                    Security::StartTls => 587,
                    Security::None => 25,
                },
            ),
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let decode = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = userinfo.map(|u| match u.split_once(':') {
            Some((user, pass)) => (decode(user), decode(pass)),
            None => (decode(u), String::new()),
        });
        Ok(SmtpConfig {
            host: host.to_owned(),
            port,
            security,
            credentials,
        })
    }
}

/// An e-mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// An HTML part, with `text` as its alternative.
    pub html: Option<String>,
    pub reply_to: Option<String>,
    /// Stable for the same e-mail: a resend after a crash carries the same `Message-ID`.
    pub message_id: String,
}

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The server refused it for good (a bad address): not retried.
    #[error("refused: {0}")]
    Permanent(String),
    /// The server is down or said "later": retried.
    #[error("{0}")]
    Transient(String),
}

/// Sends e-mail through one SMTP server, from one address.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig, from: &str) -> Result<Mailer, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("GATEWAY_MAIL_FROM: {e}"))?;
        let builder = match cfg.security {
            Security::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&cfg.host).map_err(|e| e.to_string())?
            }
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&cfg.host)
                .map_err(|e| e.to_string())?,
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host),
        };
        let mut builder = builder.port(cfg.port).timeout(Some(SMTP_TIMEOUT));
        if let Some((user, pass)) = &cfg.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Builds the message (a bad address is a permanent failure) and sends it.
    pub async fn send(&self, m: &Mail) -> Result<(), MailError> {
        let message = self.build(m)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            if e.is_permanent() {
                MailError::Permanent(e.to_string())
            } else {
                MailError::Transient(e.to_string())
            }
        })
    }

    fn build(&self, m: &Mail) -> Result<Message, MailError> {
        let bad =
            |what: &str, e: &dyn std::fmt::Display| MailError::Permanent(format!("{what}: {e}"));
        let to: Mailbox = m.to.parse().map_err(|e| bad("to", &e))?;
        let mut b = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(one_line(&m.subject))
            .message_id(Some(m.message_id.clone()));
        if let Some(r) = &m.reply_to {
            b = b.reply_to(r.parse().map_err(|e| bad("reply_to", &e))?);
        }
        let built = match &m.html {
            Some(html) => b.multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(m.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html.clone()),
                    ),
            ),
            None => b.header(ContentType::TEXT_PLAIN).body(m.text.clone()),
        };
        built.map_err(|e| bad("message", &e))
    }
}

/// A header's text on one line: control characters (a newline first of all) become spaces,
/// and it is cut to a length mail clients show.
pub fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_read_as_the_docs_say() {
        let c = SmtpConfig::parse("smtp://ann%40x.org:p%3Ass@mail.example:2525").unwrap();
        assert_eq!(
            c,
            SmtpConfig {
                host: "mail.example".into(),
                port: 2525,
                security: Security::StartTls,
                credentials: Some(("ann@x.org".into(), "p:ss".into())),
            }
        );
        let c = SmtpConfig::parse("smtps://mail.example").unwrap();
        assert_eq!(
            (c.port, c.security, c.credentials),
            (465, Security::Tls, None)
        );
        let c = SmtpConfig::parse("smtp://127.0.0.1:25?tls=none").unwrap();
        assert_eq!((c.port, c.security), (25, Security::None));
        for bad in [
            "mail.example",
            "http://mail.example",
            "smtp://",
            "smtp://h:port",
            "smtps://h?tls=none",
            "smtp://h?x=y",
        ] {
            assert!(SmtpConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_header_can_be_forged_through_a_subject_or_an_address() {
        assert_eq!(
            one_line("Chat with Eve\r\nBcc: all@example.com"),
            "Chat with Eve Bcc: all@example.com"
        );
        let mailer = Mailer::new(
            &SmtpConfig::parse("smtp://127.0.0.1:25?tls=none").unwrap(),
            "Chat <chat@example.com>",
        )
        .unwrap();
        let mail = |to: &str| Mail {
            to: to.into(),
            subject: "Hi\nBcc: x@example.com".into(),
            text: "Bcc: y@example.com\r\n\r\nbody".into(),
            html: None,
            reply_to: None,
            message_id: "<m1@example.com>".into(),
        };
        assert!(matches!(
            mailer.build(&mail("a@example.com\r\nBcc: x@example.com")),
            Err(MailError::Permanent(_))
        ));
        let raw =
            String::from_utf8(mailer.build(&mail("a@example.com")).unwrap().formatted()).unwrap();
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(
            !headers
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc")),
            "{headers}"
        );
        assert!(
            headers.contains("Subject: Hi Bcc: x@example.com"),
            "{headers}"
        );
        assert!(
            headers.contains("Message-ID: <m1@example.com>"),
            "{headers}"
        );
    }
}
