//! `faramesh audit verify|export|tail|show|proof`: reading and checking the audit log offline,
//! from the stack's store or from a proof bundle.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use audit::bundle::{BUNDLE_FORMAT, Bundle};
use audit::merkle::{Frontier, inclusion_proof, leaf_hash};
use audit::note::{Checkpoint, VerifierKey, public_path};
use audit::record::{Stored, with_hash};
use audit::verify::{Failure, Location, Row, Summary, Verifier};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use store::sqlite::SqliteReader;
use store::{AuditRead, Filter};

use crate::stack;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check hashes, links, Merkle roots and checkpoint signatures; name the first bad record.
    ///
    /// Exit codes: 0 verified, 1 verification failed, 2 the log or key could not be read.
    Verify(VerifyArgs),
    /// Write records as CSV or JSON lines.
    Export(ExportArgs),
    /// Print the latest records, optionally following new ones.
    Tail(TailArgs),
    /// Print one record in full.
    Show(ShowArgs),
    /// Write a self-contained inclusion proof of one record (check it with `verify --bundle`).
    Proof(ProofArgs),
}

#[derive(Debug, Args)]
pub struct StackArgs {
    /// The stack directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The chain to read when the store holds several (default: every chain, or the only one).
    #[arg(long)]
    chain: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// Only records at or after this time (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Only records at or before this time (RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// Verify a proof bundle written by `audit proof` instead of the store.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// The verifier key to trust (C2SP vkey text). Default: the stack's own.
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    stack: StackArgs,
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    format: ExportFormat,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// Only this effect (permit, deny or defer).
    #[arg(long)]
    effect: Option<String>,
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// How many records.
    #[arg(short = 'n', long, default_value_t = 20)]
    lines: u64,
    /// Keep printing new records as they are written.
    #[arg(long)]
    follow: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// The DPR id.
    id: String,
}

#[derive(Debug, Args)]
pub struct ProofArgs {
    #[command(flatten)]
    stack: StackArgs,
    /// The DPR id.
    id: String,
    /// Write the bundle here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A command's failure: the message and the exit code.
struct Fail(String, u8);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Fail {
        Fail(e.to_string(), 2)
    }
}

pub fn run(cmd: AuditCommand) -> ExitCode {
    let result = match cmd {
        AuditCommand::Verify(a) => verify(&a),
        AuditCommand::Export(a) => export(&a),
        AuditCommand::Tail(a) => tail(&a),
        AuditCommand::Show(a) => show(&a),
        AuditCommand::Proof(a) => proof(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn readers(s: &StackArgs) -> Result<Vec<SqliteReader>, Fail> {
    let data = stack::data_dir(&s.dir);
    let chains = match &s.chain {
        Some(chain) => vec![chain.clone()],
        // A handle on no chain in particular, only to list them.
        None => SqliteReader::open(&data, Some(""))?.chains()?,
    };
    if chains.is_empty() {
        return Err(Fail(
            format!("{}: the audit log holds no records", data.display()),
            2,
        ));
    }
    chains
        .iter()
        .map(|c| SqliteReader::open(&data, Some(c)).map_err(Fail::from))
        .collect()
}

fn one_reader(s: &StackArgs) -> Result<SqliteReader, Fail> {
    let mut all = readers(s)?;
    if all.len() > 1 {
        let names: Vec<&str> = all.iter().map(|r| r.chain_id()).collect();
        return Err(Fail(
            format!(
                "the store holds several chains ({}); pick one with --chain",
                names.join(", ")
            ),
            2,
        ));
    }
    all.pop()
        .ok_or_else(|| Fail("the store holds no records".into(), 2))
}

fn time_arg(t: &Option<String>) -> Result<Option<i64>, Fail> {
    t.as_deref()
        .map(|s| {
            s.parse::<jiff::Timestamp>()
                .map(|ts| ts.as_millisecond())
                .map_err(|e| Fail(format!("`{s}` is not an RFC 3339 time: {e}"), 2))
        })
        .transpose()
}

fn trusted_key(dir: &Path, key: &Option<PathBuf>) -> Result<Option<VerifierKey>, Fail> {
    let path = match key {
        Some(p) => p.clone(),
        None => public_path(&stack::audit_key(&stack::data_dir(dir))),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => VerifierKey::from_text(&text)
            .map(Some)
            .map_err(|e| Fail(format!("{}: {e}", path.display()), 2)),
        Err(e) if key.is_none() && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Fail(format!("{}: {e}", path.display()), 2)),
    }
}

/// The keys a stack's checkpoints may be signed by: `--key` alone when given; else the
/// stack's own key and the ephemeral keys of its `faramesh dev` runs (`keys/dev-*.pub`).
fn trusted_keys(dir: &Path, key: &Option<PathBuf>) -> Result<Vec<VerifierKey>, Fail> {
    let mut keys: Vec<VerifierKey> = trusted_key(dir, key)?.into_iter().collect();
    if key.is_some() {
        return Ok(keys);
    }
    let keys_dir = daemon::stack::keys_dir(&stack::data_dir(dir));
    let mut dev: Vec<PathBuf> = std::fs::read_dir(&keys_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("dev-") && n.ends_with(".pub"))
                })
                .collect()
        })
        .unwrap_or_default();
    dev.sort();
    for path in dev {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Fail(format!("{}: {e}", path.display()), 2))?;
        let k = VerifierKey::from_text(&text)
            .map_err(|e| Fail(format!("{}: {e}", path.display()), 2))?;
        if !keys.iter().any(|have| have.key_id() == k.key_id()) {
            keys.push(k);
        }
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------------------------
// verify

fn verify(a: &VerifyArgs) -> Result<(), Fail> {
    if let Some(bundle) = &a.bundle {
        return verify_bundle(bundle, a);
    }
    let keys = trusted_keys(&a.stack.dir, &a.key)?;
    if keys.is_empty() {
        return Err(Fail(
            format!(
                "no verifier key: {} does not exist (pass --key)",
                public_path(&stack::audit_key(&stack::data_dir(&a.stack.dir))).display()
            ),
            2,
        ));
    }
    let (from, to) = (time_arg(&a.from)?, time_arg(&a.to)?);
    let mut results = Vec::new();
    for reader in readers(&a.stack)? {
        let outcome = verify_chain(&reader, &keys, from, to)?;
        results.push((reader, outcome));
    }
    let failed = results.iter().any(|(_, r)| r.is_err());
    if a.format == Format::Json {
        let chains: Vec<Value> = results.iter().map(|(r, o)| chain_json(r, o)).collect();
        let texts: Vec<String> = keys.iter().map(VerifierKey::to_text).collect();
        let doc = json!({"verified": !failed, "key": texts[0], "keys": texts, "chains": chains});
        crate::write_stdout(&format!("{doc:#}\n"));
    } else {
        for (r, o) in &results {
            crate::write_stdout(&chain_text(r, o));
        }
    }
    if failed {
        Err(Fail("the audit log did not verify".into(), 1))
    } else {
        Ok(())
    }
}

fn verify_chain(
    r: &SqliteReader,
    keys: &[VerifierKey],
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Result<Summary, Failure>, Fail> {
    let notes = r.checkpoints()?;
    let (first, last) = if from.is_some() || to.is_some() {
        match r.seq_range(from, to)? {
            Some(range) => (range.0, Some(range.1)),
            None => {
                return Ok(Ok(Summary {
                    records: 0,
                    first: None,
                    last: None,
                    checkpoints: 0,
                    last_checkpoint: None,
                }));
            }
        }
    } else {
        (1, None)
    };
    // A range is checked against the checkpoints it reaches; the records before it are taken
    // on their hashes only (to resume the chain and the tree).
    let notes: Vec<String> = match last {
        Some(l) => notes
            .into_iter()
            .filter(|n| note_size(n).is_some_and(|s| s <= l))
            .collect(),
        None => notes,
    };
    let mut verifier = if first > 1 {
        let before = r.hashes(first - 1)?;
        let mut tree = Frontier::new();
        before.iter().for_each(|h| tree.push(leaf_hash(h)));
        let prev = before.last().copied().unwrap_or_default();
        match Verifier::resume(r.chain_id(), keys, &notes, prev, tree) {
            Ok(v) => v,
            Err(f) => return Ok(Err(f)),
        }
    } else {
        match Verifier::new(r.chain_id(), keys, &notes) {
            Ok(v) => v,
            Err(f) => return Ok(Err(f)),
        }
    };
    let mut failure = None;
    r.for_each_row(first, last, &mut |row: Row<'_>| match verifier.push(row) {
        Ok(()) => ControlFlow::Continue(()),
        Err(f) => {
            failure = Some(f);
            ControlFlow::Break(())
        }
    })?;
    Ok(match failure {
        Some(f) => Err(f),
        None => verifier.finish(),
    })
}

fn note_size(note: &str) -> Option<u64> {
    Checkpoint::parse(note.split("\n\n").next()?)
        .ok()
        .map(|c| c.size)
}

/// The DPR id of a record, for naming a failure.
fn id_of(r: &SqliteReader, seq: u64) -> Option<String> {
    let mut id = None;
    let _ = r.for_each_row(seq, Some(seq), &mut |row: Row<'_>| {
        id = serde_json::from_str::<Value>(row.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned));
        ControlFlow::Break(())
    });
    id
}

fn chain_text(r: &SqliteReader, o: &Result<Summary, Failure>) -> String {
    let chain = r.chain_id();
    match o {
        Ok(s) if s.records == 0 => format!("ok: chain {chain}: no records in range\n"),
        Ok(s) => {
            let mut t = format!(
                "ok: chain {chain}: {} records ({}..={}) verified: hashes, links, {} signed checkpoint{}\n",
                s.records,
                s.first.unwrap_or(0),
                s.last.unwrap_or(0),
                s.checkpoints,
                if s.checkpoints == 1 { "" } else { "s" }
            );
            match s.last_checkpoint {
                Some(c) if Some(c) < s.last => t.push_str(&format!(
                    "note: records {}..={} come after the last signed checkpoint checked; only the hash chain links them\n",
                    c + 1,
                    s.last.unwrap_or(c)
                )),
                None => t.push_str("note: no signed checkpoint covers these records yet; only the hash chain protects them\n"),
                _ => {}
            }
            t
        }
        Err(f) => {
            let id = f
                .record_seq()
                .and_then(|s| id_of(r, s))
                .map(|id| format!(" ({id})"))
                .unwrap_or_default();
            match f.at {
                Location::Record(s) => {
                    format!("FAILED: chain {chain}: record {s}{id}: {}\n", f.reason)
                }
                Location::Checkpoint(s) => format!(
                    "FAILED: chain {chain}: checkpoint at size {s}: {}\n",
                    f.reason
                ),
            }
        }
    }
}

fn chain_json(r: &SqliteReader, o: &Result<Summary, Failure>) -> Value {
    match o {
        Ok(s) => json!({
            "chain": r.chain_id(), "verified": true, "records": s.records,
            "first": s.first, "last": s.last, "checkpoints": s.checkpoints,
            "last_checkpoint": s.last_checkpoint,
        }),
        Err(f) => {
            let (record, checkpoint) = match f.at {
                Location::Record(s) => (Some(s), None),
                Location::Checkpoint(s) => (None, Some(s)),
            };
            json!({
                "chain": r.chain_id(), "verified": false, "first_bad_record": record,
                "id": record.and_then(|s| id_of(r, s)), "checkpoint": checkpoint, "reason": f.reason,
            })
        }
    }
}

fn verify_bundle(path: &Path, a: &VerifyArgs) -> Result<(), Fail> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Fail(format!("{}: {e}", path.display()), 2))?;
    let bundle: Bundle = serde_json::from_str(&text).map_err(|e| {
        Fail(
            format!(
                "{}: not a proof bundle ({BUNDLE_FORMAT}): {e}",
                path.display()
            ),
            2,
        )
    })?;
    // Only an explicit --key is trusted: a bundle's own key proves only that it is consistent.
    let trusted = match &a.key {
        Some(_) => trusted_key(&a.stack.dir, &a.key)?,
        None => None,
    };
    match bundle.verify(trusted.as_ref()) {
        Ok(p) => {
            let mut t = format!(
                "ok: record {} ({}) is leaf {} of the {}-record tree signed by `{}`\n",
                p.seq,
                p.id,
                p.seq - 1,
                p.tree_size,
                p.key_name
            );
            if !p.key_trusted {
                t.push_str("note: checked with the bundle's own key; pass --key with the stack's verifier key to trust it\n");
            }
            if a.format == Format::Json {
                t = format!(
                    "{:#}\n",
                    json!({"verified": true, "id": p.id, "seq": p.seq, "tree_size": p.tree_size, "key_trusted": p.key_trusted})
                );
            }
            crate::write_stdout(&t);
            Ok(())
        }
        Err(f) => {
            crate::write_stdout(&format!("FAILED: {f}\n"));
            Err(Fail("the proof bundle did not verify".into(), 1))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// export, tail, show

fn output(out: &Option<PathBuf>) -> Result<Box<dyn Write>, Fail> {
    Ok(match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| Fail(format!("{}: {e}", p.display()), 2))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

const CSV_COLUMNS: [&str; 17] = [
    "seq",
    "id",
    "time",
    "kind",
    "agent",
    "session",
    "tool",
    "effect",
    "mode",
    "reason_code",
    "reason",
    "rule_ref",
    "approver",
    "policy_version",
    "args_digest",
    "hash",
    "prev_hash",
];

fn export(a: &ExportArgs) -> Result<(), Fail> {
    let r = one_reader(&a.stack)?;
    let (from, to) = (time_arg(&a.from)?, time_arg(&a.to)?);
    let (first, last) = if from.is_some() || to.is_some() {
        match r.seq_range(from, to)? {
            Some((f, l)) => (f, Some(l)),
            None => (1, Some(0)),
        }
    } else {
        (1, None)
    };
    let mut out = output(&a.out)?;
    let mut err = None;
    if a.format == ExportFormat::Csv {
        out.write_all(CSV_COLUMNS.join(",").as_bytes())?;
        out.write_all(b"\n")?;
    }
    if last != Some(0) {
        r.for_each_row(first, last, &mut |row: Row<'_>| {
            let line = match a.format {
                ExportFormat::Jsonl => with_hash(row.body, &row.hash),
                ExportFormat::Csv => csv_line(row.body, &row.hash.to_hex()),
            };
            match out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
            {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    err = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
    }
    if let Some(e) = err
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let _ = out.flush();
    Ok(())
}

fn csv_line(body: &str, hash: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| match k {
        "hash" => hash.to_owned(),
        "approver" => v["approval"]["approver"].as_str().unwrap_or("").to_owned(),
        k => match &v[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        },
    };
    CSV_COLUMNS
        .iter()
        .map(|k| csv_escape(&field(k)))
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4180: quote a field holding a comma, quote or line break, doubling its quotes. A field
/// starting with `=`, `+`, `-` or `@` gets a leading `'` so a spreadsheet never runs it.
fn csv_escape(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn tail(a: &TailArgs) -> Result<(), Fail> {
    let r = one_reader(&a.stack)?;
    let mut filter = Filter {
        effect: a.effect.clone(),
        agent: a.agent.clone(),
        limit: Some(a.lines),
        newest_first: true,
        ..Filter::default()
    };
    let mut rows = r.query(&filter)?;
    rows.reverse();
    let mut last = 0;
    loop {
        for (seq, hash, body) in &rows {
            crate::write_stdout(&tail_line(body, hash, a.format));
            last = last.max(*seq);
        }
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        filter.after_seq = Some(last);
        filter.newest_first = false;
        filter.limit = None;
        rows = r.query(&filter)?;
    }
}

fn tail_line(body: &str, hash: &audit::record::Hash, format: Format) -> String {
    if format == Format::Json {
        return with_hash(body, hash) + "\n";
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    if v["kind"] == "policy_change" {
        return format!(
            "{:>6}  {}  policy  {} -> {} by {}\n",
            v["seq"],
            s("time"),
            v["change"]["from"].as_str().unwrap_or("-"),
            v["change"]["to"].as_str().unwrap_or("-"),
            v["change"]["by"].as_str().unwrap_or("-")
        );
    }
    format!(
        "{:>6}  {}  {:<6}  {:<16}  {:<24}  {:<20}  {}  {}\n",
        v["seq"],
        s("time"),
        s("effect"),
        s("agent"),
        s("tool"),
        s("reason_code"),
        s("rule_ref"),
        s("id")
    )
}

fn show(a: &ShowArgs) -> Result<(), Fail> {
    let r = one_reader(&a.stack)?;
    let (seq, hash, body) = r
        .row_by_id(&a.id)?
        .ok_or_else(|| Fail(format!("no record `{}` in chain {}", a.id, r.chain_id()), 1))?;
    let full: Value = serde_json::from_str(&with_hash(&body, &hash))?;
    let intact = audit::record::hash_body(body.as_bytes()) == hash;
    crate::write_stdout(&format!("{full:#}\n"));
    if !intact {
        return Err(Fail(
            format!("record {seq} does not match its hash: run `faramesh audit verify`"),
            1,
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// proof

fn proof(a: &ProofArgs) -> Result<(), Fail> {
    let r = one_reader(&a.stack)?;
    let (seq, hash, body) = r
        .row_by_id(&a.id)?
        .ok_or_else(|| Fail(format!("no record `{}` in chain {}", a.id, r.chain_id()), 1))?;
    let keys = trusted_keys(&a.stack.dir, &None)?;
    if keys.is_empty() {
        return Err(Fail("the stack has no verifier key".into(), 2));
    }
    let note = r
        .checkpoints()?
        .into_iter()
        .find(|n| note_size(n).is_some_and(|s| s >= seq))
        .ok_or_else(|| {
            Fail(
                format!(
                    "record {seq} is not yet covered by a signed checkpoint (one is signed every `checkpoint_every` records and when the daemon stops)"
                ),
                1,
            )
        })?;
    // The bundle carries the key that signed its checkpoint (a dev run's, perhaps).
    let (key, cp) = keys
        .iter()
        .find_map(|k| Checkpoint::open(&note, k).ok().map(|cp| (k, cp)))
        .ok_or_else(|| {
            Fail(
                "checkpoint: it is not signed by any of the stack's keys".into(),
                1,
            )
        })?;
    let leaves: Vec<_> = r.hashes(cp.size)?.iter().map(leaf_hash).collect();
    let path = inclusion_proof(&leaves, (seq - 1) as usize)
        .ok_or_else(|| Fail(format!("the store holds fewer than {} records", cp.size), 1))?;
    let stored = Stored::from_json(&with_hash(&body, &hash))?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT.into(),
        record: serde_json::from_str(&stored.to_json())?,
        leaf_index: seq - 1,
        tree_size: cp.size,
        inclusion: path,
        checkpoint: note,
        key: key.to_text(),
    };
    // The bundle must check before it leaves.
    bundle
        .verify(Some(key))
        .map_err(|f| Fail(format!("the proof does not verify: {f}"), 1))?;
    let mut out = output(&a.out)?;
    out.write_all(format!("{:#}\n", serde_json::to_value(&bundle)?).as_bytes())?;
    out.flush()?;
    Ok(())
}
