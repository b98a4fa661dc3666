//! Background jobs a server admin starts (shutting down and purging a
//! room, purging history, retention passes): each runs as its own task and
//! records its status, progress and result, so the admin API and the
//! console can show them (Synapse's scheduled tasks). Kept a day after
//! they end; a job that was running when the server stopped is marked
//! failed at the next start (the work itself is written to be resumed).

use std::{future::Future, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Error, Result,
    storage::{Batch, Db, maps},
    util,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Scheduled,
    Active,
    Complete,
    Failed,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Active => "active",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        [Self::Scheduled, Self::Active, Self::Complete, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == name)
    }

    pub fn ended(self) -> bool {
        matches!(self, Self::Complete | Self::Failed | Self::Cancelled)
    }
}

/// What `jobs` stores of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// What it does: `shutdown_and_purge_room`, `purge_history`, …
    pub action: String,
    /// What it works on (a room ID).
    pub resource_id: String,
    pub status: Status,
    /// When it started, or last changed status.
    pub timestamp_ms: u64,
    /// Items done and, when known, in all.
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub total: Option<u64>,
    /// What it came to (or has so far).
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

/// How long ended jobs are kept.
const KEEP_MS: u64 = 24 * 60 * 60 * 1000;

pub struct Jobs {
    db: Db,
}

/// A running job's way to report progress.
#[derive(Clone)]
pub struct Progress {
    jobs: Arc<Jobs>,
    id: String,
}

impl Progress {
    /// Records items done (and the total, once known).
    pub fn set(&self, done: u64, total: Option<u64>) {
        let _ = self.jobs.update(&self.id, |job| {
            job.done = done;
            if total.is_some() {
                job.total = total;
            }
        });
    }

    /// Records what the job has come to so far.
    pub fn result(&self, result: Value) {
        let _ = self.jobs.update(&self.id, |job| job.result = Some(result));
    }
}

impl Jobs {
    /// Opens the jobs; those a stop interrupted are marked failed.
    pub fn open(db: Db) -> Result<Arc<Self>> {
        let jobs = Arc::new(Self { db });
        for job in jobs.all()? {
            if !job.status.ended() {
                jobs.update(&job.id, |job| {
                    job.status = Status::Failed;
                    job.error = Some("interrupted: the server stopped while it ran".into());
                    job.timestamp_ms = util::now_ms();
                })?;
            }
        }
        Ok(jobs)
    }

    /// Every job kept, oldest first (ended ones past a day are dropped).
    pub fn all(&self) -> Result<Vec<Job>> {
        let now = util::now_ms();
        let mut kept = Vec::new();
        let mut batch = Batch::new();
        for (key, job) in self.db.scan_json::<Job>(&maps::JOBS, b"")? {
            if job.status.ended() && now.saturating_sub(job.timestamp_ms) > KEEP_MS {
                batch.delete(&maps::JOBS, key);
            } else {
                kept.push(job);
            }
        }
        self.db.write(batch)?;
        kept.sort_by(|a, b| a.timestamp_ms.cmp(&b.timestamp_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(kept)
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>> {
        Ok(self.db.get_json(&maps::JOBS, id.as_bytes())?)
    }

    /// Jobs of an action on a resource that have not ended.
    pub fn running(&self, action: &str, resource_id: &str) -> Result<Vec<Job>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|j| j.action == action && j.resource_id == resource_id && !j.status.ended())
            .collect())
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) -> Result<()> {
        let Some(mut job) = self.get(id)? else { return Ok(()) };
        change(&mut job);
        self.db.put_json(&maps::JOBS, id.as_bytes(), &job)?;
        Ok(())
    }

    /// Starts `work` as a job; its ID. The work's result completes the job,
    /// its error fails it.
    pub fn start<F, Fut>(self: &Arc<Self>, action: &str, resource_id: &str, work: F) -> Result<String>
    where
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Value>> + Send + 'static,
    {
        let id = util::random_string(16);
        let job = Job {
            id: id.clone(),
            action: action.to_owned(),
            resource_id: resource_id.to_owned(),
            status: Status::Active,
            timestamp_ms: util::now_ms(),
            done: 0,
            total: None,
            result: None,
            error: None,
        };
        self.db.put_json(&maps::JOBS, id.as_bytes(), &job)?;
        let progress = Progress { jobs: self.clone(), id: id.clone() };
        let jobs = self.clone();
        let job_id = id.clone();
        tokio::spawn(async move {
            let outcome = work(progress).await;
            let finished = jobs.update(&job_id, |job| {
                job.timestamp_ms = util::now_ms();
                match outcome {
                    Ok(result) => {
                        job.status = Status::Complete;
                        job.result = Some(result);
                    }
                    Err(e) => {
                        tracing::warn!("job {} ({} {}) failed: {e}", job.id, job.action, job.resource_id);
                        job.status = Status::Failed;
                        job.error = Some(e.to_string());
                    }
                }
            });
            if let Err(e) = finished {
                tracing::error!("job {job_id}: its end could not be recorded: {e}");
            }
        });
        Ok(id)
    }
}

impl From<&Job> for Value {
    fn from(job: &Job) -> Self {
        serde_json::json!({
            "id": job.id,
            "action": job.action,
            "status": job.status.as_str(),
            "timestamp_ms": job.timestamp_ms,
            "resource_id": job.resource_id,
            "result": job.result,
            "error": job.error,
            "progress": {"done": job.done, "total": job.total},
        })
    }
}

/// A job's error when its work panics or is refused.
pub fn refused(message: impl Into<String>) -> Error {
    Error::custom(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
}
