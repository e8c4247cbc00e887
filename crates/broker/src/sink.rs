//! Audit sinks: where the daemon ships each DPR off the hot path (SPEC §5 step 10). The dev
//! sink, and the only one so far, is a JSON-lines file; Splunk HEC and webhook sinks are not
//! supported yet.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::BrokerError;

/// The **audit_sink** capability of SPEC §10: takes one record, already encoded as compact
/// JSON on one line.
pub trait AuditSink: Send + Sync + fmt::Debug {
    fn send(&self, record_json: &str) -> Result<(), BrokerError>;
}

/// Appends one line per record to a file. The file is created with mode 0600 (and set to
/// 0600 if it already existed), its parent directories are created, and each record is
/// written with one `write` of the line and its newline, so lines from concurrent senders never
/// interleave, and flushed to the operating system before `send` returns (no fsync per
/// record: see [`JsonlFileSink::sync`]).
pub struct JsonlFileSink {
    path: PathBuf,
    file: Mutex<File>,
}

impl JsonlFileSink {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BrokerError> {
        let path = path.as_ref().to_path_buf();
        let io = |context: &str, source| BrokerError::Io {
            context: format!("audit sink {}: {context}", path.display()),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("creating its directory", e))?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|e| io("opening", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("setting its mode to 0600", e))?;
        }
        Ok(JsonlFileSink {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Forces what was written to disk (fsync).
    pub fn sync(&self) -> Result<(), BrokerError> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.sync_data().map_err(|e| BrokerError::Io {
            context: format!("audit sink {}: syncing", self.path.display()),
            source: e,
        })
    }
}

impl AuditSink for JsonlFileSink {
    /// Refuses (and writes nothing for) a record that is not one line of JSON.
    fn send(&self, record_json: &str) -> Result<(), BrokerError> {
        let record = record_json.trim_end_matches(['\n', '\r']);
        if record.contains(['\n', '\r']) {
            return Err(BrokerError::Sink(
                "a record must be one line of JSON; this one has a line break".into(),
            ));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(record) {
            return Err(BrokerError::Sink(format!("a record is not JSON: {e}")));
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record.as_bytes());
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|e| BrokerError::Io {
                context: format!("audit sink {}: writing", self.path.display()),
                source: e,
            })
    }
}

impl fmt::Debug for JsonlFileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlFileSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
