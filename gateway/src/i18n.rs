//! The languages the gateway speaks (English, Russian, Czech), and everything it says in
//! words: system messages, the unavailability notice's default text, and the labels of
//! transcripts.
//!
//! A system message is stored with a machine-readable code and arguments
//! ([`crate::core::Note`]); its `text` is rendered in the site's language for clients that do
//! not know the code, and clients that do render the code in their reader's language. The
//! widget and the console carry the same phrases (`widget-js/`).

use std::collections::BTreeMap;

use crate::core::Note;

/// A language the gateway has words for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Lang {
    #[default]
    En,
    Ru,
    Cs,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::En, Lang::Ru, Lang::Cs];

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
            Lang::Cs => "cs",
        }
    }

    /// The language of a BCP 47 tag (`ru`, `ru-RU`, `cs_CZ`), by its primary subtag.
    pub fn parse(tag: &str) -> Option<Lang> {
        match primary(tag)?.as_str() {
            "en" => Some(Lang::En),
            "ru" => Some(Lang::Ru),
            "cs" => Some(Lang::Cs),
            _ => None,
        }
    }

    /// The first language of an `Accept-Language` header the gateway speaks.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        accepted(header).into_iter().find_map(Lang::parse)
    }
}

/// The tags of an `Accept-Language` header, most wanted first (`q=0` left out).
pub fn accepted(header: &str) -> Vec<&str> {
    let mut tags: Vec<(f32, usize, &str)> = header
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut it = part.split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q > 0.0 && !tag.is_empty()).then_some((q, i, tag))
        })
        .collect();
    tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, t)| t).collect()
}

/// The primary subtag of a language tag, lower-cased (`"ru-RU"` → `"ru"`), if it looks like
/// one (2 to 8 ASCII letters).
pub fn primary(tag: &str) -> Option<String> {
    let p = tag.trim().split(['-', '_']).next()?;
    ((2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| p.to_ascii_lowercase())
}

/// A system message's code and arguments, as the `msg` frame carries them.
pub fn note_code(note: &Note) -> (&'static str, BTreeMap<String, String>) {
    let mut args = BTreeMap::new();
    let code = match note {
        Note::OperatorJoined { name } => {
            if let Some(n) = name {
                args.insert("name".to_owned(), n.clone());
            }
            "operator_joined"
        }
        Note::Transferred { queue } => {
            if let Some(q) = queue {
                args.insert("queue".to_owned(), q.to_string());
            }
            "transferred"
        }
        Note::Reassigned => "reassigned",
        Note::Closed => "closed",
    };
    (code, args)
}

/// A system message in words.
pub fn note_text(note: &Note, lang: Lang) -> String {
    match (note, lang) {
        (Note::OperatorJoined { name: Some(n) }, Lang::En) => {
            format!("{n} joined the conversation")
        }
        (Note::OperatorJoined { name: None }, Lang::En) => {
            "An operator joined the conversation".into()
        }
        (Note::OperatorJoined { name: Some(n) }, Lang::Ru) => {
            format!("Оператор {n} присоединился к разговору")
        }
        (Note::OperatorJoined { name: None }, Lang::Ru) => {
            "Оператор присоединился к разговору".into()
        }
        (Note::OperatorJoined { name: Some(n) }, Lang::Cs) => {
            format!("Operátor {n} se připojil ke konverzaci")
        }
        (Note::OperatorJoined { name: None }, Lang::Cs) => {
            "Operátor se připojil ke konverzaci".into()
        }
        (Note::Transferred { queue: Some(q) }, Lang::En) => {
            format!("The conversation was transferred to {q}")
        }
        (Note::Transferred { queue: None }, Lang::En) => {
            "The conversation was transferred to another operator".into()
        }
        (Note::Transferred { queue: Some(q) }, Lang::Ru) => {
            format!("Разговор передан в очередь {q}")
        }
        (Note::Transferred { queue: None }, Lang::Ru) => {
            "Разговор передан другому оператору".into()
        }
        (Note::Transferred { queue: Some(q) }, Lang::Cs) => {
            format!("Konverzace byla předána do fronty {q}")
        }
        (Note::Transferred { queue: None }, Lang::Cs) => {
            "Konverzace byla předána jinému operátorovi".into()
        }
        (Note::Reassigned, Lang::En) => {
            "The operator did not answer in time; the conversation was passed to another operator"
                .into()
        }
        (Note::Reassigned, Lang::Ru) => {
            "Оператор не ответил вовремя, разговор передан другому оператору".into()
        }
        (Note::Reassigned, Lang::Cs) => {
            "Operátor neodpověděl včas, konverzace byla předána jinému operátorovi".into()
        }
        (Note::Closed, Lang::En) => "The conversation was closed".into(),
        (Note::Closed, Lang::Ru) => "Разговор завершён".into(),
        (Note::Closed, Lang::Cs) => "Konverzace byla ukončena".into(),
    }
}

/// A system message's text from its stored code and arguments (a transcript renders what was
/// stored in its reader's language); `None` for a code this version does not know.
pub fn render_code(code: &str, args: &BTreeMap<String, String>, lang: Lang) -> Option<String> {
    let note = match code {
        "operator_joined" => Note::OperatorJoined {
            name: args.get("name").cloned(),
        },
        "transferred" => Note::Transferred {
            queue: args.get("queue").map(|q| crate::core::QueueId(q.clone())),
        },
        "reassigned" => Note::Reassigned,
        "closed" => Note::Closed,
        _ => return None,
    };
    Some(note_text(&note, lang))
}

/// The unavailability notice a site says when it sets no text of its own.
pub fn default_unavailable_text(lang: Lang) -> &'static str {
    match lang {
        Lang::En => {
            "Sorry, the chat is unavailable for technical reasons. We are already working on a fix."
        }
        // The seed's own text (BPMSoft OCC's default).
        Lang::Ru => "По техническим причинам чат недоступен. Мы уже работаем над исправлением.",
        Lang::Cs => "Chat je z technických důvodů nedostupný. Na opravě již pracujeme.",
    }
}

/// Words of a transcript.
pub struct TranscriptWords {
    pub title: &'static str,
    pub visitor: &'static str,
    pub operator: &'static str,
    pub system: &'static str,
}

pub fn transcript_words(lang: Lang) -> TranscriptWords {
    match lang {
        Lang::En => TranscriptWords {
            title: "Conversation",
            visitor: "Visitor",
            operator: "Operator",
            system: "System",
        },
        Lang::Ru => TranscriptWords {
            title: "Разговор",
            visitor: "Посетитель",
            operator: "Оператор",
            system: "Система",
        },
        Lang::Cs => TranscriptWords {
            title: "Konverzace",
            visitor: "Návštěvník",
            operator: "Operátor",
            system: "Systém",
        },
    }
}

/// Words of the e-mails the gateway sends.
pub struct MailWords {
    /// Subject of a transcript to the staff: "… <conversation> — <visitor>".
    pub transcript: &'static str,
    /// Subject of the visitor's own transcript: "… <site>".
    pub your_chat: &'static str,
    pub missed: &'static str,
    pub offline: &'static str,
    pub anonymous: &'static str,
    pub visitor: &'static str,
    pub email: &'static str,
    pub phone: &'static str,
    pub queue: &'static str,
    pub operator: &'static str,
    pub conversation: &'static str,
}

pub fn mail_words(lang: Lang) -> MailWords {
    match lang {
        Lang::En => MailWords {
            transcript: "Chat transcript",
            your_chat: "Your chat with",
            missed: "Missed chat",
            offline: "Offline message",
            anonymous: "Anonymous visitor",
            visitor: "Visitor",
            email: "E-mail",
            phone: "Phone",
            queue: "Queue",
            operator: "Operator",
            conversation: "Conversation",
        },
        Lang::Ru => MailWords {
            transcript: "Запись чата",
            your_chat: "Ваш чат с",
            missed: "Пропущенный чат",
            offline: "Сообщение из формы",
            anonymous: "Анонимный посетитель",
            visitor: "Посетитель",
            email: "Эл. почта",
            phone: "Телефон",
            queue: "Очередь",
            operator: "Оператор",
            conversation: "Разговор",
        },
        Lang::Cs => MailWords {
            transcript: "Přepis chatu",
            your_chat: "Váš chat s",
            missed: "Zmeškaný chat",
            offline: "Zpráva z formuláře",
            anonymous: "Anonymní návštěvník",
            visitor: "Návštěvník",
            email: "E-mail",
            phone: "Telefon",
            queue: "Fronta",
            operator: "Operátor",
            conversation: "Konverzace",
        },
    }
}

/// Words of the e-mail to a site's supervisors about a webhook the gateway turned off.
pub struct WebhookOffWords {
    pub subject: &'static str,
    pub body: &'static str,
    pub webhook: &'static str,
    pub failing: &'static str,
    pub last_error: &'static str,
    pub again: &'static str,
}

pub fn webhook_off_words(lang: Lang) -> WebhookOffWords {
    match lang {
        Lang::En => WebhookOffWords {
            subject: "Webhook turned off:",
            body:
                "Every call of this webhook failed for a long time, so the gateway turned it off. \
                   Its events since then were not sent.",
            webhook: "Webhook",
            failing: "Failing for",
            last_error: "Last error",
            again: "Once the receiver works, turn it on again on the console's Admin page \
                    (Webhooks), or through the API:",
        },
        Lang::Ru => WebhookOffWords {
            subject: "Вебхук отключён:",
            body: "Все вызовы этого вебхука долго завершались ошибкой, и шлюз отключил его. \
                   События с этого момента не отправлены.",
            webhook: "Вебхук",
            failing: "Ошибки в течение",
            last_error: "Последняя ошибка",
            again: "Когда получатель заработает, включите вебхук на странице администрирования \
                    консоли (Webhooks) или через API:",
        },
        Lang::Cs => WebhookOffWords {
            subject: "Webhook vypnut:",
            body: "Všechna volání tohoto webhooku dlouho selhávala, a proto jej brána vypnula. \
                   Události od té doby nebyly odeslány.",
            webhook: "Webhook",
            failing: "Selhává po dobu",
            last_error: "Poslední chyba",
            again: "Až bude příjemce fungovat, zapněte jej znovu na stránce správy konzole \
                    (Webhooks) nebo přes API:",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_from_tags_and_accept_language() {
        assert_eq!(Lang::parse("ru-RU"), Some(Lang::Ru));
        assert_eq!(Lang::parse("CS_cz"), Some(Lang::Cs));
        assert_eq!(Lang::parse("de"), None);
        assert_eq!(Lang::parse(""), None);
        assert_eq!(
            Lang::from_accept_language("de-DE,de;q=0.9,cs;q=0.8,en;q=0.7"),
            Some(Lang::Cs)
        );
        assert_eq!(
            Lang::from_accept_language("en;q=0.5, ru;q=0.9"),
            Some(Lang::Ru)
        );
        assert_eq!(Lang::from_accept_language("ru;q=0, en"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("de, fr"), None);
    }

    #[test]
    fn every_note_renders_in_every_language_and_back_from_its_code() {
        let notes = [
            Note::OperatorJoined {
                name: Some("Alice".into()),
            },
            Note::OperatorJoined { name: None },
            Note::Transferred {
                queue: Some(crate::core::QueueId::from("billing")),
            },
            Note::Transferred { queue: None },
            Note::Reassigned,
            Note::Closed,
        ];
        for note in &notes {
            let (code, args) = note_code(note);
            for lang in Lang::ALL {
                let text = note_text(note, lang);
                assert!(!text.is_empty());
                assert_eq!(render_code(code, &args, lang), Some(text));
            }
        }
        assert_eq!(
            note_text(&notes[0], Lang::Ru),
            "Оператор Alice присоединился к разговору"
        );
        assert_eq!(render_code("unheard_of", &BTreeMap::new(), Lang::En), None);
    }
}
