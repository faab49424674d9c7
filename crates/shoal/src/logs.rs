//! `shoal service logs`: reads the API's Docker-multiplexed log stream and
//! prints `service.slot.taskid@node    | line`, stdout to stdout and stderr
//! to stderr.

use crate::client::{enc, Client};
use anyhow::{bail, Context};
use http_body_util::BodyExt;
use shoal_api::{Node, Service, Task};
use std::collections::HashMap;
use std::io::Write;

/// Runs `service logs`.
pub async fn run(
    c: &Client,
    service: &str,
    follow: bool,
    tail: Option<String>,
    timestamps: bool,
) -> anyhow::Result<()> {
    let tail = match tail.as_deref() {
        None | Some("all") => "all".to_string(),
        Some(n) => {
            n.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: expected a number or all"))?;
            n.to_string()
        }
    };
    let svc: Service = c.get(&format!("/services/{}", enc(service))).await?;
    let path = format!(
        "/services/{}/logs?details=1&stdout=1&stderr=1&tail={tail}&follow={}&timestamps={}",
        svc.id, follow as u8, timestamps as u8
    );
    let resp = c.request_stream("GET", &path).await?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        let r = crate::client::Response { status, body };
        r.ok()?;
        bail!("unexpected status {status}");
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut names = Names::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the log stream")?;
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
        }
        while buf.len() >= 8 {
            let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            if buf.len() < 8 + len {
                break;
            }
            let stream = buf[0];
            let payload = String::from_utf8_lossy(&buf[8..8 + len]).to_string();
            buf.drain(..8 + len);
            let line = names.render(c, &svc, &payload, timestamps).await;
            if stream == 2 {
                let _ = write!(std::io::stderr(), "{line}");
            } else {
                let mut out = std::io::stdout();
                let _ = write!(out, "{line}");
                let _ = out.flush();
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Names {
    nodes: HashMap<String, String>,
    slots: HashMap<String, String>,
}

impl Names {
    async fn render(
        &mut self,
        c: &Client,
        svc: &Service,
        payload: &str,
        timestamps: bool,
    ) -> String {
        let (ts, rest) = if timestamps {
            payload
                .split_once(' ')
                .map(|(a, b)| (format!("{a} "), b))
                .unwrap_or((String::new(), payload))
        } else {
            (String::new(), payload)
        };
        let (details, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut node = String::new();
        let mut task = String::new();
        for kv in details.split(',') {
            if let Some((k, v)) = kv.split_once('=') {
                match k {
                    "com.docker.swarm.node.id" => node = v.to_string(),
                    "com.docker.swarm.task.id" => task = v.to_string(),
                    _ => {}
                }
            }
        }
        if !self.nodes.contains_key(&node) {
            let host = c
                .get::<Node>(&format!("/nodes/{node}"))
                .await
                .map(|n| n.description.hostname)
                .unwrap_or(node.clone());
            self.nodes.insert(node.clone(), host);
        }
        if !self.slots.contains_key(&task) {
            let slot = c
                .get::<Task>(&format!("/tasks/{task}"))
                .await
                .map(|t| {
                    if t.slot > 0 {
                        t.slot.to_string()
                    } else {
                        t.node_id.clone()
                    }
                })
                .unwrap_or_default();
            self.slots.insert(task.clone(), slot);
        }
        let short = &task[..task.len().min(12)];
        format!(
            "{ts}{}.{}.{short}@{}    | {msg}",
            svc.spec.name, self.slots[&task], self.nodes[&node]
        )
    }
}
