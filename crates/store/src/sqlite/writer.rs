//! The single writer: group commit of records, jobs and state changes.
//!
//! Appends from any number of threads queue on one channel. The writer takes everything
//! waiting, seals each record into the chain, inserts records, jobs' changes and the state
//! changes marked since the last batch in ONE transaction, commits it (one fsync), then hands
//! the batch's tickets to a second thread that answers them while the next transaction is
//! written. A failed transaction fails every ticket of its batch and rewinds the chain, so the
//! next batch continues from the last committed record.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SendError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use audit::chain::Chain;
use audit::note::Signer;
use audit::record::Dpr;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::persist;
use crate::state::{Changes, DurableState};
use crate::ticket::Reply;
use crate::{Appended, Durability, Health, StoreError};

/// How long an idle writer waits before storing state changes that no record followed.
const IDLE_FLUSH: Duration = Duration::from_millis(10);
/// In interval mode a transaction stays open this long after its first record, so it is on
/// disk within 10 ms of that record: this window plus one commit.
const INTERVAL_WINDOW: Duration = Duration::from_millis(5);

/// Runs inside the writer's transaction and returns what to do once it commits or fails.
pub(crate) type Job = Box<dyn FnOnce(&mut Batch<'_>) -> (bool, Finish) + Send>;
/// Told whether the transaction holding a job committed.
pub(crate) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Answers a close request once the writer has finished.
pub(crate) type CloseAck = std::sync::mpsc::SyncSender<Result<(), StoreError>>;

pub(crate) enum Op {
    Append(Box<Dpr>, oneshot::Sender<Reply>),
    Job(Job),
    Close(CloseAck),
}

/// The chain's head and what signing checkpoints needs.
pub(crate) struct Head {
    pub chain: Chain,
    pub signer: Box<dyn Signer>,
    pub every: u64,
    /// Tree size of the last stored checkpoint.
    pub last_checkpoint: u64,
}

/// What a job sees: the open transaction and the chain.
pub(crate) struct Batch<'a> {
    tx: &'a Transaction<'a>,
    head: &'a mut Head,
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
    let s = head.chain.seal(dpr);
    let mut insert = tx.prepare_cached(
        "INSERT INTO dpr (chain, seq, hash, body, id, time_ms, agent, effect)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    insert.execute(params![
        s.dpr.chain,
        to_i64(s.dpr.seq)?,
        &s.hash.0[..],
        s.body,
        s.dpr.id,
        s.dpr.time_ms,
        s.dpr.agent,
        s.dpr.effect,
    ])?;
    if head.chain.len() >= head.last_checkpoint.saturating_add(head.every) {
        checkpoint(tx, head)?;
    }
    Ok(Appended {
        seq: s.dpr.seq,
        hash: s.hash,
    })
}

/// Signs and stores a checkpoint of the chain as it stands. A signer that fails (a KMS
/// outage) does not fail the records: the next record tries again.
fn checkpoint(tx: &Transaction<'_>, head: &mut Head) -> Result<(), StoreError> {
    let size = head.chain.len();
    let Ok(note) = head.chain.checkpoint(now_ms()).sign(&*head.signer) else {
        return Ok(());
    };
    tx.prepare_cached("INSERT INTO checkpoints (chain, size, note) VALUES (?1, ?2, ?3)")?
        .execute(params![head.chain.id(), to_i64(size)?, note])?;
    head.last_checkpoint = size;
    Ok(())
}

/// What a batch owes its callers once it commits (or fails).
#[derive(Default)]
pub(crate) struct Owed {
    acks: Vec<(oneshot::Sender<Reply>, Appended)>,
    /// Records whose insert failed (the batch fails with them).
    failed: Vec<oneshot::Sender<Reply>>,
    finishes: Vec<Finish>,
    /// Tickets already answered (interval mode): records lost if the commit fails.
    answered: u64,
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
        Op::Close(ack) => {
            let _ = ack.send(Err(e.clone()));
        }
    }
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub head: Head,
    pub rx: Receiver<Op>,
    pub state: Arc<DurableState>,
    pub health: Arc<Mutex<Health>>,
    pub durability: Durability,
    pub max_batch: usize,
    pub history: persist::HistoryPruner,
    /// Set when an interval-mode commit failed after its tickets were answered: nothing more
    /// is written, so no acknowledged `seq` is ever given to another record.
    pub poisoned: Option<StoreError>,
    /// Where settled batches go to have their tickets answered (see [`Writer::run`]).
    pub replies: Option<Sender<(Owed, Result<(), StoreError>)>>,
}

impl Writer {
    /// Writes batches until closed. Answering a batch's tickets (a thread wake-up each) is
    /// left to a second thread, so the writer starts the next transaction at once instead of
    /// waking 64 callers first; it answers them in batch order, and only after the
    /// transaction committed.
    pub fn run(mut self) {
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

    /// The batches, until the store closes; returns the close request.
    fn write(&mut self) -> Option<CloseAck> {
        loop {
            let first = match self.rx.recv_timeout(IDLE_FLUSH) {
                Ok(Op::Close(ack)) => break Some(ack),
                Ok(op) => Some(op),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break None,
            };
            if first.is_none() && !self.state.has_changes() {
                continue;
            }
            if let Some(ack) = self.batch(first) {
                break Some(ack);
            }
        }
    }

    /// Writes what is still queued and a final checkpoint.
    fn shutdown(&mut self) -> Result<(), StoreError> {
        while let Ok(op) = self.rx.try_recv() {
            if let Some(ack) = self.batch(Some(op)) {
                let _ = ack.send(Ok(()));
            }
        }
        if self.state.has_changes() {
            self.batch(None);
        }
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        if self.head.chain.len() > self.head.last_checkpoint {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            checkpoint(&tx, &mut self.head)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// One transaction: `first` and whatever else is waiting. Returns a close request met on
    /// the way, after the batch is done.
    fn batch(&mut self, first: Option<Op>) -> Option<CloseAck> {
        if let Some(e) = &self.poisoned {
            let e = e.clone();
            return drain_refusing(&self.rx, first, &e);
        }
        let saved = (self.head.chain.clone(), self.head.last_checkpoint);
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
        let mut result = Ok(());
        let mut close = None;
        let mut next = first;
        let mut taken = 0usize;
        let deadline = Instant::now() + INTERVAL_WINDOW;
        let interval = self.durability == Durability::Interval;
        loop {
            match next.take() {
                Some(Op::Close(ack)) => {
                    close = Some(ack);
                    break;
                }
                Some(op) if result.is_ok() => {
                    taken += 1;
                    result = process(&tx, &mut self.head, op, &mut owed, interval);
                }
                Some(op) => refuse(op, &StoreError::Storage("the batch failed".into())),
                None => {}
            }
            if taken >= self.max_batch {
                break;
            }
            next = match self.rx.try_recv() {
                Ok(op) => Some(op),
                Err(TryRecvError::Empty) if interval && taken > 0 => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.rx.recv_timeout(left) {
                        Ok(op) => Some(op),
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
        }
        // Marks made before any op of this batch was sent are visible here.
        let changes = self.state.take_changes();
        if result.is_ok() {
            result = persist::store_changes(&tx, &changes, &mut self.history);
        }
        let result = result.and_then(|()| tx.commit().map_err(StoreError::from));
        self.settle(result, owed, changes, saved);
        close
    }

    fn settle(
        &mut self,
        result: Result<(), StoreError>,
        owed: Owed,
        changes: Changes,
        saved: (Chain, u64),
    ) {
        match &result {
            Ok(()) => {
                let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
                h.healthy = true;
            }
            Err(e) => {
                fail_health(&self.health, e);
                (self.head.chain, self.head.last_checkpoint) = saved;
                self.state.requeue(changes);
                if owed.answered > 0 {
                    let lost = StoreError::Storage(format!(
                        "a commit failed after {} records were acknowledged (durability = \
                         interval); they are lost and the writer has stopped: {e}",
                        owed.answered
                    ));
                    fail_health(&self.health, &lost);
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
    head: &mut Head,
    op: Op,
    owed: &mut Owed,
    interval: bool,
) -> Result<(), StoreError> {
    match op {
        Op::Append(dpr, reply) => {
            let appended = append(tx, head, *dpr);
            match appended {
                Ok(a) if interval => {
                    owed.answered += 1;
                    let _ = reply.send(Ok(a));
                }
                Ok(a) => owed.acks.push((reply, a)),
                // Answered with the batch, after the health is updated.
                Err(e) => {
                    owed.failed.push(reply);
                    return Err(e);
                }
            }
            Ok(())
        }
        Op::Job(job) => run_job(tx, head, job, owed),
        // Handled by the caller.
        Op::Close(_) => Ok(()),
    }
}

/// A job runs in a savepoint: a job that fails (an approval that is not pending) is undone
/// alone; the records beside it still commit.
fn run_job(
    tx: &Transaction<'_>,
    head: &mut Head,
    job: Job,
    owed: &mut Owed,
) -> Result<(), StoreError> {
    let saved = (head.chain.clone(), head.last_checkpoint);
    tx.execute_batch("SAVEPOINT job")?;
    let (keep, finish) = job(&mut Batch { tx, head });
    owed.finishes.push(finish);
    if keep {
        tx.execute_batch("RELEASE job")?;
    } else {
        (head.chain, head.last_checkpoint) = saved;
        tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
    }
    Ok(())
}
