//! The daemon's lifecycle (SPEC §5 step 2): STARTING → INITIALIZING → READY → DRAINING.
//! Nothing listens before READY; on stop, new decisions are refused, the ones in flight
//! finish, the store signs its last checkpoint, and the sockets go away.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use audit::note::{LocalKey, Signer, public_path};
use broker::{AuditSink, DevVault, JsonlFileSink, Notifier, NotifyConfig, ProviderConfig, Secrets};
use engine::car::Limits;
use engine::clock::{Clock, SystemClock};
use engine::engine::EngineConfig;
use engine::redact::RedactionKey;
use store::sqlite::{Config as StoreConfig, SqliteStore};
use store::{Durability, Store};
use tokio::net::{TcpListener, UnixListener};

use crate::admin::{self, Operator};
use crate::agent;
use crate::core::{Core, CoreConfig, Phase};
use crate::credentials::Broker;
use crate::notify::{Notice, Notices};
use crate::policy::{LoadedPolicy, load_policy};
use crate::stack;

/// How long a stop waits for decisions in flight.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a stop then waits for connections to end.
const CLOSE: Duration = Duration::from_secs(2);

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The stack directory (holding `governance.fms`).
    pub stack: PathBuf,
    /// `faramesh dev`: in-process stubs, an ephemeral signing key, records tagged dev.
    pub dev: bool,
}

/// Where a running daemon can be reached: written to `<stack>/.faramesh/run/daemon.json` at
/// READY.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    pub socket: PathBuf,
    pub admin_socket: PathBuf,
    pub http: String,
    pub data_dir: PathBuf,
    pub chain: String,
    pub dev: bool,
    pub policy_version: String,
    pub started: String,
}

impl RunInfo {
    pub fn read(stack: &Path) -> Option<RunInfo> {
        let text = std::fs::read_to_string(stack::run_file(stack)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Everything a daemon needs resolved from the stack and its policy.
#[derive(Debug)]
struct Setup {
    data_dir: PathBuf,
    socket: PathBuf,
    http_listen: String,
    durability: Durability,
}

/// Runs the daemon until it is stopped. Builds its own runtime: call it before any other.
pub fn run(opts: Options) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("faramesh")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run_async(opts))
}

fn setup(stack: &Path, policy: &LoadedPolicy) -> Result<Setup, String> {
    let rt = &policy.runtime;
    if rt.backend.as_deref() == Some("postgres") {
        return Err(
            "runtime backend \"postgres\" is not supported yet; use the embedded \"sqlite\"".into(),
        );
    }
    let data_dir = rt
        .data_dir
        .as_ref()
        .map_or_else(|| stack::default_data_dir(stack), |d| stack.join(d));
    let socket = std::env::var_os("FARAMESH_SOCKET")
        .map(PathBuf::from)
        .or_else(|| rt.socket.as_ref().map(|s| stack.join(s)))
        .unwrap_or_else(|| stack::default_socket(stack));
    let durability = match rt.durability.as_deref() {
        None => Durability::Sync,
        Some(d) => d.parse().map_err(|e: store::StoreError| e.to_string())?,
    };
    Ok(Setup {
        data_dir,
        socket,
        // Port 0: the kernel picks a free port, published in daemon.json.
        http_listen: rt
            .http_listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".into()),
        durability,
    })
}

async fn run_async(opts: Options) -> Result<(), String> {
    let stack = std::path::absolute(&opts.stack).map_err(|e| e.to_string())?;
    let policy = load_policy(&stack)?;
    let setup = setup(&stack, &policy)?;
    std::fs::create_dir_all(&setup.data_dir)
        .map_err(|e| format!("{}: {e}", setup.data_dir.display()))?;
    let _lock = lock(&setup.data_dir)?;
    let chain = chain_id(&setup.data_dir)?;
    let signer = signer(&setup.data_dir, &chain, opts.dev)?;
    let mut store_config = StoreConfig::new(&setup.data_dir, &chain);
    store_config.durability = setup.durability;
    store_config.dev = opts.dev;
    if let Some(n) = policy.runtime.checkpoint_every {
        store_config.checkpoint_every = n;
    }
    if let Some(ms) = policy.runtime.approval_ttl_ms {
        store_config.approval_ttl_ms = ms;
    }
    let store: Arc<dyn Store> = Arc::new(
        tokio::task::spawn_blocking(move || SqliteStore::open(store_config, signer))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot open the store: {e}"))?,
    );
    let providers = provider_configs(&policy);
    let notifier = Notifier::start(notify_config(&policy, &providers, opts.dev)?, opts.dev);
    let (notices, alerts) = Notices::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = CoreConfig {
        stack: stack.clone(),
        engine: EngineConfig {
            stack_dir: stack.clone(),
            redaction_key: redaction_key(&setup.data_dir)?,
            limits: Limits::default(),
        },
        dev: opts.dev,
        cold_start_deny_window_ms: policy.runtime.cold_start_deny_window_ms.unwrap_or(0),
        providers: policy.providers.clone(),
    };
    let core = Arc::new(Core::new(
        config,
        &policy,
        Arc::clone(&store),
        clock,
        Broker::new(secrets(&providers, opts.dev)),
        notices,
    )?);
    record_version(&core, &policy).await?;
    let alerting = tokio::spawn(deliver_alerts(alerts, notifier));
    let sink = opts.dev.then(|| {
        tokio::spawn(dev_sink(
            Arc::clone(&core),
            stack::dev_audit_log(&setup.data_dir),
        ))
    });
    let result = serve(&core, &stack, &setup).await;
    let closing = Arc::clone(&store);
    let closed = tokio::task::spawn_blocking(move || closing.close())
        .await
        .map_err(|e| e.to_string())?;
    remove_run_files(&stack, &setup.socket);
    if let Some(sink) = sink {
        sink.abort();
        follow_into_sink(&core, stack::dev_audit_log(&setup.data_dir), None).await;
    }
    drop(core);
    // Connections still open hold senders: the alert queue gets a bounded time to drain.
    let _ = tokio::time::timeout(Duration::from_secs(6), alerting).await;
    result?;
    closed.map_err(|e| format!("the store did not close cleanly: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// The version the store says is in force is the one loaded, or a policy-change record says
/// why not.
async fn record_version(core: &Core, policy: &LoadedPolicy) -> Result<(), String> {
    let active = crate::approvals::blocking(core, |s| s.policy_versions())
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|v| v.active)
        .map(|v| v.version);
    if active.as_deref() == Some(policy.version()) {
        return Ok(());
    }
    let apply = store::PolicyApply {
        version: policy.version().to_string(),
        source: policy.source.clone(),
        by: format!("{} (daemon start)", Operator::of_uid(own_uid()).label()),
        now_ms: core.clock.now_ms(),
        record_id: core.new_id("dpr"),
    };
    crate::approvals::blocking(core, move |s| s.apply_policy(apply))
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot record the policy version: {e}"))
}

async fn serve(core: &Arc<Core>, stack: &Path, setup: &Setup) -> Result<(), String> {
    let run = stack::run_dir(stack);
    std::fs::create_dir_all(&run).map_err(|e| format!("{}: {e}", run.display()))?;
    let agent_listener = bind_unix(&setup.socket, 0o660)?;
    let admin_path = stack::admin_socket(stack);
    let admin_listener = bind_unix(&admin_path, 0o600)?;
    let http = TcpListener::bind(&setup.http_listen)
        .await
        .map_err(|e| format!("http_listen {}: {e}", setup.http_listen))?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let token = operator_token(&setup.data_dir)?;
    let conns = Connections::new();
    let mut stop = core.stopping();
    let accepting = [
        tokio::spawn(accept_agents(
            agent_listener,
            Arc::clone(core),
            conns.clone(),
        )),
        tokio::spawn(accept_operators(
            admin_listener,
            Arc::clone(core),
            own_uid(),
            conns.clone(),
        )),
    ];
    let http = tokio::spawn(serve_http(
        http,
        crate::http::router(Arc::clone(core), token),
        conns.closing.subscribe(),
    ));
    let info = RunInfo {
        pid: std::process::id(),
        socket: setup.socket.clone(),
        admin_socket: admin_path,
        http: http_addr.to_string(),
        data_dir: setup.data_dir.clone(),
        chain: core.store.chain_id().to_string(),
        dev: core.config.dev,
        policy_version: core.active().version.clone(),
        started: audit::time::format_ms(core.started_ms),
    };
    // READY before the run file appears: whoever reads it may call at once.
    core.set_phase(Phase::Ready);
    write_run_file(stack, &info)?;
    tracing::info!(
        socket = %info.socket.display(),
        admin = %info.admin_socket.display(),
        http = %info.http,
        version = %info.policy_version,
        dev = info.dev,
        "ready"
    );
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        _ = shutdown_signal() => {}
    }
    core.set_phase(Phase::Draining);
    tracing::info!("draining");
    for t in &accepting {
        t.abort();
    }
    // Decisions in flight finish (and anything arriving meanwhile is refused, on the record);
    // then every connection ends, before the store closes behind them.
    conns.settle(&conns.in_flight, DRAIN).await;
    conns.closing.send_replace(true);
    conns.settle(&conns.open, CLOSE).await;
    let _ = tokio::time::timeout(CLOSE, http).await;
    Ok(())
}

/// The daemon's connections: how many are open, how many requests are being answered, and
/// the signal that ends them at drain.
#[derive(Debug, Clone)]
struct Connections {
    open: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Connections {
    fn new() -> Connections {
        Connections {
            open: Arc::new(AtomicUsize::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            closing: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Waits until `count` is zero, at most `limit`.
    async fn settle(&self, count: &AtomicUsize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while count.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Serves one connection, counted while it is open.
    fn spawn<H, F>(&self, stream: tokio::net::UnixStream, handler: Arc<H>)
    where
        H: Fn(Vec<u8>) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Option<String>> + Send + 'static,
    {
        let open = Arc::clone(&self.open);
        let closing = self.closing.subscribe();
        open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            crate::rpc::serve(stream, handler, closing).await;
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers only `faramesh stop` ends the daemon.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn accept_agents(listener: UnixListener, core: Arc<Core>, conns: Connections) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let core = Arc::clone(&core);
        let in_flight = Arc::clone(&conns.in_flight);
        let handler = Arc::new(move |line: Vec<u8>| {
            let core = Arc::clone(&core);
            let in_flight = Arc::clone(&in_flight);
            async move {
                in_flight.fetch_add(1, Ordering::AcqRel);
                let out = agent::handle(core, line).await;
                in_flight.fetch_sub(1, Ordering::AcqRel);
                out
            }
        });
        conns.spawn(stream, handler);
    }
}

async fn accept_operators(listener: UnixListener, core: Arc<Core>, owner: u32, conns: Connections) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // The socket is 0600; the kernel's word on the peer is checked all the same.
        let uid = match stream.peer_cred() {
            Ok(c) if c.uid() == owner || c.uid() == 0 => c.uid(),
            _ => continue,
        };
        let operator = Operator::of_uid(uid);
        let core = Arc::clone(&core);
        let handler =
            Arc::new(move |line: Vec<u8>| admin::handle(Arc::clone(&core), operator.clone(), line));
        conns.spawn(stream, handler);
    }
}

async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(closed)
        .await
    {
        tracing::error!(error = %e, "the HTTP API stopped");
    }
}

/// Hands alerts to the broker's notifier (Slack, PagerDuty, webhooks; the log in dev) until
/// the daemon stops, then lets it drain.
async fn deliver_alerts(mut rx: tokio::sync::mpsc::Receiver<Notice>, notifier: Notifier) {
    while let Some(alert) = rx.recv().await {
        notifier.notify(alert);
    }
    let stats = notifier.shutdown().await;
    tracing::info!(
        sent = stats.sent,
        failed = stats.failed,
        dropped = stats.dropped,
        "alerts drained"
    );
}

fn provider_configs(policy: &LoadedPolicy) -> Vec<ProviderConfig> {
    policy
        .providers
        .iter()
        .map(|p| ProviderConfig {
            name: p.name.clone(),
            kind: p.kind.clone(),
            settings: p.settings.clone(),
        })
        .collect()
}

fn notify_config(
    policy: &LoadedPolicy,
    providers: &[ProviderConfig],
    dev: bool,
) -> Result<NotifyConfig, String> {
    let config = NotifyConfig::from_providers(providers).map_err(|e| e.to_string())?;
    if !dev {
        let targets = policy.alerts.values().flatten().map(|a| a.notify.as_str());
        for w in config.target_warnings(targets) {
            tracing::warn!("{w}");
        }
    }
    Ok(config)
}

/// The stack's secrets providers; in dev, the in-process vault stands in for all of them.
fn secrets(providers: &[ProviderConfig], dev: bool) -> Secrets {
    let vault = dev.then(|| Arc::new(DevVault::new()));
    Secrets::from_providers(providers, vault).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "credentials cannot be minted: permits of bound tools will be denied CREDENTIAL_UNAVAILABLE");
        Secrets::new()
    })
}

/// `faramesh dev`'s audit sink: every record, as JSON lines, in a file beside the store. It
/// follows the store every 200 ms (and once more at shutdown), so a line appears within about
/// 200 ms of its answer.
async fn dev_sink(core: Arc<Core>, path: PathBuf) {
    let mut last = None;
    loop {
        last = follow_into_sink(&core, path.clone(), last).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Appends the records after `last` (the sequence number of the file's last line when not
/// known yet); answers the new last, or `None` to look at the file again next time.
async fn follow_into_sink(core: &Core, path: PathBuf, last: Option<u64>) -> Option<u64> {
    let done = tokio::task::spawn_blocking({
        let store = Arc::clone(&core.store);
        move || sink_once(store.as_ref(), &path, last)
    })
    .await;
    match done {
        Ok(Ok(last)) => Some(last),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "dev audit sink");
            None
        }
        Err(_) => None,
    }
}

fn sink_once(store: &dyn Store, path: &Path, last: Option<u64>) -> Result<u64, String> {
    let last = last.unwrap_or_else(|| last_sunk(path));
    let rows = store
        .query(&store::Filter {
            after_seq: Some(last),
            limit: Some(10_000),
            ..store::Filter::default()
        })
        .map_err(|e| e.to_string())?;
    let Some(&(new_last, _, _)) = rows.last() else {
        return Ok(last);
    };
    let sink = JsonlFileSink::open(path).map_err(|e| e.to_string())?;
    for (seq, hash, body) in rows {
        let mut v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        v["seq"] = seq.into();
        v["hash"] = hash.to_string().into();
        sink.send(&v.to_string()).map_err(|e| e.to_string())?;
    }
    Ok(new_last)
}

/// The sequence number on the sink file's last line (0 for none).
fn last_sunk(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().last().map(str::to_string))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0)
}

/// Binds a Unix socket with `mode`: bound under a temporary name, given its mode, then moved
/// into place, so it is never reachable with looser permissions.
fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "{} is in use: is a daemon already running? (faramesh status)",
            path.display()
        ));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

fn write_run_file(stack: &Path, info: &RunInfo) -> Result<(), String> {
    let path = stack::run_file(stack);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(info).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn remove_run_files(stack: &Path, socket: &Path) {
    for p in [
        stack::run_file(stack),
        socket.to_path_buf(),
        stack::admin_socket(stack),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

/// One daemon per store: a second one on the same data dir stops here.
fn lock(data_dir: &Path) -> Result<File, String> {
    let path = data_dir.join("daemon.lock");
    let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(format!(
            "another daemon is using {} (faramesh status; faramesh stop)",
            data_dir.display()
        )),
    }
}

fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

fn hex_secret(path: &Path, bytes: usize, prefix: &str) -> Result<String, String> {
    let make = || {
        let raw = stack::random::<32>()?;
        Ok(format!("{prefix}{}", hex::encode(&raw[..bytes])).into_bytes())
    };
    let raw = stack::read_or_create_secret(path, make).map_err(|e| e.to_string())?;
    String::from_utf8(raw)
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{} is not text", path.display()))
}

fn chain_id(data_dir: &Path) -> Result<String, String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "local".into());
    hex_secret(&stack::chain_file(data_dir), 4, &format!("{host}-"))
}

fn operator_token(data_dir: &Path) -> Result<String, String> {
    hex_secret(&stack::operator_token(data_dir), 32, "fmo_")
}

fn redaction_key(data_dir: &Path) -> Result<RedactionKey, String> {
    let path = stack::redaction_key(data_dir);
    let raw = stack::read_or_create_secret(&path, || stack::random::<32>().map(|b| b.to_vec()))
        .map_err(|e| e.to_string())?;
    let key: [u8; 32] = raw
        .try_into()
        .map_err(|_| format!("{} must hold 32 bytes", path.display()))?;
    Ok(RedactionKey::from_bytes(key))
}

/// The stack's signing key; in dev an ephemeral one whose verifier key is kept beside the
/// stack's, so the log of a dev run still verifies.
fn signer(data_dir: &Path, chain: &str, dev: bool) -> Result<Box<dyn Signer>, String> {
    let name = format!("faramesh-{chain}");
    if !dev {
        let key = LocalKey::load_or_create(&stack::audit_key(data_dir), &name)
            .map_err(|e| format!("{}: {e}", stack::audit_key(data_dir).display()))?;
        return Ok(Box::new(key));
    }
    let key = LocalKey::generate(&name).map_err(|e| e.to_string())?;
    let vkey = key.verifier();
    let path = stack::keys_dir(data_dir).join(format!("dev-{}.pub", hex::encode(vkey.key_id())));
    std::fs::create_dir_all(stack::keys_dir(data_dir)).map_err(|e| e.to_string())?;
    std::fs::write(&path, vkey.to_text() + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    // Commands that read only the stack's own verifier key find the dev one there too.
    let own = public_path(&stack::audit_key(data_dir));
    if !own.exists() {
        let _ = std::fs::write(&own, vkey.to_text() + "\n");
    }
    Ok(Box::new(key))
}
