//! `shoal service …` and `shoal node ps`.

use crate::client::{enc, Client};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use shoal_api::{
    ContainerSpec, EndpointSpec, Limit, ModeKind, Node, Placement, PlacementPreference, PortConfig,
    ProcessSpec, ReplicatedJob, ReplicatedMode, Reservation, ResourceRequirements,
    RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, SpreadOver, Task,
    UpdateConfig,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Duration;

/// Flags shared by `service create` and `service update`.
#[derive(Args, Default, Clone)]
pub struct SpecFlags {
    /// Number of tasks (replicated services and jobs).
    #[arg(long)]
    replicas: Option<i64>,
    /// Placement constraint, e.g. node.labels.zone==a (repeatable).
    #[arg(long = "constraint")]
    constraints: Vec<String>,
    /// Placement preference, e.g. spread=node.labels.zone (repeatable).
    #[arg(long = "placement-pref")]
    placement_prefs: Vec<String>,
    /// spread (default), binpack or random.
    #[arg(long)]
    placement_strategy: Option<String>,
    /// Maximum tasks per node.
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    /// CPUs reserved per task, e.g. 0.5.
    #[arg(long)]
    reserve_cpu: Option<String>,
    /// Memory reserved per task, e.g. 64M.
    #[arg(long)]
    reserve_memory: Option<String>,
    /// CPU limit per task.
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Memory limit per task.
    #[arg(long)]
    limit_memory: Option<String>,
    /// none, on-failure or any.
    #[arg(long)]
    restart_condition: Option<String>,
    /// Delay between restarts.
    #[arg(long, value_parser = crate::parse_duration)]
    restart_delay: Option<Duration>,
    /// Maximum restarts (0 = unlimited).
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted.
    #[arg(long, value_parser = crate::parse_duration)]
    restart_window: Option<Duration>,
    /// Environment variable K=V (repeatable).
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// User (name or uid[:gid]).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Time to wait before killing a task.
    #[arg(long, value_parser = crate::parse_duration)]
    stop_grace_period: Option<Duration>,
    /// Published port: mode=host,target=8080,published=8080 or 8080:80.
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Tasks updated at once (0 = all).
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Delay between update batches.
    #[arg(long, value_parser = crate::parse_duration)]
    update_delay: Option<Duration>,
    /// stop-first or start-first.
    #[arg(long)]
    update_order: Option<String>,
    /// Service label K=V (repeatable).
    #[arg(short = 'l', long = "label")]
    labels: Vec<String>,
    /// Do not wait for the service to converge.
    #[arg(short = 'd', long)]
    detach: bool,
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Create a service.
    Create {
        /// Service name.
        #[arg(long)]
        name: String,
        /// replicated, global, replicated-job or global-job.
        #[arg(long, default_value = "replicated")]
        mode: String,
        /// Tasks a replicated job runs at once.
        #[arg(long)]
        max_concurrent: Option<u64>,
        /// process or container.
        #[arg(long, default_value = "container")]
        runtime: String,
        #[command(flatten)]
        flags: SpecFlags,
        /// IMAGE [COMMAND] [ARG…] (container) or COMMAND [ARG…] (process).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// `json` prints the API's `GET /services` array.
        #[arg(long)]
        format: Option<String>,
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the tasks of services.
    Ps {
        #[arg(required = true)]
        services: Vec<String>,
        /// `json` prints the API's `GET /tasks` array.
        #[arg(long)]
        format: Option<String>,
        /// Do not truncate IDs and errors.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show services in detail.
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        /// Human-readable output.
        #[arg(long)]
        pretty: bool,
    },
    /// Scale replicated services: NAME=N….
    Scale {
        #[arg(required = true)]
        targets: Vec<String>,
        /// Do not wait for convergence.
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Update a service.
    Update {
        #[command(flatten)]
        flags: SpecFlags,
        /// Replace tasks even if nothing changed.
        #[arg(long)]
        force: bool,
        /// New arguments (space separated).
        #[arg(long)]
        args: Option<String>,
        /// New image (container runtime).
        #[arg(long)]
        image: Option<String>,
        /// Remove an environment variable.
        #[arg(long = "env-rm")]
        env_rm: Vec<String>,
        /// Remove a constraint.
        #[arg(long = "constraint-rm")]
        constraint_rm: Vec<String>,
        /// Remove a label.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        /// Roll back to the previous spec.
        #[arg(long)]
        rollback: bool,
        service: String,
    },
    /// Roll back to the previous spec.
    Rollback {
        service: String,
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show the logs of a service's tasks.
    Logs {
        service: String,
        /// Follow.
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end of each task's logs.
        #[arg(short = 'n', long)]
        tail: Option<String>,
        /// Show timestamps.
        #[arg(short, long)]
        timestamps: bool,
    },
}

/// Parses `64M`, `1g`, `512k`, `100` (bytes), binary units as Docker does.
pub fn parse_bytes(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {s:?}: expected e.g. 64M, 1G"))?;
    if n < 0.0 {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult as f64) as i64)
}

/// Parses a CPU amount (`0.5`) into nano-CPUs.
pub fn parse_cpus(s: &str) -> anyhow::Result<i64> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid CPU amount {s:?}: expected e.g. 0.5"))?;
    if !(0.0..=1e6).contains(&n) {
        bail!("invalid CPU amount {s:?}: must not be negative");
    }
    Ok((n * 1e9) as i64)
}

fn parse_port(s: &str) -> anyhow::Result<PortConfig> {
    let mut p = PortConfig {
        protocol: "tcp".into(),
        publish_mode: "ingress".into(),
        ..Default::default()
    };
    let num = |v: &str| -> anyhow::Result<u32> {
        let n: u32 = v
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid port {v:?} in --publish {s:?}"))?;
        if n == 0 || n > 65535 {
            bail!("invalid port {n} in --publish {s:?}: must be 1-65535");
        }
        Ok(n)
    };
    if s.contains('=') {
        for kv in s.split(',') {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("invalid --publish {s:?}"))?;
            match k {
                "mode" => p.publish_mode = v.to_string(),
                "target" => p.target_port = num(v)?,
                "published" => p.published_port = num(v)?,
                "protocol" => p.protocol = v.to_string(),
                other => bail!("invalid --publish field {other:?} in {s:?}"),
            }
        }
    } else {
        let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        p.protocol = proto.to_string();
        match spec.split_once(':') {
            Some((a, b)) => {
                p.published_port = num(a)?;
                p.target_port = num(b)?;
            }
            None => p.target_port = num(spec)?,
        }
    }
    if p.target_port == 0 {
        bail!("invalid --publish {s:?}: target port is required");
    }
    if !["host", "ingress"].contains(&p.publish_mode.as_str()) {
        bail!(
            "invalid --publish mode {:?}: use host or ingress",
            p.publish_mode
        );
    }
    Ok(p)
}

fn kv(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !s.is_empty() => Ok((s.to_string(), String::new())),
        _ => bail!("invalid {what} {s:?}: expected KEY=VALUE"),
    }
}

fn set_env(env: &mut Vec<String>, add: &[String]) {
    for e in add {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
}

impl SpecFlags {
    /// Applies the flags to `spec` (create and update alike).
    fn apply(&self, spec: &mut ServiceSpec) -> anyhow::Result<()> {
        if let Some(r) = self.replicas {
            if r < 0 {
                bail!("invalid replicas value {r}: must be 0 or more");
            }
            match spec.mode.kind() {
                ModeKind::Replicated => {
                    spec.mode.replicated = Some(ReplicatedMode {
                        replicas: Some(r as u64),
                    })
                }
                ModeKind::ReplicatedJob => {
                    spec.mode
                        .replicated_job
                        .get_or_insert_with(Default::default)
                        .total_completions = Some(r as u64)
                }
                _ => bail!("--replicas can only be used with replicated mode"),
            }
        }
        let tpl = &mut spec.task_template;
        if !self.constraints.is_empty()
            || !self.placement_prefs.is_empty()
            || self.placement_strategy.is_some()
            || self.replicas_max_per_node.is_some()
        {
            let p = tpl.placement.get_or_insert_with(Placement::default);
            for c in &self.constraints {
                shoal_scheduler::parse_constraint(c).map_err(|e| anyhow::anyhow!("{e}"))?;
                if !p.constraints.contains(c) {
                    p.constraints.push(c.clone());
                }
            }
            for pref in &self.placement_prefs {
                shoal_scheduler::parse_preference(pref).map_err(|e| anyhow::anyhow!("{e}"))?;
                let desc = pref.strip_prefix("spread=").unwrap_or(pref).to_string();
                p.preferences.push(PlacementPreference {
                    spread: Some(SpreadOver {
                        spread_descriptor: desc,
                    }),
                });
            }
            if let Some(s) = &self.placement_strategy {
                if !["spread", "binpack", "random"].contains(&s.as_str()) {
                    bail!("invalid --placement-strategy {s:?}: use spread, binpack or random");
                }
                p.strategy = s.clone();
            }
            if let Some(m) = self.replicas_max_per_node {
                p.max_replicas = m;
            }
        }
        if self.reserve_cpu.is_some()
            || self.reserve_memory.is_some()
            || self.limit_cpu.is_some()
            || self.limit_memory.is_some()
        {
            let r = tpl
                .resources
                .get_or_insert_with(ResourceRequirements::default);
            if self.reserve_cpu.is_some() || self.reserve_memory.is_some() {
                let v = r.reservations.get_or_insert_with(Reservation::default);
                if let Some(c) = &self.reserve_cpu {
                    v.nano_cpus = parse_cpus(c)?;
                }
                if let Some(m) = &self.reserve_memory {
                    v.memory_bytes = parse_bytes(m)?;
                }
            }
            if self.limit_cpu.is_some() || self.limit_memory.is_some() {
                let l = r.limits.get_or_insert_with(Limit::default);
                if let Some(c) = &self.limit_cpu {
                    l.nano_cpus = parse_cpus(c)?;
                }
                if let Some(m) = &self.limit_memory {
                    l.memory_bytes = parse_bytes(m)?;
                }
            }
        }
        if self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some()
        {
            let p = tpl
                .restart_policy
                .get_or_insert_with(RestartPolicy::default);
            if let Some(c) = &self.restart_condition {
                p.condition = Some(match c.as_str() {
                    "none" => RestartCondition::None,
                    "on-failure" => RestartCondition::OnFailure,
                    "any" => RestartCondition::Any,
                    other => {
                        bail!("invalid --restart-condition {other:?}: use none, on-failure or any")
                    }
                });
            }
            if let Some(d) = self.restart_delay {
                p.delay = Some(d.as_nanos() as i64);
            }
            if let Some(n) = self.restart_max_attempts {
                p.max_attempts = Some(n);
            }
            if let Some(w) = self.restart_window {
                p.window = Some(w.as_nanos() as i64);
            }
        }
        for e in &self.env {
            kv(e, "--env")?;
        }
        if let Some(p) = &mut tpl.process_spec {
            set_env(&mut p.env, &self.env);
            if let Some(w) = &self.workdir {
                p.dir = w.clone();
            }
            if let Some(u) = &self.user {
                p.user = u.clone();
            }
            if let Some(g) = self.stop_grace_period {
                p.stop_grace_period = Some(g.as_nanos() as i64);
            }
        }
        if let Some(c) = &mut tpl.container_spec {
            set_env(&mut c.env, &self.env);
            if let Some(w) = &self.workdir {
                c.dir = w.clone();
            }
            if let Some(u) = &self.user {
                c.user = u.clone();
            }
            if let Some(g) = self.stop_grace_period {
                c.stop_grace_period = Some(g.as_nanos() as i64);
            }
        }
        if !self.publish.is_empty() {
            let ep = spec.endpoint_spec.get_or_insert_with(EndpointSpec::default);
            for p in &self.publish {
                let port = parse_port(p)?;
                ep.ports.retain(|x| {
                    !(x.published_port == port.published_port
                        && x.protocol == port.protocol
                        && port.published_port != 0)
                });
                ep.ports.push(port);
            }
        }
        if self.update_parallelism.is_some()
            || self.update_delay.is_some()
            || self.update_order.is_some()
        {
            let u = spec.update_config.get_or_insert_with(|| UpdateConfig {
                parallelism: 1,
                ..Default::default()
            });
            if let Some(p) = self.update_parallelism {
                u.parallelism = p;
            }
            if let Some(d) = self.update_delay {
                u.delay = d.as_nanos() as i64;
            }
            if let Some(o) = &self.update_order {
                if !["stop-first", "start-first"].contains(&o.as_str()) {
                    bail!("invalid --update-order {o:?}: use stop-first or start-first");
                }
                u.order = o.clone();
            }
        }
        for l in &self.labels {
            let (k, v) = kv(l, "--label")?;
            spec.labels.insert(k, v);
        }
        Ok(())
    }
}

/// Runs a service command.
pub async fn run(c: &Client, cmd: ServiceCmd) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Create {
            name,
            mode,
            max_concurrent,
            runtime,
            flags,
            command,
        } => {
            let mut spec = ServiceSpec {
                name: name.clone(),
                ..Default::default()
            };
            spec.mode = match mode.as_str() {
                "replicated" => ServiceMode { replicated: Some(ReplicatedMode { replicas: Some(1) }), ..Default::default() },
                "global" => ServiceMode { global: Some(json!({})), ..Default::default() },
                "replicated-job" => ServiceMode {
                    replicated_job: Some(ReplicatedJob { max_concurrent: Some(max_concurrent.unwrap_or(1)), total_completions: None }),
                    ..Default::default()
                },
                "global-job" => ServiceMode { global_job: Some(json!({})), ..Default::default() },
                other => bail!("invalid --mode {other:?}: use replicated, global, replicated-job or global-job"),
            };
            if max_concurrent.is_some() && mode != "replicated-job" {
                bail!("--max-concurrent can only be used with --mode replicated-job");
            }
            match runtime.as_str() {
                "process" => {
                    let (cmd, args) = command.split_first().expect("required");
                    if cmd.trim().is_empty() {
                        bail!("the command must not be empty");
                    }
                    spec.task_template.runtime = "process".into();
                    spec.task_template.process_spec = Some(ProcessSpec {
                        command: cmd.clone(),
                        args: args.to_vec(),
                        ..Default::default()
                    });
                }
                "container" => {
                    let (image, args) = command.split_first().expect("required");
                    spec.task_template.container_spec = Some(ContainerSpec {
                        image: image.clone(),
                        args: args.to_vec(),
                        ..Default::default()
                    });
                }
                other => bail!("invalid --runtime {other:?}: use process or container"),
            }
            flags.apply(&mut spec)?;
            let resp = c
                .call(
                    "POST",
                    "/services/create",
                    Some(serde_json::to_value(&spec)?),
                )
                .await?;
            let v: Value = resp.json()?;
            let id = v["ID"].as_str().unwrap_or_default().to_string();
            println!("{id}");
            if !flags.detach {
                crate::progress::wait(c, &id).await?;
            }
            Ok(())
        }
        ServiceCmd::Ls { format, quiet } => {
            let resp = c.call("GET", "/services?status=true", None).await?;
            resp.ok()?;
            if format.as_deref() == Some("json") {
                let v: Value = serde_json::from_slice(&resp.body)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let mut svcs: Vec<Service> = serde_json::from_slice(&resp.body)?;
            svcs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            if quiet {
                for s in svcs {
                    println!("{}", s.id);
                }
                return Ok(());
            }
            let mut tw = tabwriter::TabWriter::new(std::io::stdout()).padding(3);
            writeln!(tw, "ID\tNAME\tMODE\tREPLICAS\tIMAGE\tPORTS")?;
            for s in svcs {
                let st = s.service_status.clone().unwrap_or_default();
                let mut replicas = format!("{}/{}", st.running_tasks, st.desired_tasks);
                if let Some(m) = s
                    .spec
                    .task_template
                    .placement
                    .as_ref()
                    .map(|p| p.max_replicas)
                    .filter(|m| *m > 0)
                {
                    replicas.push_str(&format!(" (max {m} per node)"));
                }
                let ports: Vec<String> = s
                    .spec
                    .endpoint_spec
                    .as_ref()
                    .map(|e| {
                        e.ports
                            .iter()
                            .map(|p| {
                                format!("*:{}->{}/{}", p.published_port, p.target_port, p.protocol)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                writeln!(
                    tw,
                    "{}\t{}\t{}\t{replicas}\t{}\t{}",
                    &s.id[..12.min(s.id.len())],
                    s.spec.name,
                    s.spec.mode.kind().as_str(),
                    image_of(&s.spec.task_template),
                    ports.join(",")
                )?;
            }
            tw.flush()?;
            Ok(())
        }
        ServiceCmd::Ps {
            services,
            format,
            no_trunc,
        } => {
            let mut all = Vec::new();
            let mut names = HashMap::new();
            for s in &services {
                let svc: Service = c.get(&format!("/services/{}", enc(s))).await?;
                let filter = json!({ "service": { svc.id.clone(): true } }).to_string();
                let tasks: Vec<Task> = c.get(&format!("/tasks?filters={}", enc(&filter))).await?;
                names.insert(svc.id.clone(), svc.spec.name.clone());
                all.extend(
                    tasks
                        .into_iter()
                        .map(|t| (svc.spec.task_template.clone(), t)),
                );
            }
            if format.as_deref() == Some("json") {
                let v: Vec<&Task> = all.iter().map(|(_, t)| t).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            print_tasks(
                c,
                all.into_iter().map(|(_, t)| t).collect(),
                &names,
                no_trunc,
            )
            .await
        }
        ServiceCmd::Inspect { services, pretty } => {
            let mut out = Vec::new();
            let mut failed = None;
            for s in &services {
                match c
                    .get::<Value>(&format!("/services/{}?insertDefaults=true", enc(s)))
                    .await
                {
                    Ok(v) => out.push(v),
                    Err(e) => failed = Some(e),
                }
            }
            if pretty {
                for v in &out {
                    print_pretty(v);
                }
            } else {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        ServiceCmd::Scale { targets, detach } => {
            let mut parsed = Vec::new();
            for t in &targets {
                let (name, n) = t.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("invalid scale specifier {t:?}: expected SERVICE=REPLICAS")
                })?;
                let n: i64 = n.parse().map_err(|_| {
                    anyhow::anyhow!("invalid replicas value {n:?} for {name}: must be a number")
                })?;
                if n < 0 {
                    bail!("invalid replicas value {n} for {name}: must be 0 or more");
                }
                parsed.push((name.to_string(), n));
            }
            for (name, n) in parsed {
                let flags = SpecFlags {
                    replicas: Some(n),
                    ..Default::default()
                };
                let svc = update_service(c, &name, |spec| flags.apply(spec), false).await?;
                println!("{name} scaled to {n}");
                if !detach {
                    crate::progress::wait(c, &svc.id).await?;
                }
            }
            Ok(())
        }
        ServiceCmd::Update {
            flags,
            force,
            args,
            image,
            env_rm,
            constraint_rm,
            label_rm,
            rollback,
            service,
        } => {
            if rollback {
                return rollback_service(c, &service, flags.detach).await;
            }
            let svc = update_service(
                c,
                &service,
                |spec| {
                    flags.apply(spec)?;
                    let tpl = &mut spec.task_template;
                    if let Some(a) = &args {
                        let a: Vec<String> = a.split_whitespace().map(String::from).collect();
                        if let Some(p) = &mut tpl.process_spec {
                            p.args = a.clone();
                        }
                        if let Some(c) = &mut tpl.container_spec {
                            c.args = a;
                        }
                    }
                    if let Some(i) = &image {
                        let c = tpl
                            .container_spec
                            .as_mut()
                            .ok_or_else(|| anyhow::anyhow!("--image needs a container service"))?;
                        c.image = i.clone();
                    }
                    for k in &env_rm {
                        if let Some(p) = &mut tpl.process_spec {
                            p.env.retain(|e| e.split('=').next() != Some(k.as_str()));
                        }
                        if let Some(c) = &mut tpl.container_spec {
                            c.env.retain(|e| e.split('=').next() != Some(k.as_str()));
                        }
                    }
                    if let Some(p) = &mut tpl.placement {
                        p.constraints.retain(|x| !constraint_rm.contains(x));
                    }
                    for l in &label_rm {
                        spec.labels.remove(l);
                    }
                    if force {
                        spec.task_template.force_update += 1;
                    }
                    Ok(())
                },
                false,
            )
            .await?;
            println!("{service}");
            if !flags.detach {
                crate::progress::wait(c, &svc.id).await?;
            }
            Ok(())
        }
        ServiceCmd::Rollback { service, detach } => rollback_service(c, &service, detach).await,
        ServiceCmd::Rm { services } => {
            let mut failed = false;
            for s in &services {
                match c
                    .call("DELETE", &format!("/services/{}", enc(s)), None)
                    .await?
                    .ok()
                {
                    Ok(()) => println!("{s}"),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("some services were not removed");
            }
            Ok(())
        }
        ServiceCmd::Logs {
            service,
            follow,
            tail,
            timestamps,
        } => crate::logs::run(c, &service, follow, tail, timestamps).await,
    }
}

async fn rollback_service(c: &Client, service: &str, detach: bool) -> anyhow::Result<()> {
    let svc = update_service(c, service, |_| Ok(()), true).await?;
    println!("{service}");
    if !detach {
        crate::progress::wait(c, &svc.id).await?;
    }
    Ok(())
}

async fn update_service(
    c: &Client,
    service: &str,
    mut f: impl FnMut(&mut ServiceSpec) -> anyhow::Result<()>,
    rollback: bool,
) -> anyhow::Result<Service> {
    let q = if rollback { "&rollback=previous" } else { "" };
    c.update_versioned(
        &format!("/services/{}", enc(service)),
        |svc: &mut Service| {
            f(&mut svc.spec)?;
            Ok((
                format!(
                    "/services/{}/update?version={}{q}",
                    svc.id, svc.version.index
                ),
                serde_json::to_value(&svc.spec)?,
            ))
        },
    )
    .await
}

/// What `service ls`/`ps` show in the IMAGE column.
pub fn image_of(tpl: &shoal_api::TaskSpec) -> String {
    if let Some(c) = &tpl.container_spec {
        return c.image.split('@').next().unwrap_or_default().to_string();
    }
    if let Some(p) = &tpl.process_spec {
        return std::iter::once(p.command.clone())
            .chain(p.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
    }
    String::new()
}

fn ago(t: &shoal_api::Timestamp) -> String {
    let d = t.elapsed().as_secs();
    match d {
        0 => "Less than a second ago".into(),
        1..=59 => format!("{d} seconds ago"),
        60..=3599 => format!("{} minutes ago", d / 60),
        _ => format!("{} hours ago", d / 3600),
    }
}

fn title(s: &str) -> String {
    let mut cs = s.chars();
    cs.next()
        .map(|f| f.to_uppercase().collect::<String>() + cs.as_str())
        .unwrap_or_default()
}

/// Prints tasks as `docker service ps` does.
pub async fn print_tasks(
    c: &Client,
    mut tasks: Vec<Task>,
    names: &HashMap<String, String>,
    no_trunc: bool,
) -> anyhow::Result<()> {
    let nodes: Vec<Node> = c.get("/nodes").await.unwrap_or_default();
    let host: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.description.hostname.as_str()))
        .collect();
    tasks.sort_by(|a, b| {
        (
            names.get(&a.service_id),
            a.slot,
            &a.node_id,
            std::cmp::Reverse(a.created_at),
        )
            .cmp(&(
                names.get(&b.service_id),
                b.slot,
                &b.node_id,
                std::cmp::Reverse(b.created_at),
            ))
    });
    let mut tw = tabwriter::TabWriter::new(std::io::stdout()).padding(3);
    writeln!(
        tw,
        "ID\tNAME\tIMAGE\tNODE\tDESIRED STATE\tCURRENT STATE\tERROR\tPORTS"
    )?;
    let mut last_key = None;
    for t in tasks {
        let svc = names
            .get(&t.service_id)
            .cloned()
            .unwrap_or_else(|| t.service_id.clone());
        let key = (t.service_id.clone(), t.slot, t.node_id.clone());
        let name = if t.slot > 0 {
            format!("{svc}.{}", t.slot)
        } else {
            format!("{svc}.{}", t.node_id)
        };
        let name = if last_key.as_ref() == Some(&key) {
            format!(" \\_ {name}")
        } else {
            name
        };
        last_key = Some(key);
        let id = if no_trunc {
            t.id.clone()
        } else {
            t.id[..12.min(t.id.len())].to_string()
        };
        let mut err = t.status.err.clone();
        if !no_trunc && err.len() > 60 {
            err = format!("\"{}…\"", &err[..59]);
        } else if !err.is_empty() {
            err = format!("\"{err}\"");
        }
        writeln!(
            tw,
            "{id}\t{name}\t{}\t{}\t{}\t{} {}\t{err}\t",
            image_of(&t.spec),
            host.get(t.node_id.as_str())
                .copied()
                .unwrap_or(t.node_id.as_str()),
            title(t.desired_state.as_str()),
            title(t.status.state.as_str()),
            ago(&t.status.timestamp)
        )?;
    }
    tw.flush()?;
    Ok(())
}

fn print_pretty(v: &Value) {
    let spec = &v["Spec"];
    println!("\nID:\t\t{}", v["ID"].as_str().unwrap_or_default());
    println!("Name:\t\t{}", spec["Name"].as_str().unwrap_or_default());
    if let Some(labels) = spec["Labels"].as_object().filter(|l| !l.is_empty()) {
        println!("Labels:");
        for (k, val) in labels {
            println!(" {k}={}", val.as_str().unwrap_or_default());
        }
    }
    let mode = &spec["Mode"];
    if let Some(r) = mode["Replicated"]["Replicas"].as_u64() {
        println!("Service Mode:\tReplicated\n Replicas:\t{r}");
    } else if mode.get("Global").is_some() {
        println!("Service Mode:\tGlobal");
    } else if mode.get("ReplicatedJob").is_some() {
        println!("Service Mode:\tReplicated Job");
    } else {
        println!("Service Mode:\tGlobal Job");
    }
    let tpl = &spec["TaskTemplate"];
    if let Some(c) = tpl["Placement"]["Constraints"].as_array() {
        println!(
            "Placement:\n Constraints:\t{:?}",
            c.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>()
        );
    }
    let rp = &tpl["RestartPolicy"];
    println!(
        "RestartPolicy:\n On failure:\t{}",
        rp["Condition"].as_str().unwrap_or("any")
    );
    if let Some(u) = spec.get("UpdateConfig") {
        println!(
            "UpdateConfig:\n Parallelism:\t{}\n Order:\t\t{}",
            u["Parallelism"],
            u["Order"].as_str().unwrap_or("stop-first")
        );
    }
    for (key, field, label) in [
        ("ProcessSpec", "Command", "Command:\t"),
        ("ContainerSpec", "Image", "Image:\t\t"),
    ] {
        let Some(spec) = tpl.get(key) else { continue };
        println!(
            "{key}:\n {label}{}",
            spec[field].as_str().unwrap_or_default()
        );
        if let Some(a) = spec["Args"].as_array() {
            let args: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
            println!(" Args:\t\t{}", args.join(" "));
        }
    }
    println!(
        "Runtime:\t{}",
        tpl["Runtime"].as_str().unwrap_or("container")
    );
}

/// `shoal node ps [NODE]`.
pub async fn node_ps(c: &Client, node: Option<String>, no_trunc: bool) -> anyhow::Result<()> {
    let node = match node {
        Some(n) if n != "self" => n,
        _ => {
            let info: Value = c.get("/info").await?;
            info["Swarm"]["NodeID"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    let n: Node = c
        .get(&format!("/nodes/{}", enc(&node)))
        .await
        .context("looking up the node")?;
    let filter = json!({ "node": { n.id.clone(): true } }).to_string();
    let tasks: Vec<Task> = c.get(&format!("/tasks?filters={}", enc(&filter))).await?;
    let svcs: Vec<Service> = c.get("/services").await?;
    let names = svcs.into_iter().map(|s| (s.id, s.spec.name)).collect();
    print_tasks(c, tasks, &names, no_trunc).await
}
