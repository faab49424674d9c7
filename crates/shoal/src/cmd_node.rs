//! `shoal node …`.

use crate::client::{enc, Client};
use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;
use shoal_api::{Availability, Node, NodeRole};
use std::io::Write;

#[derive(Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    #[command(alias = "list")]
    Ls {
        /// `json` prints the API's `GET /nodes` array.
        #[arg(long)]
        format: Option<String>,
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show nodes in detail (JSON).
    Inspect {
        /// Node IDs, ID prefixes or hostnames (`self` for this node).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Change a node's availability or labels.
    Update {
        /// active, pause or drain.
        #[arg(long)]
        availability: Option<String>,
        /// Add or change a label (K=V).
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a label.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        /// manager or worker.
        #[arg(long)]
        role: Option<String>,
        /// The node.
        node: String,
    },
    /// Make nodes managers.
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List the tasks on a node (default: this one).
    Ps {
        node: Option<String>,
        /// Do not truncate IDs and errors.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove nodes from the cluster.
    #[command(alias = "remove")]
    Rm {
        /// Remove a node that is not down.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

async fn self_id(c: &Client) -> anyhow::Result<String> {
    let info: Value = c.get("/info").await?;
    Ok(info["Swarm"]["NodeID"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

async fn resolve_arg(c: &Client, arg: &str) -> anyhow::Result<String> {
    if arg == "self" {
        self_id(c).await
    } else {
        Ok(arg.to_string())
    }
}

fn title(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(f) => f.to_uppercase().collect::<String>() + cs.as_str(),
        None => String::new(),
    }
}

/// Runs a node command.
pub async fn run(c: &Client, cmd: NodeCmd) -> anyhow::Result<()> {
    match cmd {
        NodeCmd::Ls { format, quiet } => {
            let resp = c.call("GET", "/nodes", None).await?;
            resp.ok()?;
            if format.as_deref() == Some("json") {
                let v: Value = serde_json::from_slice(&resp.body)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if let Some(f) = format {
                bail!("unsupported --format {f:?}: use json");
            }
            let mut nodes: Vec<Node> = serde_json::from_slice(&resp.body)?;
            nodes.sort_by(|a, b| {
                a.description
                    .hostname
                    .cmp(&b.description.hostname)
                    .then(a.id.cmp(&b.id))
            });
            if quiet {
                for n in nodes {
                    println!("{}", n.id);
                }
                return Ok(());
            }
            let me = if nodes.is_empty() {
                String::new()
            } else {
                self_id(c).await.unwrap_or_default()
            };
            let mut tw = tabwriter::TabWriter::new(std::io::stdout()).padding(3);
            writeln!(
                tw,
                "ID\tHOSTNAME\tSTATUS\tAVAILABILITY\tMANAGER STATUS\tENGINE VERSION"
            )?;
            for n in nodes {
                let id = if n.id == me {
                    format!("{} *", n.id)
                } else {
                    n.id.clone()
                };
                let ms = match &n.manager_status {
                    Some(m) if m.leader => "Leader".to_string(),
                    Some(m) => title(&m.reachability),
                    None => String::new(),
                };
                writeln!(
                    tw,
                    "{id}\t{}\t{}\t{}\t{ms}\t{}",
                    n.description.hostname,
                    title(n.status.state.as_str()),
                    title(n.spec.availability.as_str()),
                    n.description.engine.engine_version
                )?;
            }
            tw.flush()?;
            Ok(())
        }
        NodeCmd::Inspect { nodes } => {
            let mut out = Vec::new();
            let mut err = None;
            for n in nodes {
                let id = resolve_arg(c, &n).await?;
                match c.get::<Value>(&format!("/nodes/{}", enc(&id))).await {
                    Ok(v) => out.push(v),
                    Err(e) => err = Some(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            match err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        NodeCmd::Update {
            availability,
            label_add,
            label_rm,
            role,
            node,
        } => {
            let availability = availability
                .map(|a| match a.as_str() {
                    "active" => Ok(Availability::Active),
                    "pause" => Ok(Availability::Pause),
                    "drain" => Ok(Availability::Drain),
                    other => Err(anyhow::anyhow!(
                        "invalid availability {other:?}: use active, pause or drain"
                    )),
                })
                .transpose()?;
            let role = role.map(|r| parse_role(&r)).transpose()?;
            let mut adds = Vec::new();
            for l in &label_add {
                match l.split_once('=') {
                    Some((k, v)) if !k.is_empty() => adds.push((k.to_string(), v.to_string())),
                    None if !l.is_empty() => adds.push((l.clone(), String::new())),
                    _ => bail!("invalid label {l:?}: expected KEY=VALUE"),
                }
            }
            update(c, &node, |n| {
                if let Some(a) = availability {
                    n.spec.availability = a;
                }
                if let Some(r) = role {
                    n.spec.role = r;
                }
                for (k, v) in &adds {
                    n.spec.labels.insert(k.clone(), v.clone());
                }
                for k in &label_rm {
                    if n.spec.labels.remove(k).is_none() {
                        bail!("key {k} doesn't exist in node's labels");
                    }
                }
                Ok(())
            })
            .await?;
            println!("{node}");
            Ok(())
        }
        NodeCmd::Ps { node, no_trunc } => crate::cmd_service::node_ps(c, node, no_trunc).await,
        NodeCmd::Promote { nodes } => change_roles(c, nodes, NodeRole::Manager).await,
        NodeCmd::Demote { nodes } => change_roles(c, nodes, NodeRole::Worker).await,
        NodeCmd::Rm { force, nodes } => {
            let mut failed = None;
            for n in nodes {
                let id = resolve_arg(c, &n).await?;
                let r = c
                    .call(
                        "DELETE",
                        &format!("/nodes/{}?force={force}", enc(&id)),
                        None,
                    )
                    .await?;
                match r.ok() {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{e}");
                        failed = Some(e);
                    }
                }
            }
            match failed {
                Some(_) => bail!("some nodes were not removed"),
                None => Ok(()),
            }
        }
    }
}

fn parse_role(r: &str) -> anyhow::Result<NodeRole> {
    match r {
        "manager" => Ok(NodeRole::Manager),
        "worker" => Ok(NodeRole::Worker),
        other => bail!("invalid role {other:?}: use manager or worker"),
    }
}

async fn update(
    c: &Client,
    node: &str,
    mut f: impl FnMut(&mut Node) -> anyhow::Result<()>,
) -> anyhow::Result<Node> {
    let id = resolve_arg(c, node).await?;
    c.update_versioned(&format!("/nodes/{}", enc(&id)), |n: &mut Node| {
        f(n)?;
        Ok((
            format!("/nodes/{}/update?version={}", n.id, n.version.index),
            serde_json::to_value(&n.spec)?,
        ))
    })
    .await
}

async fn change_roles(c: &Client, nodes: Vec<String>, role: NodeRole) -> anyhow::Result<()> {
    for node in nodes {
        let n: Node = c
            .get(&format!("/nodes/{}", enc(&resolve_arg(c, &node).await?)))
            .await?;
        if n.spec.role == role {
            println!("Node {node} is already a {}.", role.as_str());
            continue;
        }
        update(c, &n.id, |n| {
            n.spec.role = role;
            Ok(())
        })
        .await?;
        match role {
            NodeRole::Manager => println!("Node {node} promoted to a manager in the swarm."),
            NodeRole::Worker => println!("Manager {node} demoted in the swarm."),
        }
    }
    Ok(())
}
