//! Turning a group and the config into one container invocation: the mount plan, the proxy
//! socket, the hardening flags, and the user the agent runs as. The security decisions
//! themselves live in `mounts` (what may be mounted) and `runtime` (how each runtime says it).

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::mpsc::Sender;

use super::log::RunLog;
use super::{Work, rundir};
use crate::infra::config::Config;
use crate::infra::paths::Home;
use crate::infra::protocol::ModelSettings;
use crate::infra::proxy::{LlmPolicy, Meter, Provider, Proxy, ProxyConfig, ProxyEvent, Upstream};
use crate::infra::runtime::{self, ContainerSpec, Runtime};
use crate::infra::secrets::Secrets;
use crate::infra::store::groups::Group;
use crate::infra::store::{Store, audit};

/// A prepared container run.
pub struct Sandbox {
    /// Program and arguments, ready to spawn.
    pub argv: Vec<String>,
    pub name: String,
    pub rt: Runtime,
    /// Mounts as recorded in the audit table.
    pub mount_summary: serde_json::Value,
    /// The group's MCP servers, for the start line (remote ones also became proxy routes).
    pub mcp: Vec<crate::infra::protocol::McpServer>,
    proxy: Option<Proxy>,
    run_dir: PathBuf,
    /// Ends the proxy's waits for approvals when the run is over (`asker`).
    approvals: Option<(super::asker::Stopper, Home, i64)>,
}

/// `claw-FOLDER-<run id>x<home tag>`, so strays can be found and matched to their run, and two
/// claw homes on one machine never share (or remove) each other's containers.
pub fn container_name(home: &Home, folder: &str, run_id: i64) -> String {
    // Folders are validated on registration, so this cannot fail for a stored group.
    runtime::container_name(folder, &format!("{run_id}x{}", home.tag()))
        .unwrap_or_else(|_| format!("claw-invalid-{run_id}"))
}

/// The run id of a container of this home, or None if the name belongs to another home.
pub fn run_id_of(home: &Home, name: &str) -> Option<i64> {
    let (_, id) = runtime::parse_name(name)?;
    let (run, tag) = id.split_once('x')?;
    if tag != home.tag() {
        return None;
    }
    run.parse().ok()
}

/// The model settings for a group: its overrides, else the global default.
pub fn model_settings(config: &Config, group: &Group) -> ModelSettings {
    let provider = group
        .config
        .provider
        .clone()
        .unwrap_or_else(|| config.model.provider.clone());
    let model = match (&group.config.model, &group.config.provider) {
        (Some(m), _) => m.clone(),
        _ => config.model.name.clone(),
    };
    ModelSettings {
        provider,
        model,
        max_tokens: config.model.max_tokens,
        context_window: config.model.context_window,
    }
}

/// Build everything the container needs and start the proxy (enforcing `meter`'s budgets).
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    home: &Home,
    config: &Config,
    secrets: &Secrets,
    store: &Store,
    work: &Work,
    events: Sender<ProxyEvent>,
    meter: Meter,
    log: &mut RunLog,
) -> Result<Sandbox> {
    let g = &work.group;
    let rt = runtime::resolve_fast(&config.runtime.kind).map_err(|e| {
        crate::infra::error::Coded::err(crate::infra::error::Code::Runtime, e.to_string())
    })?;
    crate::rules::groups::create_folders(home, &g.folder)?;
    let run_dir = rundir::create(home, work.run.id)?;
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        // Running as root: hand the group's writable trees to the unprivileged agent user. This
        // goes through descriptors, never paths: a container of this group may still be alive
        // and swapping names for links to host folders while we walk.
        let owner = crate::infra::untrusted::Owner {
            uid: 1000,
            gid: 1000,
        };
        // Room above the group's file limit for what the host itself put there.
        let max = config.limits.group_max_files.saturating_add(1024);
        let r = crate::infra::untrusted::chown_group(home, &g.folder, g.is_main, owner, max)
            .with_context(|| format!("cannot hand group `{}`'s folders to the agent", g.folder))?;
        if r.truncated {
            log.line(format!(
                "ownership: stopped after {} entries (cap {max} per folder, or nesting past {} levels); the rest keep their owner",
                r.visited,
                crate::infra::untrusted::MAX_DEPTH
            ));
        }
        if r.hard_linked > 0 || r.special > 0 {
            log.line(format!(
                "ownership: left {} hard-linked files and {} FIFOs/devices as they were",
                r.hard_linked, r.special
            ));
        }
    }

    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let allowlist_path = crate::rules::mounts::allowlist_path(&user_home);
    let (allowlist, allowlist_error) = match crate::rules::mounts::load_allowlist(&allowlist_path) {
        Ok(a) => (a, None),
        Err(e) => {
            log.line(format!(
                "mount allowlist unusable, no extra mounts this run: {e}"
            ));
            (None, Some(e))
        }
    };
    let fixed = crate::rules::mounts::FixedPaths::for_home(
        &home.root,
        &g.folder,
        &rundir::skills(home),
        &run_dir,
    );
    let extras: Vec<crate::rules::mounts::ExtraMountRequest> = g
        .config
        .extra_mounts
        .iter()
        .map(|m| crate::rules::mounts::ExtraMountRequest {
            host_path: m.host_path.clone(),
            name: Some(m.name.clone()),
            readonly: m.readonly,
        })
        .collect();
    let plan = crate::rules::mounts::plan(
        &fixed,
        g.is_main,
        &extras,
        allowlist.as_ref(),
        &crate::rules::mounts::HostContext {
            user_home,
            protected: vec![home.root.clone(), allowlist_path.clone()],
            allowlist_error,
        },
    );
    for r in &plan.refusals {
        log.line(format!(
            "mount refused: {} -> {}: {}",
            r.host_path, r.name, r.reason
        ));
        audit::record(
            &store.conn,
            Some(&g.folder),
            Some(work.run.id),
            "mount.refused",
            serde_json::json!({"host_path": r.host_path, "name": r.name, "reason": r.reason}),
        )?;
    }
    for m in &plan.mounts {
        log.line(format!(
            "mount {} -> {} ({})",
            m.host.display(),
            m.container,
            if m.readonly { "ro" } else { "rw" }
        ));
    }
    // Bound credentials: placeholders for the container, the real values for the proxy, and
    // a trust bundle with the claw CA, mounted over the image's own store too.
    let creds = crate::rules::credentials::prepare(home, config, secrets, &g.config.credentials)
        .with_context(|| {
            format!(
                "cannot prepare the credentials bound to group `{}`",
                g.folder
            )
        })?;
    let mut plan = plan;
    if let Some(c) = &creds {
        let bundle = rundir::write_trust(&run_dir, &c.ca_cert_pem)?;
        plan.mounts.push(crate::infra::runtime::Mount {
            host: bundle,
            container: crate::rules::credentials::SYSTEM_BUNDLE.into(),
            readonly: true,
        });
        for name in &c.missing {
            log.line(format!(
                "credential `{name}` is bound but not set; set it with `claw secret set {name}`"
            ));
            audit::record(
                &store.conn,
                Some(&g.folder),
                Some(work.run.id),
                "credential.missing",
                serde_json::json!({"credential": name}),
            )?;
        }
        log.line(format!(
            "credentials: {} (placeholders only in the container; TLS to their hosts is terminated by the proxy)",
            c.env
                .iter()
                .filter(|(_, v)| v.starts_with("claw-placeholder-"))
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mount_summary = serde_json::Value::Array(
        plan.mounts.iter().map(|m| serde_json::json!({"host": m.host.display().to_string(), "container": m.container, "readonly": m.readonly})).collect(),
    );

    let socket = run_dir.join("proxy.sock");
    let key = |name: &str| secrets.get(name).map(str::to_string);
    let settings = model_settings(config, g);
    let provider = Provider::parse(&settings.provider).with_context(|| {
        format!(
            "group {} names the unknown model provider `{}`; fix it with `claw group set {} --provider anthropic` (or openai)",
            g.folder, settings.provider, g.folder
        )
    })?;
    // Read before anything starts: a broken mcp.toml fails the run with the file named.
    let mcp = crate::mcp::load_group(home, &g.folder)?;
    let (asker, stopper) = super::asker::build(home, config, secrets, g, work.run.id);
    let mut allowed_models = config.model.allowed.clone();
    allowed_models.extend(g.config.models.iter().cloned());
    let proxy = Proxy::start_metered(
        ProxyConfig {
            socket_path: socket,
            anthropic: Upstream {
                base_url: config.providers.anthropic.base_url.clone(),
                api_key: key(&config.providers.anthropic.key_env),
            },
            openai: Upstream {
                base_url: config.providers.openai.base_url.clone(),
                api_key: key(&config.providers.openai.key_env),
            },
            egress_allow: g.config.egress.clone(),
            folder: Some(g.folder.clone()),
            llm: LlmPolicy {
                provider,
                model: settings.model,
                allowed_models,
                max_tokens: settings.max_tokens,
                concurrency: config.limits.llm_concurrency,
                requests_per_run: config.limits.llm_requests_per_run,
            },
            asker: Some(asker),
            searcher: Some(super::searcher::searcher(home, &g.folder)),
            mcp: mcp.routes(),
            credentials: creds.as_ref().map(|c| std::sync::Arc::clone(&c.proxy)),
        },
        events,
        meter,
    )
    .context("cannot start the proxy")?;

    let name = container_name(home, &g.folder, work.run.id);
    // The runtime's own wall clock, where it has one: the container dies on time even if
    // run-group and its watchdog both die (see `container`).
    let lifetime = super::container::lifetime(config, g).as_secs();
    let mut extra_args = match runtime::wall_clock_args(rt.kind, lifetime) {
        Ok(a) => a,
        Err(gap) => {
            log.line(format!("note: {} cannot express: {gap}", rt.kind.program()));
            vec![]
        }
    };
    extra_args.extend(config.runtime.extra_args.iter().cloned());
    let spec = ContainerSpec {
        env: {
            let mut env = vec![
                ("TZ".into(), local_tz()),
                ("HOME".into(), "/home/agent".into()),
            ];
            env.extend(creds.map(|c| c.env).unwrap_or_default());
            env
        },
        workdir: Some("/workspace/group".into()),
        ..ContainerSpec::configured(config, name.clone(), plan.mounts.clone(), extra_args)
    };
    let run = runtime::run_args(rt, &spec);
    for gap in run.gaps {
        log.line(format!("note: {} cannot express: {gap}", rt.kind.program()));
    }
    let mut argv = vec![rt.kind.program().to_string()];
    argv.extend(run.args);
    Ok(Sandbox {
        argv,
        name,
        rt,
        mount_summary,
        mcp: mcp.servers,
        proxy: Some(proxy),
        run_dir,
        approvals: Some((stopper, home.clone(), work.run.id)),
    })
}

impl Sandbox {
    /// The same sandbox for a task's check command: the same image, mounts and hardening, but no
    /// proxy (shut before any container starts, so `/run/claw` holds no socket and the check has
    /// no way out at all: no model, no egress), a container name of its own, and
    /// `/bin/sh -c COMMAND` in place of the agent.
    pub fn into_check(mut self, home: &Home, folder: &str, run_id: i64, command: &str) -> Sandbox {
        if let Some(mut p) = self.proxy.take() {
            p.shutdown();
        }
        self.end_approvals();
        let name = check_container_name(home, folder, run_id);
        if let Some(i) = self.argv.iter().position(|a| a == "--name") {
            self.argv[i + 1] = name.clone();
        }
        // `prepare` gives no command, so the image is the last argument; the entrypoint flag
        // goes after the configured extra arguments, where the runtime takes the last one given.
        let image = self.argv.pop().unwrap_or_default();
        self.argv.extend([
            "--entrypoint".into(),
            "/bin/sh".into(),
            image,
            "-c".into(),
            command.into(),
        ]);
        self.name = name;
        self
    }
}

/// `claw-FOLDER-check-<run id>x<home tag>`: the check's own name, so it can never be taken for
/// (or collide with) the agent's container of the same run, while strays still map to the run.
pub fn check_container_name(home: &Home, folder: &str, run_id: i64) -> String {
    runtime::container_name(
        &format!("{folder}-check"),
        &format!("{run_id}x{}", home.tag()),
    )
    .unwrap_or_else(|_| format!("claw-invalid-check-{run_id}"))
}

/// Stop the container (graceful, then forced).
pub fn stop(sb: &Sandbox, log: &mut RunLog) {
    let kind = sb.rt.kind;
    for args in [
        runtime::stop_args(kind, &sb.name, 3),
        runtime::kill_args(kind, &sb.name),
    ] {
        match duct::cmd(kind.program(), &args)
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
        {
            Ok(o) if o.status.success() => {
                log.line(format!("{} {}: done", kind.program(), args.join(" ")));
                return;
            }
            _ => log.line(format!("{} {}: failed", kind.program(), args.join(" "))),
        }
    }
}

/// Shut the proxy, end its approval waits, and remove the per-run folder.
pub fn cleanup(mut sb: Sandbox, log: &mut RunLog) {
    if let Some(mut p) = sb.proxy.take() {
        p.shutdown();
    }
    let ended = sb.end_approvals();
    if ended > 0 {
        log.line(format!(
            "{ended} approval(s) still open when the run ended: expired"
        ));
    }
    if let Err(e) = rundir::remove(&sb.run_dir) {
        log.line(format!("could not remove {}: {e}", sb.run_dir.display()));
    }
}

impl Sandbox {
    /// Stop the asker's waits and expire this run's open egress and credential approvals: no
    /// connection is left to carry them out. Returns how many were expired here.
    fn end_approvals(&mut self) -> usize {
        let Some((stop, home, run_id)) = self.approvals.take() else {
            return 0;
        };
        stop.stop();
        let expired = Store::open(&home).and_then(|s| {
            crate::infra::store::approvals::expire_run(
                &s.conn,
                run_id,
                "run ended",
                crate::infra::time::now_ms(),
            )
        });
        expired.unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "open approvals of the run not expired; their deadline will");
            0
        })
    }
}

impl Drop for Sandbox {
    /// An early return: the same clean-up, silently (after [`cleanup`] there is nothing left).
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            p.shutdown();
        }
        self.end_approvals();
        let _ = rundir::remove(&self.run_dir);
    }
}

/// The audit kind and detail for a proxy event.
pub fn proxy_audit(e: &ProxyEvent) -> (&'static str, serde_json::Value) {
    match e {
        ProxyEvent::Llm {
            provider,
            method,
            path,
            status,
            bytes_up,
            bytes_down,
            model,
            model_from,
            max_tokens_clamped,
            usage,
        } => {
            let mut d = serde_json::json!({"provider": provider, "method": method, "path": path, "status": status, "bytes_up": bytes_up, "bytes_down": bytes_down, "model": model, "model_from": model_from, "max_tokens_clamped": max_tokens_clamped});
            // Token counts add up in the aggregated row like the byte counts (`proxy_rows`).
            if let Some(u) = usage {
                d["input_tokens"] = u.input.into();
                d["output_tokens"] = u.output.into();
                d["cache_read_tokens"] = u.cache_read.into();
                d["cache_write_tokens"] = u.cache_write.into();
            }
            ("llm.request", d)
        }
        ProxyEvent::Egress {
            host,
            port,
            allowed,
            reason,
            bytes_up,
            bytes_down,
        } => (
            if *allowed {
                "egress.allowed"
            } else {
                "egress.denied"
            },
            serde_json::json!({"host": host, "port": port, "reason": reason, "bytes_up": bytes_up, "bytes_down": bytes_down}),
        ),
        ProxyEvent::Credential {
            host,
            port,
            method,
            used,
            refused,
            credential,
            reason,
            status,
            bytes_up,
            bytes_down,
        } => {
            let mut d = serde_json::json!({"host": host, "port": port, "method": method, "status": status, "reason": reason, "bytes_up": bytes_up, "bytes_down": bytes_down});
            let kind = if *refused {
                d["credential"] = credential.clone().into();
                "credential.refused"
            } else if used.is_empty() {
                // A tunnel to a bound host that carried no placeholder (or never got a request).
                d["intercepted"] = true.into();
                "egress.allowed"
            } else {
                d["credentials"] = used.clone().into();
                "credential.used"
            };
            (kind, d)
        }
        ProxyEvent::Local {
            method,
            path,
            status,
        } => (
            "proxy.local",
            serde_json::json!({"method": method, "path": path, "status": status}),
        ),
    }
}

fn local_tz() -> String {
    std::env::var("TZ")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "UTC".into())
}
