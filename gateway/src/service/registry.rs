//! Sites at runtime: made, changed and deleted through the sites API (root keys), kept in
//! the archive's registry (`directory/sites.rs`), and in effect on every node at once. A
//! node loads the registry at start (seeding it from the sites file with the sites it does
//! not hold yet), and again whenever a node announces a change — the registry's scope on
//! the nodes' channel, the same message that makes a node reload a site's settings — and
//! after its bus reconnects. A site a node no longer finds is dropped there, and its
//! connections are closed (4003).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::directory::settings_invalid;
use super::{DirError, Engine, Gateway, ServiceError, Site};
use crate::archive::{Put, Store};
use crate::bus::{BusMsg, Channel};
use crate::clock::now_ms;
use crate::config::SiteConfig;
use crate::core::{QueueId, Settings, SiteId};
use crate::directory::sites::{self, registry, SiteRecord, WidgetKeyRecord};
use crate::directory::{Invalid, Kind};
use crate::protocol::CloseReason;

/// A site to make, or the fields of one to change (`None`: unchanged, or the default when
/// making one).
#[derive(Debug, Default, Clone)]
pub struct SiteChange {
    pub name: Option<String>,
    pub widget_key: Option<String>,
    pub queues: Option<Vec<String>>,
    /// A settings patch (as `PATCH …/settings` takes it).
    pub settings: Map<String, Value>,
}

impl<E: Engine> Gateway<E> {
    /// At start: the registry seeded with the sites file's sites it does not hold, then
    /// loaded. Without an archive (or when it cannot be read) the node serves the file's
    /// sites.
    pub async fn load_sites(&self) {
        if let Some(store) = self.archive.clone() {
            let loaded = async {
                self.seed_sites(&*store).await?;
                self.reload_sites().await
            };
            if let Err(e) = loaded.await {
                tracing::error!(error = %e, "sites not loaded from the archive; serving the sites file's");
            }
        }
        self.engine.serve_sites(self.site_ids());
    }

    /// Writes the sites file's sites that the registry has never held (a deleted one stays
    /// deleted).
    async fn seed_sites(&self, store: &dyn Store) -> Result<(), ServiceError> {
        let (_, rows) = store.directory(&registry()).await?;
        let known: HashSet<String> = sites::records(&rows).into_iter().map(|r| r.id).collect();
        for c in self
            .cfg
            .sites
            .iter()
            .filter(|c| !known.contains(c.id.as_str()))
        {
            let rec = SiteRecord {
                id: c.id.to_string(),
                name: c.name.clone(),
                widget_key: c.widget_key.clone(),
                queues: c.queues.iter().map(|q| q.to_string()).collect(),
                settings: match c.settings.to_json() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                created_at: now_ms(),
                deleted_at: None,
            };
            match put_site(store, &rec, None).await {
                Ok(()) => tracing::info!(site = %rec.id, "site seeded from the sites file"),
                Err(DirError::Service(e)) => return Err(e),
                Err(e) => {
                    tracing::error!(site = %rec.id, error = %e, "site from the sites file not seeded")
                }
            }
        }
        Ok(())
    }

    /// Brings this node's sites in line with the registry: sites made elsewhere are added
    /// (their settings and directory loaded), renamed or re-keyed ones updated, and deleted
    /// ones dropped with their connections closed.
    pub async fn reload_sites(&self) -> Result<(), ServiceError> {
        let Some(store) = self.archive.as_ref() else {
            return Ok(());
        };
        let (_, rows) = store.directory(&registry()).await?;
        let live: Vec<SiteRecord> = sites::records(&rows)
            .into_iter()
            .filter(|r| !r.is_deleted())
            .collect();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        {
            let mut guard = self.registry.write();
            let reg = &mut *guard;
            for rec in &live {
                let id = SiteId(rec.id.clone());
                match reg.sites.get(&id) {
                    Some(site) => {
                        let card = site.card();
                        if card.name != rec.name || card.widget_key != rec.widget_key {
                            if reg.by_key.get(&card.widget_key) == Some(&id) {
                                reg.by_key.remove(&card.widget_key);
                            }
                            reg.by_key.insert(rec.widget_key.clone(), id.clone());
                            *site.card.write() = Arc::new(super::SiteCard {
                                name: rec.name.clone(),
                                widget_key: rec.widget_key.clone(),
                            });
                        }
                    }
                    None => {
                        reg.insert(Site::new(&self.site_config(rec)));
                        added.push(id);
                    }
                }
            }
            let keep: HashSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
            let gone: Vec<SiteId> = reg
                .sites
                .keys()
                .filter(|s| !keep.contains(s.as_str()))
                .cloned()
                .collect();
            for id in gone {
                if let Some(site) = reg.sites.remove(&id) {
                    let key = site.card().widget_key.clone();
                    if reg.by_key.get(&key) == Some(&id) {
                        reg.by_key.remove(&key);
                    }
                }
                removed.push(id);
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            self.engine.serve_sites(self.site_ids());
        }
        for id in removed {
            tracing::info!(site = %id, "site deleted; closing its connections");
            self.hub.close_site(&id, CloseReason::Forbidden);
        }
        for id in added {
            tracing::info!(site = %id, "site added");
            self.reload_settings(&id).await?;
            self.reload_directory(&id).await?;
        }
        Ok(())
    }

    /// How a stored site starts: its seed lines and its settings (a setting that no longer
    /// reads is left at its default, with a warning).
    fn site_config(&self, rec: &SiteRecord) -> SiteConfig {
        let settings = Settings::default()
            .patched(&rec.settings, self.cfg.bounds)
            .unwrap_or_else(|e| {
                tracing::warn!(site = %rec.id, error = %e, "stored site settings rejected");
                Settings::default()
            });
        SiteConfig {
            id: SiteId(rec.id.clone()),
            name: rec.name.clone(),
            widget_key: rec.widget_key.clone(),
            queues: rec.queues.iter().cloned().map(QueueId).collect(),
            settings,
        }
    }

    /// Every site in the registry (tombstones left out), in id order.
    pub async fn site_records(&self) -> Result<Vec<SiteRecord>, DirError> {
        let store = self.archive_or_refuse()?;
        let (_, rows) = store.directory(&registry()).await?;
        Ok(sites::records(&rows)
            .into_iter()
            .filter(|r| !r.is_deleted())
            .collect())
    }

    /// One site of the registry.
    pub async fn site_record(&self, id: &str) -> Result<SiteRecord, DirError> {
        self.site_records()
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(DirError::NoSite)
    }

    /// Makes a site: its record, its widget key, its seed lines; in effect on every node
    /// when this returns.
    pub async fn create_site(&self, id: String, c: SiteChange) -> Result<SiteRecord, DirError> {
        let store = self.archive_or_refuse()?.clone();
        let rec = SiteRecord {
            name: c.name.unwrap_or_else(|| id.clone()),
            widget_key: c.widget_key.unwrap_or_else(sites::new_widget_key),
            queues: c.queues.unwrap_or_else(|| vec!["general".into()]),
            settings: Map::new(),
            created_at: now_ms(),
            deleted_at: None,
            id,
        };
        let mut bad = rec.check();
        let settings = match Settings::default().patched(&c.settings, self.cfg.bounds) {
            Ok(s) => Some(s),
            Err(e) => {
                bad.extend(settings_invalid(e));
                None
            }
        };
        if !bad.is_empty() {
            return Err(DirError::Invalid(bad));
        }
        let rec = SiteRecord {
            settings: match settings.map(|s| s.to_json()) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            },
            ..rec
        };
        put_site(&*store, &rec, None).await?;
        self.announce_sites().await;
        let site = SiteId(rec.id.clone());
        self.seed_directory(&site).await?;
        self.announce_directory(&site).await;
        tracing::info!(site = %rec.id, widget_key = %rec.widget_key, "site created");
        Ok(rec)
    }

    /// Changes a site's name, widget key or settings (its seed lines are history: its lines
    /// are managed under `/queues`).
    pub async fn patch_site(&self, id: &str, c: SiteChange) -> Result<SiteRecord, DirError> {
        let store = self.archive_or_refuse()?.clone();
        let old = self.site_record(id).await?;
        let site = self.site(&SiteId(id.to_owned())).ok_or(DirError::NoSite)?;
        let mut bad = Vec::new();
        if c.queues.is_some() {
            bad.push(Invalid::new(
                "queues",
                "a site's lines are managed under /v1/sites/{site}/queues",
            ));
        }
        let mut settings = old.settings.clone();
        if !c.settings.is_empty() {
            if let Err(e) = site.settings().patched(&c.settings, self.cfg.bounds) {
                bad.extend(settings_invalid(e));
            }
            crate::directory::merge(&mut settings, c.settings.clone());
        }
        let rec = SiteRecord {
            name: c.name.unwrap_or_else(|| old.name.clone()),
            widget_key: c.widget_key.unwrap_or_else(|| old.widget_key.clone()),
            settings,
            ..old.clone()
        };
        bad.extend(rec.check());
        if !bad.is_empty() {
            return Err(DirError::Invalid(bad));
        }
        put_site(&*store, &rec, Some(&old)).await?;
        if !c.settings.is_empty() {
            // The live settings, on every node (checked above against the same settings).
            self.update_settings(&SiteId(rec.id.clone()), &c.settings)
                .await
                .map_err(|e| match e {
                    super::SettingsUpdateError::NoSite => DirError::NoSite,
                    super::SettingsUpdateError::Invalid(e) => {
                        DirError::Invalid(settings_invalid(e))
                    }
                    super::SettingsUpdateError::Service(e) => DirError::Service(e),
                })?;
        }
        self.announce_sites().await;
        Ok(rec)
    }

    /// Deletes a site: every node drops it and closes its connections, its API keys are
    /// revoked, and the archive lets go of its closed conversations. Its id stays taken.
    pub async fn delete_site(&self, id: &str) -> Result<(), DirError> {
        let store = self.archive_or_refuse()?.clone();
        let old = self.site_record(id).await?;
        let dead = SiteRecord {
            deleted_at: Some(now_ms()),
            ..old.clone()
        };
        put_site(&*store, &dead, Some(&old)).await?;
        self.announce_sites().await;
        for k in store.keys(Some(id)).await? {
            store.revoke_key(Some(id), &k.id).await?;
        }
        let erased = store.sweep(&SiteId(id.to_owned()), u64::MAX).await?;
        tracing::info!(site = %id, conversations = erased, "site deleted");
        Ok(())
    }

    /// After a change of the registry: this node reloads at once, and every other node is
    /// told.
    async fn announce_sites(&self) {
        if let Err(e) = self.reload_sites().await {
            tracing::warn!(error = %e, "sites not reloaded after a change");
        }
        if let Err(e) = self
            .engine
            .publish(&Channel::Nodes, BusMsg::Settings(registry()))
            .await
        {
            tracing::warn!(error = %e, "sites change not announced");
        }
    }
}

/// Writes a site's record: a new one (`old` is `None`) or a replacement. Its widget key is
/// claimed first (the key's row is unique in the database, so two sites never share one);
/// a key given up is released after the record no longer names it. A deleted site
/// releases its key.
async fn put_site(
    store: &dyn Store,
    rec: &SiteRecord,
    old: Option<&SiteRecord>,
) -> Result<(), DirError> {
    let reg = registry();
    let now = now_ms();
    let keeps_key = old.is_some_and(|o| o.widget_key == rec.widget_key && !o.is_deleted());
    if !keeps_key && !rec.is_deleted() {
        let claim = serde_json::to_string(&WidgetKeyRecord {
            site: rec.id.clone(),
        })
        .expect("serialises");
        if store
            .put_entry(&reg, Kind::WidgetKeys, &rec.widget_key, &claim, true, now)
            .await?
            == Put::Exists
        {
            return Err(DirError::Invalid(vec![Invalid::new(
                "widget_key",
                "is another site's",
            )]));
        }
    }
    let body = serde_json::to_string(rec).expect("serialises");
    let put = store
        .put_entry(&reg, Kind::Sites, &rec.id, &body, old.is_none(), now)
        .await?;
    if put != Put::Done {
        // Give the key back: the site was not written.
        if !keeps_key && !rec.is_deleted() {
            store
                .delete_entry(&reg, Kind::WidgetKeys, &rec.widget_key)
                .await?;
        }
        return Err(if put == Put::Exists {
            DirError::Exists
        } else {
            DirError::NoSite
        });
    }
    if let Some(o) = old {
        if o.widget_key != rec.widget_key || rec.is_deleted() {
            store
                .delete_entry(&reg, Kind::WidgetKeys, &o.widget_key)
                .await?;
        }
    }
    Ok(())
}
