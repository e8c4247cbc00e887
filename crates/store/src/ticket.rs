//! What [`crate::Store::append`] returns: a handle on the record's fate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use audit::record::Hash;
use tokio::sync::oneshot;

use crate::StoreError;

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: Hash,
}

pub(crate) type Reply = Result<Appended, StoreError>;

/// Resolves once the record is durable (`durability = sync`) or sealed (`interval`), or with
/// the error that kept it from being written. Wait on it with [`Ticket::wait`] or `.await`.
#[derive(Debug)]
pub struct Ticket(Inner);

#[derive(Debug)]
enum Inner {
    Ready(Option<Reply>),
    Waiting(oneshot::Receiver<Reply>),
}

impl Ticket {
    pub(crate) fn pending() -> (oneshot::Sender<Reply>, Ticket) {
        let (tx, rx) = oneshot::channel();
        (tx, Ticket(Inner::Waiting(rx)))
    }

    pub(crate) fn ready(reply: Reply) -> Ticket {
        Ticket(Inner::Ready(Some(reply)))
    }

    /// Blocks until the ticket resolves. Not from inside an async runtime: `.await` there.
    pub fn wait(self) -> Reply {
        match self.0 {
            Inner::Ready(r) => r.unwrap_or(Err(StoreError::Closed)),
            Inner::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
        }
    }
}

impl Future for Ticket {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match &mut self.0 {
            Inner::Ready(r) => Poll::Ready(r.take().unwrap_or(Err(StoreError::Closed))),
            // A writer that vanished without answering must not look like success.
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
        }
    }
}
