//! The sites file, which seeds a fresh install: a JSON array of sites with their widget key,
//! lines and the settings they start from (`GATEWAY_SITES`; then `/v1/sites` decides).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::core::settings::{Bounds, Settings};
use crate::core::{QueueId, SiteId};

/// A site: its widget key, queues and initial settings.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub id: SiteId,
    pub name: String,
    pub widget_key: String,
    pub queues: Vec<QueueId>,
    pub settings: Settings,
}

impl SiteConfig {
    /// The site served when none is configured: `demo`, widget key `demo`, queue `general`,
    /// manual routing, and messages left in the widget's offline form kept a day for a
    /// call-back (with the protocol's default, `off`, such a request would end when its
    /// visitor leaves the page).
    pub fn demo() -> SiteConfig {
        SiteConfig {
            id: SiteId::from("demo"),
            name: "Demo".into(),
            widget_key: "demo".into(),
            queues: vec![QueueId::from("general")],
            settings: Settings {
                offline_callback: Some(std::time::Duration::from_secs(24 * 3600)),
                ..Settings::default()
            },
        }
    }
}

#[derive(Deserialize)]
struct SiteFile {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    widget_key: Option<String>,
    #[serde(default)]
    queues: Vec<String>,
    #[serde(default)]
    settings: Map<String, Value>,
}

/// Reads a sites file: a JSON array of `{id, widget_key?, queues?, settings?}`.
pub fn load_sites(path: &PathBuf, bounds: Bounds) -> Result<Vec<SiteConfig>, Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    parse_sites(&text, bounds)
}

pub fn parse_sites(text: &str, bounds: Bounds) -> Result<Vec<SiteConfig>, Vec<String>> {
    let files: Vec<SiteFile> =
        serde_json::from_str(text).map_err(|e| vec![format!("not a JSON list of sites: {e}")])?;
    let mut errs = Vec::new();
    let mut out = Vec::new();
    for f in files {
        let settings = match Settings::default().patched(&f.settings, bounds) {
            Ok(s) => s,
            Err(e) => {
                errs.push(format!("site {:?}: {e}", f.id));
                continue;
            }
        };
        if f.id.is_empty() || f.id.len() > 64 {
            errs.push(format!("site {:?}: id must be 1 to 64 bytes", f.id));
            continue;
        }
        let queues = if f.queues.is_empty() {
            vec!["general".to_owned()]
        } else {
            f.queues
        };
        out.push(SiteConfig {
            widget_key: f.widget_key.unwrap_or_else(|| f.id.clone()),
            name: f.name.unwrap_or_else(|| f.id.clone()),
            id: SiteId(f.id),
            queues: queues.into_iter().map(QueueId).collect(),
            settings,
        });
    }
    if out.is_empty() && errs.is_empty() {
        errs.push("no site configured".into());
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}
