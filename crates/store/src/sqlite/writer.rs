//! The single writer: group commit of records, jobs and state changes.
//!
//! `durability = sync`: appends from any number of threads queue on one channel. The writer
//! takes everything waiting, seals each record into the chain, inserts records, jobs' changes
//! and the state changes marked since the last batch in ONE transaction, commits it (one
//! fsync), then hands the batch's tickets to a second thread that answers them while the next
//! transaction is written. A failed transaction fails every ticket of its batch and rewinds the
//! chain, so the next batch continues from the last committed record.
//!
//! `durability = interval`: the caller seals its record itself, under the chain's lock, and
//! leaves it in the [`Tip`]'s queue; its ticket is answered at once. The writer takes the
//! queue every [`INTERVAL_WINDOW`] and commits it. No thread is woken for a record, so an
//! answer costs no thread hand-offs. Whatever the writer seals itself (a job's record) it
//! seals under the same lock after inserting the queue, so records always reach the disk in
//! `seq` order and a crash loses a suffix of the chain, never a record in the middle.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SendError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use audit::chain::{Chain, Sealed};
use audit::note::Signer;
use audit::record::Dpr;
use audit::record::Hash;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::persist;
use crate::state::{Changes, DurableState};
use crate::ticket::Reply;
use crate::{Appended, Durability, Health, StoreError};

/// How long an idle writer waits before storing state changes that no record followed.
const IDLE_FLUSH: Duration = Duration::from_millis(10);
/// In interval mode the writer commits what was sealed this often, so a record is on disk
/// within 10 ms: this window plus one commit.
const INTERVAL_WINDOW: Duration = Duration::from_millis(5);
/// Records sealed and not yet taken by the writer before sealing waits (back-pressure): it
/// bounds how far the disk may fall behind the answers under overload.
const MAX_QUEUED: usize = 2_048;
/// A queue this long is taken at once rather than at the next tick.
const FLUSH_AT: usize = 256;
/// How often the writer copies the WAL into the database file (see [`Writer::checkpoint_wal`]).
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Runs inside the writer's transaction and returns what to do once it commits or fails.
pub(crate) type Job = Box<dyn FnOnce(&mut Batch<'_>) -> (bool, Finish) + Send>;
/// Told whether the transaction holding a job committed.
pub(crate) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Answers a close request once the writer has finished.
pub(crate) type CloseAck = std::sync::mpsc::SyncSender<Result<(), StoreError>>;

pub(crate) enum Op {
    Append(Box<Dpr>, oneshot::Sender<Reply>),
    Job(Job),
    /// Commit what callers sealed now (interval mode, the queue is long).
    Flush,
    Close(CloseAck),
}

/// The chain's head and what signing checkpoints needs.
pub(crate) struct Head {
    pub chain: Chain,
    pub signer: Box<dyn Signer>,
    pub every: u64,
    /// Tree size of the last stored checkpoint.
    pub last_checkpoint: u64,
    /// Tag every record dev (`faramesh dev`).
    pub dev: bool,
}

/// What the writer stores of a sealed record. The rest of the record is freed by the thread
/// that sealed it, which allocated it: freeing dozens of small allocations on the writer's
/// thread instead costs the allocator cross-thread work on both.
pub(crate) struct Row {
    seq: u64,
    hash: Hash,
    body: String,
    id: String,
    time_ms: i64,
    agent: Option<String>,
    effect: Option<String>,
}

impl Row {
    fn of(s: Sealed) -> (Row, Dpr) {
        let mut dpr = s.dpr;
        let row = Row {
            seq: dpr.seq,
            hash: s.hash,
            body: s.body,
            id: std::mem::take(&mut dpr.id),
            time_ms: dpr.time_ms,
            agent: dpr.agent.take(),
            effect: dpr.effect.take(),
        };
        (row, dpr)
    }

    fn appended(&self) -> Appended {
        Appended {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

impl Head {
    /// Seals `dpr`; returns its row and what is left of the record, to free.
    fn seal(&mut self, mut dpr: Dpr) -> (Row, Dpr) {
        dpr.dev |= self.dev;
        Row::of(self.chain.seal(dpr))
    }

    /// Signs a checkpoint of the chain as it stands when one is due. A signer that fails (a
    /// KMS outage) does not fail the records: the next record tries again.
    fn due_checkpoint(&mut self) -> Option<Note> {
        if self.chain.len() < self.last_checkpoint.saturating_add(self.every) {
            return None;
        }
        self.sign_checkpoint()
    }

    fn sign_checkpoint(&mut self) -> Option<Note> {
        let size = self.chain.len();
        let note = self.chain.checkpoint(now_ms()).sign(&*self.signer).ok()?;
        self.last_checkpoint = size;
        Some(Note { size, note })
    }
}

/// A signed checkpoint to store.
pub(crate) struct Note {
    size: u64,
    note: String,
}

/// The head and, in interval mode, what callers sealed that the writer has not taken yet.
pub(crate) struct Tip {
    pub head: Head,
    sealed: Vec<Row>,
    notes: Vec<Note>,
    /// Set when sealing must stop: the store closed, or a commit lost acknowledged records.
    refused: Option<StoreError>,
}

/// The chain, shared by the writer and (interval mode) the callers that seal.
pub(crate) struct Sealing {
    tip: Mutex<Tip>,
    /// Signalled when the writer takes the queue.
    room: Condvar,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").finish_non_exhaustive()
    }
}

impl Sealing {
    pub fn new(head: Head) -> Sealing {
        Sealing {
            tip: Mutex::new(Tip {
                head,
                sealed: Vec::new(),
                notes: Vec::new(),
                refused: None,
            }),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tip> {
        self.tip.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seals `dpr` in the caller's thread and queues it for the writer (interval mode).
    /// Also says whether the queue has grown long enough to wake the writer.
    pub fn seal(&self, dpr: Dpr) -> (Result<Appended, StoreError>, bool) {
        let mut tip = self.lock();
        while tip.sealed.len() >= MAX_QUEUED && tip.refused.is_none() {
            tip = self.room.wait(tip).unwrap_or_else(PoisonError::into_inner);
        }
        if let Some(e) = &tip.refused {
            return (Err(e.clone()), false);
        }
        let (row, rest) = tip.head.seal(dpr);
        let appended = row.appended();
        tip.sealed.push(row);
        if let Some(note) = tip.head.due_checkpoint() {
            tip.notes.push(note);
        }
        let flush = tip.sealed.len() == FLUSH_AT;
        drop(tip);
        drop(rest);
        (Ok(appended), flush)
    }

    /// Inserts what callers sealed into `tx`, without holding the chain while inserting.
    fn insert_taken(&self, tx: &Transaction<'_>, owed: &mut Owed) -> Result<(), StoreError> {
        let (taken, chain) = {
            let mut tip = self.lock();
            if !tip.has_sealed() {
                return Ok(());
            }
            (tip.take(&self.room), tip.head.chain.id().to_owned())
        };
        taken.insert(tx, &chain, owed)
    }

    /// Refuses every later seal with `e`.
    fn refuse(&self, e: StoreError) {
        let mut tip = self.lock();
        if tip.refused.is_none() {
            tip.refused = Some(e);
        }
        self.room.notify_all();
    }
}

/// What a job sees: the open transaction and the chain.
pub(crate) struct Batch<'a> {
    tx: &'a Transaction<'a>,
    head: &'a mut Head,
    written: &'a mut u64,
}

impl Batch<'_> {
    pub fn tx(&self) -> &Transaction<'_> {
        self.tx
    }

    pub fn chain_id(&self) -> &str {
        self.head.chain.id()
    }

    /// Seals and inserts a record into this transaction.
    pub fn append(&mut self, dpr: Dpr) -> Result<Appended, StoreError> {
        *self.written += 1;
        append(self.tx, self.head, dpr)
    }
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{n} is out of range")))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn append(tx: &Transaction<'_>, head: &mut Head, dpr: Dpr) -> Result<Appended, StoreError> {
    let (row, _) = head.seal(dpr);
    insert(tx, head.chain.id(), &row)?;
    if let Some(note) = head.due_checkpoint() {
        store_note(tx, head.chain.id(), &note)?;
    }
    Ok(row.appended())
}

fn insert(tx: &Transaction<'_>, chain: &str, r: &Row) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO dpr (chain, seq, hash, body, id, time_ms, agent, effect)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    insert.execute(params![
        chain,
        to_i64(r.seq)?,
        &r.hash.0[..],
        r.body,
        r.id,
        r.time_ms,
        r.agent,
        r.effect,
    ])?;
    Ok(())
}

fn store_note(tx: &Transaction<'_>, chain: &str, note: &Note) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO checkpoints (chain, size, note) VALUES (?1, ?2, ?3)")?
        .execute(params![chain, to_i64(note.size)?, note.note])?;
    Ok(())
}

/// What callers sealed since the writer last looked, in `seq` order.
#[derive(Default)]
pub(crate) struct Taken {
    sealed: Vec<Row>,
    notes: Vec<Note>,
}

impl Tip {
    fn has_sealed(&self) -> bool {
        !self.sealed.is_empty() || !self.notes.is_empty()
    }

    fn take(&mut self, room: &Condvar) -> Taken {
        if self.sealed.is_empty() && self.notes.is_empty() {
            return Taken::default();
        }
        let capacity = self.sealed.len();
        room.notify_all();
        Taken {
            sealed: std::mem::replace(&mut self.sealed, Vec::with_capacity(capacity)),
            notes: std::mem::take(&mut self.notes),
        }
    }
}

impl Taken {
    /// Inserts the records and checkpoints. They count as written even when an insert fails:
    /// they were acknowledged, and are lost with the transaction.
    fn insert(self, tx: &Transaction<'_>, chain: &str, owed: &mut Owed) -> Result<(), StoreError> {
        owed.written += self.sealed.len() as u64;
        for row in &self.sealed {
            insert(tx, chain, row)?;
        }
        for note in &self.notes {
            store_note(tx, chain, note)?;
        }
        Ok(())
    }
}

/// What a batch owes its callers once it commits (or fails).
#[derive(Default)]
pub(crate) struct Owed {
    acks: Vec<(oneshot::Sender<Reply>, Appended)>,
    /// Records whose insert failed (the batch fails with them).
    failed: Vec<oneshot::Sender<Reply>>,
    finishes: Vec<Finish>,
    /// Records inserted by this transaction.
    written: u64,
}

impl Owed {
    fn settle(self, result: &Result<(), StoreError>) {
        for (tx, appended) in self.acks {
            let _ = tx.send(result.clone().map(|()| appended));
        }
        let unwritten = || StoreError::Storage("the record was not written".into());
        for tx in self.failed {
            let _ = tx.send(Err(result.clone().err().unwrap_or_else(unwritten)));
        }
        for finish in self.finishes {
            finish(result.clone());
        }
    }
}

/// Answers an op that will never be written.
fn refuse(op: Op, e: &StoreError) {
    match op {
        Op::Append(_, tx) => {
            let _ = tx.send(Err(e.clone()));
        }
        Op::Job(job) => drop(job),
        Op::Flush => {}
        Op::Close(ack) => {
            let _ = ack.send(Err(e.clone()));
        }
    }
}

/// Stops callers from sealing once the writer is gone, however it ends, so none waits for
/// room that no writer will make.
struct RefuseOnDrop(Arc<Sealing>);

impl Drop for RefuseOnDrop {
    fn drop(&mut self) {
        self.0.refuse(StoreError::Closed);
    }
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub sealing: Arc<Sealing>,
    pub rx: Receiver<Op>,
    pub state: Arc<DurableState>,
    pub health: Arc<Mutex<Health>>,
    pub durability: Durability,
    pub max_batch: usize,
    pub history: persist::HistoryPruner,
    /// Set when an interval-mode commit failed after its records were acknowledged: nothing
    /// more is written, so no acknowledged `seq` is ever given to another record.
    pub poisoned: Option<StoreError>,
    /// Where settled batches go to have their tickets answered (see [`Writer::run`]).
    pub replies: Option<Sender<(Owed, Result<(), StoreError>)>>,
    /// When the writer last checkpointed the WAL.
    pub wal_checked: Instant,
}

impl Writer {
    /// Writes batches until closed. Answering a batch's tickets (a thread wake-up each) is
    /// left to a second thread, so the writer starts the next transaction at once instead of
    /// waking 64 callers first; it answers them in batch order, and only after the
    /// transaction committed.
    pub fn run(mut self) {
        let _refuse = RefuseOnDrop(Arc::clone(&self.sealing));
        let (replies, pending) = std::sync::mpsc::channel::<(Owed, Result<(), StoreError>)>();
        let answerer = std::thread::Builder::new()
            .name("faramesh-store-replies".into())
            .spawn(move || {
                for (owed, result) in pending {
                    owed.settle(&result);
                }
            });
        // Without a second thread the writer answers its tickets itself.
        if answerer.is_ok() {
            self.replies = Some(replies);
        }
        let close = self.write();
        let result = self.shutdown();
        // Every ticket is answered before `close` returns.
        self.replies = None;
        if let Ok(answerer) = answerer {
            let _ = answerer.join();
        }
        if let Some(ack) = close {
            let _ = ack.send(result);
        }
    }

    fn interval(&self) -> bool {
        self.durability == Durability::Interval
    }

    /// The batches, until the store closes; returns the close request.
    fn write(&mut self) -> Option<CloseAck> {
        let wait = if self.interval() {
            INTERVAL_WINDOW
        } else {
            IDLE_FLUSH
        };
        loop {
            let first = match self.rx.recv_timeout(wait) {
                Ok(Op::Close(ack)) => break Some(ack),
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break None,
            };
            if first.is_none() && !self.state.has_changes() && !self.sealing.lock().has_sealed() {
                continue;
            }
            if let Some(ack) = self.batch(first) {
                break Some(ack);
            }
        }
    }

    /// Writes what is still queued or sealed, and a final checkpoint.
    fn shutdown(&mut self) -> Result<(), StoreError> {
        while let Ok(op) = self.rx.try_recv() {
            if let Some(ack) = self.batch(Some(op)) {
                let _ = ack.send(Ok(()));
            }
        }
        // Nothing is sealed after this, so the last batch takes every sealed record.
        self.sealing.refuse(StoreError::Closed);
        if self.state.has_changes() || self.sealing.lock().has_sealed() {
            self.batch(None);
        }
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        {
            let mut tip = self.sealing.lock();
            if tip.head.chain.len() > tip.head.last_checkpoint {
                let tx = self
                    .conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?;
                if let Some(note) = tip.head.sign_checkpoint() {
                    store_note(&tx, tip.head.chain.id(), &note)?;
                }
                tx.commit()?;
            }
        }
        // Leaves the database file whole and the WAL empty for whoever opens it next.
        self.checkpoint_wal("TRUNCATE");
        Ok(())
    }

    /// One transaction: what callers sealed, `first` and whatever else is waiting. Returns a
    /// close request met on the way, after the batch is done.
    fn batch(&mut self, first: Option<Op>) -> Option<CloseAck> {
        if let Some(e) = &self.poisoned {
            let e = e.clone();
            return drain_refusing(&self.rx, first, &e);
        }
        // Only sync mode rewinds: in interval mode callers may have sealed on top.
        let saved = (!self.interval()).then(|| {
            let tip = self.sealing.lock();
            (tip.head.chain.clone(), tip.head.last_checkpoint)
        });
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                let e = StoreError::from(e);
                fail_health(&self.health, &e);
                return drain_refusing(&self.rx, first, &e);
            }
        };
        let mut owed = Owed::default();
        let mut result = self.sealing.insert_taken(&tx, &mut owed);
        let mut close = None;
        let mut next = first;
        let mut ops = 0usize;
        loop {
            match next.take() {
                Some(Op::Close(ack)) => {
                    close = Some(ack);
                    break;
                }
                Some(op) if result.is_ok() => {
                    ops += 1;
                    result = process(&tx, &self.sealing, op, &mut owed);
                }
                Some(op) => refuse(op, &StoreError::Storage("the batch failed".into())),
                None => {}
            }
            if ops >= self.max_batch {
                break;
            }
            next = match self.rx.try_recv() {
                Ok(op) => Some(op),
                Err(_) => break,
            };
        }
        // Marks made before any op of this batch was sent, or any record of it sealed, are
        // visible here.
        let changes = self.state.take_changes();
        if result.is_ok() {
            result = persist::store_changes(&tx, &changes, &mut self.history);
        }
        let result = result.and_then(|()| tx.commit().map_err(StoreError::from));
        self.settle(result, owed, changes, saved);
        if self.wal_checked.elapsed() >= WAL_CHECKPOINT_EVERY {
            self.checkpoint_wal("PASSIVE");
        }
        close
    }

    /// Copies the WAL into the database file, between two transactions, every
    /// [`WAL_CHECKPOINT_EVERY`]. SQLite rewinds a WAL only once it is wholly copied; a
    /// checkpointer beside a writer that never pauses never gets there, and the WAL grows
    /// without end, each commit appending to a longer file (measured: a third more CPU per
    /// record with `sync`). Run by the writer itself, a checkpoint catches up with the last
    /// frame and the next transaction starts the WAL again from its beginning.
    fn checkpoint_wal(&mut self, mode: &str) {
        self.wal_checked = Instant::now();
        // A checkpoint that cannot finish now (a reader holds an old snapshot) is retried
        // next time; it never affects the records.
        let _ = self
            .conn
            .execute_batch(&format!("PRAGMA wal_checkpoint({mode})"));
    }

    fn settle(
        &mut self,
        result: Result<(), StoreError>,
        owed: Owed,
        changes: Changes,
        saved: Option<(Chain, u64)>,
    ) {
        match &result {
            Ok(()) => {
                let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
                h.healthy = true;
            }
            Err(e) => {
                fail_health(&self.health, e);
                self.state.requeue(changes);
                if let Some(saved) = saved {
                    let mut tip = self.sealing.lock();
                    (tip.head.chain, tip.head.last_checkpoint) = saved;
                } else if owed.written > 0 {
                    let lost = StoreError::Storage(format!(
                        "a commit failed after {} records were acknowledged (durability = \
                         interval); they are lost and the writer has stopped: {e}",
                        owed.written
                    ));
                    fail_health(&self.health, &lost);
                    self.sealing.refuse(lost.clone());
                    self.poisoned = Some(lost);
                }
            }
        }
        match &self.replies {
            Some(replies) => {
                if let Err(SendError((owed, result))) = replies.send((owed, result)) {
                    owed.settle(&result);
                }
            }
            None => owed.settle(&result),
        }
    }
}

/// Refuses `first` and everything waiting, up to a close request.
fn drain_refusing(rx: &Receiver<Op>, first: Option<Op>, e: &StoreError) -> Option<CloseAck> {
    let mut next = first;
    while let Some(op) = next.take() {
        if let Op::Close(ack) = op {
            return Some(ack);
        }
        refuse(op, e);
        next = rx.try_recv().ok();
    }
    None
}

fn fail_health(health: &Mutex<Health>, e: &StoreError) {
    let mut h = health.lock().unwrap_or_else(PoisonError::into_inner);
    h.healthy = false;
    h.failures += 1;
    h.last_error = Some(e.to_string());
}

fn process(
    tx: &Transaction<'_>,
    sealing: &Sealing,
    op: Op,
    owed: &mut Owed,
) -> Result<(), StoreError> {
    match op {
        Op::Append(dpr, reply) => {
            let mut tip = sealing.lock();
            let taken = tip.take(&sealing.room);
            taken.insert(tx, tip.head.chain.id(), owed)?;
            match append(tx, &mut tip.head, *dpr) {
                Ok(a) => {
                    owed.written += 1;
                    owed.acks.push((reply, a));
                    Ok(())
                }
                // Answered with the batch, after the health is updated.
                Err(e) => {
                    owed.failed.push(reply);
                    Err(e)
                }
            }
        }
        Op::Job(job) => run_job(tx, sealing, job, owed),
        // The batch has taken the queue already; handled by the caller.
        Op::Flush | Op::Close(_) => Ok(()),
    }
}

/// A job runs in a savepoint: a job that fails (an approval that is not pending) is undone
/// alone; the records beside it still commit. It holds the chain throughout, so nothing is
/// sealed on top of a record it may take back.
fn run_job(
    tx: &Transaction<'_>,
    sealing: &Sealing,
    job: Job,
    owed: &mut Owed,
) -> Result<(), StoreError> {
    let mut tip = sealing.lock();
    let taken = tip.take(&sealing.room);
    taken.insert(tx, tip.head.chain.id(), owed)?;
    let saved = (tip.head.chain.clone(), tip.head.last_checkpoint);
    tx.execute_batch("SAVEPOINT job")?;
    let mut written = 0;
    let (keep, finish) = job(&mut Batch {
        tx,
        head: &mut tip.head,
        written: &mut written,
    });
    owed.finishes.push(finish);
    if keep {
        owed.written += written;
        tx.execute_batch("RELEASE job")?;
    } else {
        (tip.head.chain, tip.head.last_checkpoint) = saved;
        tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    Ok(())
}
