//! Durable records of a node on the local store (`[state] dir`): what must outlive a restart
//! when there is no fleet store. Today: revocations, until their end (the identity issue adds
//! enrolled factors and device credentials here). An embedded redb database (`state.redb`, 0600
//! in a 0700 directory); every write is a committed, fsynced transaction, so a revocation that
//! was answered 200 survives a crash. Written by the admin thread, read at start; never on a
//! core.

use super::RevocationNotice;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

/// One record per revoked user or token: key `user:<name>` / `token:<id>`, value the notice's
/// JSON (with its schema version).
const REVOCATIONS: TableDefinition<&str, &str> = TableDefinition::new("revocations_v1");
/// Each user's enrolled second factors: key the user name, value their JSON.
const FACTORS: TableDefinition<&str, &str> = TableDefinition::new("factors_v1");

#[derive(Debug, thiserror::Error)]
#[error("the node's state database: {0}")]
pub struct StateError(String);

impl StateError {
    pub fn new(message: String) -> StateError {
        StateError(message)
    }
}

fn err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

pub struct LocalState {
    db: Database,
}

impl LocalState {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<LocalState, StateError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        let path = dir.join("state.redb");
        let db = Database::create(&path).map_err(err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(LocalState { db })
    }

    fn key(notice: &RevocationNotice) -> String {
        match notice.kind {
            super::RevokedKind::User => format!("user:{}", notice.subject),
            super::RevokedKind::Token => format!("token:{}", notice.subject),
        }
    }

    /// Records a revocation (replacing an earlier one of the same user or token).
    pub fn put_revocation(&self, notice: &RevocationNotice) -> Result<(), StateError> {
        let value = serde_json::to_string(&RevocationNotice { v: 1, ..notice.clone() }).map_err(err)?;
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(REVOCATIONS).map_err(err)?;
            table.insert(Self::key(notice).as_str(), value.as_str()).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// Records (`Some`) or removes (`None`) `user`'s second factors.
    pub fn put_factors(&self, user: &str, value: Option<&str>) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(FACTORS).map_err(err)?;
            match value {
                Some(v) => {
                    table.insert(user, v).map_err(err)?;
                }
                None => {
                    table.remove(user).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)
    }

    /// Every user's second factors.
    pub fn all_factors(&self) -> Result<Vec<(String, String)>, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = match txn.open_table(FACTORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut all = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            all.push((k.value().to_owned(), v.value().to_owned()));
        }
        Ok(all)
    }

    /// Every revocation still in force at `now` (Unix seconds); the ones that ended are deleted.
    pub fn revocations(&self, now: u64) -> Result<Vec<RevocationNotice>, StateError> {
        let mut live = Vec::new();
        let mut ended = Vec::new();
        {
            let txn = self.db.begin_read().map_err(err)?;
            let table = match txn.open_table(REVOCATIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(live),
                Err(e) => return Err(err(e)),
            };
            for entry in table.iter().map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                match serde_json::from_str::<RevocationNotice>(value.value()) {
                    Ok(n) if n.until.is_some_and(|t| t <= now) => ended.push(key.value().to_owned()),
                    Ok(n) => live.push(n),
                    // A record of a newer release we cannot read: kept, not applied.
                    Err(_) => {}
                }
            }
        }
        if !ended.is_empty() {
            let txn = self.db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(REVOCATIONS).map_err(err)?;
                for key in &ended {
                    table.remove(key.as_str()).map_err(err)?;
                }
            }
            txn.commit().map_err(err)?;
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RevokedKind;

    #[test]
    fn revocations_outlive_a_reopen_until_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let notice = |subject: &str, until| RevocationNotice {
            v: 0,
            kind: RevokedKind::User,
            subject: subject.into(),
            until,
            by: "root".into(),
        };
        {
            let state = LocalState::open(dir.path()).unwrap();
            state.put_revocation(&notice("mallory", None)).unwrap();
            state.put_revocation(&notice("eve", Some(100))).unwrap();
        }
        let state = LocalState::open(dir.path()).unwrap();
        let at = |now| {
            let mut names: Vec<_> = state.revocations(now).unwrap().into_iter().map(|n| n.subject).collect();
            names.sort();
            names
        };
        assert_eq!(at(50), ["eve", "mallory"]);
        assert_eq!(at(100), ["mallory"]);
        // Ended records are deleted, not only skipped.
        assert_eq!(at(50), ["mallory"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("state.redb"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
