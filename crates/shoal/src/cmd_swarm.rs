//! `shoal swarm …` and `shoal info`.

use crate::client::Client;
use anyhow::bail;
use clap::Subcommand;
use serde_json::Value;
use std::time::Duration;

#[derive(Subcommand)]
pub enum SwarmCmd {
    /// Show (or rotate) the join token of a role.
    JoinToken {
        /// Only print the token.
        #[arg(short, long)]
        quiet: bool,
        /// Invalidate the old token and make a new one.
        #[arg(long)]
        rotate: bool,
        /// worker or manager.
        role: String,
    },
    /// Leave the cluster.
    Leave {
        /// Leave even if this is a manager.
        #[arg(short, long)]
        force: bool,
    },
    /// Change cluster settings.
    Update {
        /// Old tasks kept per slot.
        #[arg(long)]
        task_history_limit: Option<i64>,
        /// Agent heartbeat period.
        #[arg(long, value_parser = crate::parse_duration)]
        dispatcher_heartbeat: Option<Duration>,
        /// Node certificate validity.
        #[arg(long, value_parser = crate::parse_duration)]
        cert_expiry: Option<Duration>,
    },
}

async fn swarm_update(
    c: &Client,
    query: &str,
    mut f: impl FnMut(&mut Value),
) -> anyhow::Result<()> {
    c.update_versioned("/swarm", |sw: &mut Value| {
        let version = sw["Version"]["Index"].as_u64().unwrap_or(0);
        let mut spec = sw["Spec"].clone();
        f(&mut spec);
        Ok((format!("/swarm/update?version={version}{query}"), spec))
    })
    .await
    .map(drop)
}

/// Runs a swarm command.
pub async fn run(c: &Client, cmd: SwarmCmd) -> anyhow::Result<()> {
    match cmd {
        SwarmCmd::JoinToken {
            quiet,
            rotate,
            role,
        } => {
            let key = match role.as_str() {
                "worker" => "Worker",
                "manager" => "Manager",
                other => bail!("unknown role {other:?}: use worker or manager"),
            };
            if rotate {
                let q = format!(
                    "&rotateWorkerToken={}&rotateManagerToken={}",
                    key == "Worker",
                    key == "Manager"
                );
                swarm_update(c, &q, |_| {}).await?;
                if !quiet {
                    println!("Successfully rotated {role} join token.\n");
                }
            }
            let sw: Value = c.get("/swarm").await?;
            let token = sw["JoinTokens"][key]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if quiet {
                println!("{token}");
                return Ok(());
            }
            let info: Value = c.get("/info").await?;
            let me = info["Swarm"]["NodeID"].as_str().unwrap_or_default();
            let node: Value = c.get(&format!("/nodes/{me}")).await?;
            let addr = node["ManagerStatus"]["Addr"].as_str().unwrap_or_default();
            println!("To add a {role} to this swarm, run the following command:\n");
            println!(
                "    shoal join --data-dir DIR --listen-addr IP:PORT --token {token} {addr}\n"
            );
            Ok(())
        }
        SwarmCmd::Leave { force } => {
            c.call("POST", &format!("/swarm/leave?force={force}"), None)
                .await?
                .ok()?;
            println!("Node left the swarm.");
            Ok(())
        }
        SwarmCmd::Update {
            task_history_limit,
            dispatcher_heartbeat,
            cert_expiry,
        } => {
            if let Some(n) = task_history_limit {
                if n < 0 {
                    bail!("invalid --task-history-limit {n}: must be 0 or more");
                }
            }
            swarm_update(
                c,
                "&rotateWorkerToken=false&rotateManagerToken=false",
                |spec| {
                    if let Some(n) = task_history_limit {
                        spec["Orchestration"]["TaskHistoryRetentionLimit"] = n.into();
                    }
                    if let Some(d) = dispatcher_heartbeat {
                        spec["Dispatcher"]["HeartbeatPeriod"] = (d.as_nanos() as i64).into();
                    }
                    if let Some(d) = cert_expiry {
                        spec["CAConfig"]["NodeCertExpiry"] = (d.as_nanos() as i64).into();
                    }
                },
            )
            .await?;
            println!("Swarm updated.");
            Ok(())
        }
    }
}

/// `shoal info`.
pub async fn info(c: &Client, format: Option<&str>) -> anyhow::Result<()> {
    let v: Value = c.get("/info").await?;
    match format {
        Some("json") => println!("{}", serde_json::to_string_pretty(&v)?),
        Some(f) => bail!("unsupported --format {f:?}: use json"),
        None => {
            let s = &v["Swarm"];
            println!("Name: {}", v["Name"].as_str().unwrap_or_default());
            println!(
                "Server Version: {}",
                v["ServerVersion"].as_str().unwrap_or_default()
            );
            println!(
                "Swarm: {}",
                s["LocalNodeState"].as_str().unwrap_or_default()
            );
            println!(" NodeID: {}", s["NodeID"].as_str().unwrap_or_default());
            println!(
                " Is Manager: {}",
                s["ControlAvailable"].as_bool().unwrap_or(false)
            );
            if let Some(id) = s["Cluster"]["ID"].as_str() {
                println!(" ClusterID: {id}");
                println!(" Managers: {}", s["Managers"]);
                println!(" Nodes: {}", s["Nodes"]);
            }
            println!(
                " Node Address: {}",
                s["NodeAddr"].as_str().unwrap_or_default()
            );
            if let Some(ms) = s["RemoteManagers"].as_array() {
                println!(" Manager Addresses:");
                for m in ms {
                    println!("  {}", m["Addr"].as_str().unwrap_or_default());
                }
            }
            println!("CPUs: {}", v["NCPU"]);
            println!("Total Memory: {}", v["MemTotal"]);
        }
    }
    Ok(())
}
