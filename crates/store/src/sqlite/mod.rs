//! The embedded store: one SQLite file, `<data_dir>/faramesh.db`, in WAL mode.
//!
//! One writer thread owns the write connection and does group commit ([`writer`]); reads use
//! their own connections, so the CLI reads while a daemon writes.

mod control;
mod persist;
mod read;
pub mod schema;
mod writer;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use audit::chain::{Chain, DEFAULT_CHECKPOINT_EVERY};
use audit::note::Signer;
use audit::record::{Dpr, Hash};
use audit::verify::Row;
use rusqlite::{Connection, OpenFlags};

use crate::state::DurableState;
use crate::{
    Approval, ApprovalStatus, ApprovedCall, AuditRead, DEFAULT_APPROVAL_TTL_MS, Durability, Filter,
    Health, Kill, NewApproval, PolicyApplied, PolicyApply, PolicyVersion, Record, Resolution,
    Store, StoreError, Ticket,
};
use writer::{Batch, Finish, Head, Job, Op, Sealing, Writer};

/// The database file inside a data directory.
pub const FILE_NAME: &str = "faramesh.db";
/// How many appends may wait for the writer before `append` blocks (back-pressure).
const QUEUE: usize = 16_384;
/// Idle reader connections kept for reuse.
const IDLE_READERS: usize = 8;

/// How to open a store (SPEC §3.3 `runtime` keys).
#[derive(Debug, Clone)]
pub struct Config {
    /// `data_dir`; the file is `<data_dir>/faramesh.db`.
    pub data_dir: PathBuf,
    /// This daemon's chain id.
    pub chain: String,
    pub durability: Durability,
    pub checkpoint_every: u64,
    pub approval_ttl_ms: u64,
    /// Most records in one transaction; 1 turns group commit off (one fsync per record).
    pub max_batch: usize,
    /// `faramesh dev`: every record sealed by this store is tagged dev, the store's own
    /// (policy changes) included.
    pub dev: bool,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>, chain: impl Into<String>) -> Config {
        Config {
            data_dir: data_dir.into(),
            chain: chain.into(),
            durability: Durability::Sync,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            approval_ttl_ms: DEFAULT_APPROVAL_TTL_MS,
            max_batch: 4_096,
            dev: false,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.data_dir.join(FILE_NAME)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Storage(format!(
            "{}: journal mode {mode}, not WAL",
            path.display()
        )));
    }
    // Every commit reaches the disk before it returns: what `durability` promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// Reader connections, opened on demand and reused.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = match lock(&self.idle).pop() {
            Some(c) => c,
            None => connect(&self.path, OpenFlags::SQLITE_OPEN_READ_WRITE)?,
        };
        let out = f(&conn);
        let mut idle = lock(&self.idle);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

/// Read-only access to one chain of a store file, for the audit CLI (a daemon may be writing).
#[derive(Debug)]
pub struct SqliteReader {
    chain: String,
    readers: Readers,
}

impl SqliteReader {
    /// Opens `<data_dir>/faramesh.db` (migrating an older schema). `chain = None` picks the
    /// file's only chain; an error names them when there are several.
    pub fn open(data_dir: &Path, chain: Option<&str>) -> Result<SqliteReader, StoreError> {
        let path = data_dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StoreError::Storage(format!("{}: no store", path.display())));
        }
        let mut conn = connect(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        schema::migrate(&mut conn)?;
        let chain = match chain {
            Some(c) => c.to_owned(),
            None => only_chain(&conn)?,
        };
        Ok(SqliteReader {
            chain,
            readers: Readers {
                path,
                idle: Mutex::new(vec![conn]),
            },
        })
    }

    /// The chains the file holds.
    /// The source text of a stored policy version (`faramesh explain`).
    pub fn policy_source(&self, version: &str) -> Result<Option<String>, StoreError> {
        self.readers.with(|c| control::policy_source(c, version))
    }

    pub fn chains(&self) -> Result<Vec<String>, StoreError> {
        self.readers.with(chains)
    }
}

fn chains(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare("SELECT DISTINCT chain FROM dpr ORDER BY chain")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn only_chain(conn: &Connection) -> Result<String, StoreError> {
    let mut all = chains(conn)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(StoreError::Invalid("the store holds no records".into())),
        _ => Err(StoreError::Invalid(format!(
            "the store holds several chains ({}); name one",
            all.join(", ")
        ))),
    }
}

impl AuditRead for SqliteReader {
    fn chain_id(&self) -> &str {
        &self.chain
    }

    fn for_each_row(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        f: &mut dyn FnMut(Row<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.readers
            .with(|c| read::for_each_row(c, &self.chain, from_seq, to_seq, f))
    }

    fn hashes(&self, to_seq: u64) -> Result<Vec<Hash>, StoreError> {
        self.readers.with(|c| read::hashes(c, &self.chain, to_seq))
    }

    fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        self.readers.with(|c| read::checkpoints(c, &self.chain))
    }

    fn row_by_id(&self, id: &str) -> Result<Option<Record>, StoreError> {
        self.readers.with(|c| read::row_by_id(c, &self.chain, id))
    }

    fn seq_range(
        &self,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        self.readers
            .with(|c| read::seq_range(c, &self.chain, from_ms, to_ms))
    }

    fn query(&self, filter: &Filter) -> Result<Vec<Record>, StoreError> {
        self.readers.with(|c| read::query(c, &self.chain, filter))
    }
}

/// The SQLite [`Store`]. Dropping it closes it (see [`Store::close`]).
#[derive(Debug)]
pub struct SqliteStore {
    reader: SqliteReader,
    sender: SyncSender<Op>,
    /// The chain; in interval mode appends seal into it in the caller's thread.
    sealing: Arc<Sealing>,
    durability: Durability,
    writer: Mutex<Option<JoinHandle<()>>>,
    state: Arc<DurableState>,
    health: Arc<Mutex<Health>>,
    approval_ttl_ms: u64,
}

impl SqliteStore {
    /// Opens (creating or migrating) the store, resumes the chain from the stored hashes,
    /// loads the decision state and starts the writer. `signer` signs checkpoints.
    pub fn open(config: Config, signer: Box<dyn Signer>) -> Result<SqliteStore, StoreError> {
        if config.chain.is_empty() {
            return Err(StoreError::Invalid("an empty chain id".into()));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.path();
        let mut conn = connect(&path, OpenFlags::default())?;
        schema::migrate(&mut conn)?;
        let chain = Chain::resume(&config.chain, read::hashes(&conn, &config.chain, u64::MAX)?);
        let last_checkpoint = read::last_checkpoint(&conn, &config.chain)?;
        let state = Arc::new(DurableState::new());
        let history = persist::load(&conn, &state)?;
        let health = Arc::new(Mutex::new(Health {
            healthy: true,
            ..Health::default()
        }));
        // The writer checkpoints the WAL between its transactions (`Writer::checkpoint_wal`),
        // not inside a commit, where it would stall every ticket of the batch.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Statement journals (upserts inside the batch) in memory, not in temporary files
        // created and deleted by the kernel on every batch; and room for a batch's pages, so
        // a large batch is not spilled to the WAL before its commit.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -16_384)?;
        let (sender, rx) = sync_channel(QUEUE);
        let sealing = Arc::new(Sealing::new(Head {
            chain,
            signer,
            every: config.checkpoint_every.max(1),
            last_checkpoint,
            dev: config.dev,
        }));
        let writer = Writer {
            conn,
            sealing: Arc::clone(&sealing),
            rx,
            state: Arc::clone(&state),
            health: Arc::clone(&health),
            durability: config.durability,
            max_batch: config.max_batch.max(1),
            history,
            poisoned: None,
            replies: None,
            wal_checked: std::time::Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("faramesh-store-writer".into())
            .spawn(move || writer.run())?;
        Ok(SqliteStore {
            reader: SqliteReader {
                chain: config.chain,
                readers: Readers {
                    path,
                    idle: Mutex::new(Vec::new()),
                },
            },
            sender,
            sealing,
            durability: config.durability,
            writer: Mutex::new(Some(handle)),
            state,
            health,
            approval_ttl_ms: config.approval_ttl_ms,
        })
    }

    /// The decision state, typed (the [`Store::state`] handle is the same object).
    pub fn durable_state(&self) -> &Arc<DurableState> {
        &self.state
    }

    /// Runs `f` in the writer's next transaction; returns its result once that commits.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move |batch| {
            let out = f(batch);
            let keep = out.is_ok();
            let finish: Finish = Box::new(move |commit| {
                let _ = tx.send(commit.and(out));
            });
            (keep, finish)
        });
        self.sender
            .send(Op::Job(job))
            .map_err(|_| StoreError::Closed)?;
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl AuditRead for SqliteStore {
    fn chain_id(&self) -> &str {
        self.reader.chain_id()
    }

    fn for_each_row(
        &self,
        from_seq: u64,
        to_seq: Option<u64>,
        f: &mut dyn FnMut(Row<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.reader.for_each_row(from_seq, to_seq, f)
    }

    fn hashes(&self, to_seq: u64) -> Result<Vec<Hash>, StoreError> {
        self.reader.hashes(to_seq)
    }

    fn checkpoints(&self) -> Result<Vec<String>, StoreError> {
        self.reader.checkpoints()
    }

    fn row_by_id(&self, id: &str) -> Result<Option<Record>, StoreError> {
        self.reader.row_by_id(id)
    }

    fn seq_range(
        &self,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        self.reader.seq_range(from_ms, to_ms)
    }

    fn query(&self, filter: &Filter) -> Result<Vec<Record>, StoreError> {
        self.reader.query(filter)
    }
}

impl Store for SqliteStore {
    fn append(&self, dpr: Dpr) -> Ticket {
        if self.durability == Durability::Interval {
            let (sealed, flush) = self.sealing.seal(dpr);
            if flush {
                // A full channel means the writer is awake anyway.
                let _ = self.sender.try_send(Op::Flush);
            }
            return Ticket::ready(sealed);
        }
        let (tx, ticket) = Ticket::pending();
        match self.sender.send(Op::Append(Box::new(dpr), tx)) {
            Ok(()) => ticket,
            Err(_) => Ticket::ready(Err(StoreError::Closed)),
        }
    }

    fn apply_policy(&self, a: PolicyApply) -> Result<PolicyApplied, StoreError> {
        self.run(move |b| {
            let source = Some(a.source.as_str());
            control::activate(b, &a.version, source, &a.by, a.now_ms, a.record_id)
        })
    }

    fn activate_policy(
        &self,
        version: &str,
        record_id: String,
        by: &str,
        now_ms: i64,
    ) -> Result<PolicyApplied, StoreError> {
        let (version, by) = (version.to_owned(), by.to_owned());
        self.run(move |b| control::activate(b, &version, None, &by, now_ms, record_id))
    }

    fn policy_versions(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        self.reader.readers.with(control::policy_versions)
    }

    fn policy_source(&self, version: &str) -> Result<Option<String>, StoreError> {
        self.reader.policy_source(version)
    }

    fn request_approval(&self, new: NewApproval, now_ms: i64) -> Result<Approval, StoreError> {
        let ttl = self.approval_ttl_ms;
        self.run(move |b| control::request(b, &new, ttl, now_ms))
    }

    fn approval(&self, token: &str, now_ms: i64) -> Result<Option<Approval>, StoreError> {
        self.reader
            .readers
            .with(|c| control::approval(c, token, now_ms))
    }

    fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        now_ms: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        self.reader
            .readers
            .with(|c| control::approvals(c, status, now_ms))
    }

    fn resolve_approval(
        &self,
        token: &str,
        resolution: Resolution,
        now_ms: i64,
    ) -> Result<Approval, StoreError> {
        let token = token.to_owned();
        self.run(move |b| control::resolve(b, &token, &resolution, now_ms))
    }

    fn consume_approval(
        &self,
        token: &str,
        call: &ApprovedCall,
        now_ms: i64,
    ) -> Result<Approval, StoreError> {
        let (token, call) = (token.to_owned(), call.clone());
        self.run(move |b| control::consume(b, &token, &call, now_ms))
    }

    fn expire_approvals(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.run(move |b| control::expire(b, now_ms))
    }

    fn kill(&self, agent: Option<&str>, by: &str, now_ms: i64) -> Result<(), StoreError> {
        // In memory first: the switch holds from now on, even before it is on disk.
        self.state.set_kill(agent, Some((by.to_owned(), now_ms)));
        self.run(|_| Ok(()))
    }

    fn unkill(&self, agent: Option<&str>) -> Result<(), StoreError> {
        self.state.set_kill(agent, None);
        self.run(|_| Ok(()))
    }

    fn kills(&self) -> Result<Vec<Kill>, StoreError> {
        self.reader.readers.with(control::kills)
    }

    fn state(&self) -> Arc<dyn engine::state::StateStore> {
        Arc::clone(&self.state) as Arc<dyn engine::state::StateStore>
    }

    fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    fn close(&self) -> Result<(), StoreError> {
        let Some(handle) = lock(&self.writer).take() else {
            return Ok(());
        };
        let (tx, rx) = sync_channel(1);
        let result = match self.sender.send(Op::Close(tx)) {
            Ok(()) => rx.recv().unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        handle
            .join()
            .map_err(|_| StoreError::Storage("the writer thread panicked".into()))?;
        result
    }
}
