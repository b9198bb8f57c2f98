//! The daemon's execs by id: who owns each, its guest pid, the channel to the task that
//! runs it, and how it ended. Also the per-caller bound on running execs.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::super::{auth::Caller, gate::Call, status::ApiError};
use crate::pb;
use crate::sync::lock;

/// Who started an exec: the caller's authentication kind *and* id, so a token identity
/// spelled `uid:0` does not own the UNIX-socket execs of root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    /// `unix`, `token`, `mtls` or `none`.
    pub(crate) auth: String,
    /// The caller id.
    pub(crate) id: String,
}

impl Owner {
    pub(crate) fn of(c: &Caller) -> Self {
        Self {
            auth: c.auth.as_str().to_owned(),
            id: c.id.clone(),
        }
    }
}

/// Outgoing half of an exec event stream.
pub(crate) type EventTx = mpsc::Sender<Result<pb::ExecEvent, Status>>;

/// A place in the registry: the new exec's entry, and the receiver of its commands (for its
/// task).
pub(crate) type Reserved = (Arc<ExecEntry>, mpsc::Receiver<Cmd>);

/// A request to an exec's task.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// ExecAttach: deliver the rest of the output to `tx`; `call` is finished when this
    /// attachment ends.
    Attach {
        tx: EventTx,
        call: Box<Call>,
        reply: oneshot::Sender<Result<(), (Status, Box<Call>)>>,
    },
    /// ExecCancel: kill the program if it still runs; answers whether it was signalled.
    Cancel {
        reply: oneshot::Sender<Result<bool, Status>>,
    },
    /// An interactive session went without input past its policy's `idle_timeout_ms`:
    /// kill the program.
    Idle,
}

/// One exec this daemon started.
#[derive(Debug)]
pub(crate) struct ExecEntry {
    pub(crate) id: String,
    pub(crate) domain: String,
    pub(crate) owner: Owner,
    pid: AtomicI64,
    /// To the exec's task; closed once the task has ended.
    pub(crate) cmds: mpsc::Sender<Cmd>,
    /// Its task still runs (counts against `limits.execs_per_caller`).
    live: AtomicBool,
    /// How it ended, for attachers after the task has ended.
    finished: Mutex<Option<pb::ExecExited>>,
    /// Stdin was just written (interactive sessions): the task looks for output now,
    /// where the echo will be, instead of finishing its back-off pause.
    pub(crate) input: tokio::sync::Notify,
    /// Bulk stdin is being written (interactive sessions): the task polls output less
    /// often, leaving the agent's time to the writes.
    pub(crate) bulk_input: AtomicBool,
    /// Its record is in the state directory: a later daemon adopts it after a restart.
    persisted: AtomicBool,
}

impl ExecEntry {
    /// The guest pid (0 until the program started).
    pub(crate) fn pid(&self) -> i64 {
        self.pid.load(Ordering::Relaxed)
    }

    pub(crate) fn set_pid(&self, pid: i64) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// The program has ended: it no longer counts against `limits.execs_per_caller`
    /// (its task may still hold its output for an attach).
    pub(crate) fn mark_ended(&self) {
        self.live.store(false, Ordering::Relaxed);
    }

    /// How the exec ended, once its task is done.
    pub(crate) fn finished(&self) -> Option<pb::ExecExited> {
        *lock(&self.finished)
    }

    pub(crate) fn set_finished(&self, x: Option<pb::ExecExited>) {
        *lock(&self.finished) = x;
    }

    /// Whether its record is in the state directory (see [`super::persist`]).
    pub(crate) fn persisted(&self) -> bool {
        self.persisted.load(Ordering::Relaxed)
    }

    pub(crate) fn set_persisted(&self, on: bool) {
        self.persisted.store(on, Ordering::Relaxed);
    }
}

/// Running and recently finished execs by id.
#[derive(Debug, Default)]
pub(crate) struct ExecRegistry {
    map: Mutex<HashMap<String, Arc<ExecEntry>>>,
    /// Tasks still running (for shutdown).
    tasks: Arc<AtomicUsize>,
    /// The exec records of `[state]`, when configured.
    store: std::sync::OnceLock<super::persist::ExecStore>,
}

/// Commands queued per exec task; more wait for room.
const CMD_QUEUE: usize = 4;

impl ExecRegistry {
    /// Registers a new exec for `owner` unless it already has `limit` running, returning
    /// the entry and the receiving end of its task's command channel.
    pub(crate) fn reserve(
        &self,
        domain: &str,
        owner: Owner,
        limit: usize,
    ) -> Result<Reserved, Status> {
        let mut map = lock(&self.map);
        let running = map
            .values()
            .filter(|e| e.owner == owner && e.live.load(Ordering::Relaxed))
            .count();
        if running >= limit {
            return Err(ApiError::LimitExceeded {
                what: "too many running or detached execs for this caller",
                limit: "limits.execs_per_caller",
                value: limit,
            }
            .into());
        }
        let id = uuid::Uuid::new_v4().to_string();
        Ok(Self::insert(&mut map, id, domain, owner))
    }

    fn insert(
        map: &mut HashMap<String, Arc<ExecEntry>>,
        id: String,
        domain: &str,
        owner: Owner,
    ) -> Reserved {
        let (tx, rx) = mpsc::channel(CMD_QUEUE);
        let entry = Arc::new(ExecEntry {
            id: id.clone(),
            domain: domain.to_owned(),
            owner,
            pid: AtomicI64::new(0),
            cmds: tx,
            live: AtomicBool::new(true),
            finished: Mutex::new(None),
            input: tokio::sync::Notify::new(),
            bulk_input: AtomicBool::new(false),
            persisted: AtomicBool::new(false),
        });
        map.insert(id, Arc::clone(&entry));
        (entry, rx)
    }

    /// Registers an exec an earlier daemon instance started, under its id (not counted
    /// against the owner's limit: it already runs). `None` when the id is taken.
    pub(crate) fn adopt(&self, id: &str, domain: &str, owner: Owner) -> Option<Reserved> {
        let mut map = lock(&self.map);
        if map.contains_key(id) {
            return None;
        }
        Some(Self::insert(&mut map, id.to_owned(), domain, owner))
    }

    /// Sets the exec records' store (`[state]`), once, before anything is served.
    pub(crate) fn set_store(&self, store: super::persist::ExecStore) {
        if self.store.set(store).is_err() {
            tracing::warn!("exec state store set twice; the first is kept");
        }
    }

    /// The exec records' store, when `[state]` is configured.
    pub(crate) fn store(&self) -> Option<&super::persist::ExecStore> {
        self.store.get()
    }

    /// The guest an exec runs in and who started it (for the gate, before it is touched).
    pub(crate) fn domain_and_owner(&self, id: &str) -> Option<(String, Owner)> {
        self.get(id).map(|e| (e.domain.clone(), e.owner.clone()))
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<ExecEntry>> {
        lock(&self.map).get(id).cloned()
    }

    pub(crate) fn remove(&self, id: &str) {
        lock(&self.map).remove(id);
    }

    /// The guest pids of every exec this daemon knows (running, parked or finished).
    pub(crate) fn pids(&self) -> Vec<i64> {
        lock(&self.map).values().map(|e| e.pid()).collect()
    }

    /// Counts a task as running until the guard is dropped.
    pub(crate) fn task_guard(&self, entry: &Arc<ExecEntry>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::SeqCst);
        TaskGuard {
            tasks: Arc::clone(&self.tasks),
            entry: Arc::clone(entry),
        }
    }

    /// Waits (at most `limit`) until every exec task has let go of its guest handles
    /// after the shutdown token fired.
    pub(crate) async fn wait_tasks(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.tasks.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Held by an exec's task; marks the exec no longer running when dropped.
#[derive(Debug)]
pub(crate) struct TaskGuard {
    tasks: Arc<AtomicUsize>,
    entry: Arc<ExecEntry>,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.entry.live.store(false, Ordering::Relaxed);
        self.tasks.fetch_sub(1, Ordering::SeqCst);
    }
}
