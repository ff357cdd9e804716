//! The server's blob store as the worker process sees it: each call is a request over the
//! socket, answered by the server from its own store, so a stream's tensors outlive the
//! worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::ControlSink;
use crate::pool::ipc::{Frame, FromWorker};
use crate::store::{BlobStore, StoreError};

/// How long a blob request to the server may take.
const BLOB_TIMEOUT: Duration = Duration::from_secs(60);

/// The server's answer to one blob request.
#[derive(Debug)]
pub(super) enum BlobAnswer {
    Stored(Result<String, StoreError>),
    Loaded(Result<bool, String>, Vec<u8>),
}

/// The server's blob store, reached over the socket; blocking calls from generator threads.
#[derive(Debug)]
pub struct RemoteBlobStore {
    sink: ControlSink,
    next_call: AtomicU64,
    pending: Mutex<HashMap<u64, std::sync::mpsc::Sender<BlobAnswer>>>,
}

impl RemoteBlobStore {
    pub(super) fn new(sink: ControlSink) -> Self {
        Self {
            sink,
            next_call: AtomicU64::new(1),
            pending: Mutex::default(),
        }
    }

    fn call(
        &self,
        request: impl FnOnce(u64) -> Frame<FromWorker>,
    ) -> Result<BlobAnswer, StoreError> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        self.pending.lock().insert(call, tx);
        let gone = || StoreError::Backend("the server's socket is closed".into());
        self.sink.send(request(call)).map_err(|_| gone())?;
        let answer = rx.recv_timeout(BLOB_TIMEOUT).map_err(|_| {
            StoreError::Backend(format!("the server did not answer within {BLOB_TIMEOUT:?}"))
        });
        self.pending.lock().remove(&call);
        answer
    }

    pub(super) fn answer(&self, call: u64, answer: BlobAnswer) {
        if let Some(tx) = self.pending.lock().remove(&call) {
            let _ = tx.send(answer);
        }
    }
}

impl BlobStore for RemoteBlobStore {
    fn put(&self, owner: &str, data: Vec<u8>) -> Result<String, StoreError> {
        let owner = owner.to_string();
        match self.call(|call| Frame::with_body(FromWorker::BlobPut { call, owner }, data))? {
            BlobAnswer::Stored(result) => result,
            BlobAnswer::Loaded(..) => Err(StoreError::Backend("mismatched answer".into())),
        }
    }

    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, StoreError> {
        let id = id.to_string();
        match self.call(|call| Frame::new(FromWorker::BlobGet { call, id }))? {
            BlobAnswer::Loaded(Ok(true), data) => Ok(Some(Arc::new(data))),
            BlobAnswer::Loaded(Ok(false), _) => Ok(None),
            BlobAnswer::Loaded(Err(e), _) => Err(StoreError::Backend(e)),
            BlobAnswer::Stored(_) => Err(StoreError::Backend("mismatched answer".into())),
        }
    }

    fn drop_owner(&self, owner: &str) {
        let _ = self.sink.send(Frame::new(FromWorker::BlobDropOwner {
            owner: owner.to_string(),
        }));
    }
}
