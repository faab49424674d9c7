//! The Docker API on TCP (`--docker-tcp`): plain, and with TLS requiring
//! client certificates (`--docker-tlscert/--docker-tlskey/--docker-tlscacert`,
//! Docker's `--tlsverify`), driven by the stock docker CLI. Bad flag
//! combinations are refused at start. Skipped, with a `SKIPPED` line,
//! without /usr/local/bin/docker.

mod common;

use common::{bin, free_port, Cluster};
use shoal_net::pki::{Role, RootCa};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const DOCKER: &str = "/usr/local/bin/docker";

fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER)
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_tcp_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    let listen = format!("127.0.0.1:{}", free_port());
    for (flags, want) in [
        (vec!["--docker-tlscert", "/x.pem"], "need --docker-tcp"),
        (vec!["--docker-tcp", "nonsense"], "invalid --docker-tcp"),
        (
            vec!["--docker-tcp", "127.0.0.1:1", "--docker-tlscert", "/x.pem"],
            "go together",
        ),
        (
            vec![
                "--docker-tcp",
                "127.0.0.1:1",
                "--docker-tlscacert",
                "/x.pem",
            ],
            "needs --docker-tlscert",
        ),
        (
            vec![
                "--docker-tcp",
                &format!("127.0.0.1:{}", free_port()),
                "--docker-tlscert",
                "/nonexistent/cert.pem",
                "--docker-tlskey",
                "/nonexistent/key.pem",
            ],
            "/nonexistent/cert.pem",
        ),
    ] {
        let mut args = vec![
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen-addr",
            &listen,
        ];
        args.extend(flags.iter().copied());
        let out = Command::new(bin()).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn docker_cli_over_tcp_plain_and_with_client_certificates() {
    if !Path::new(DOCKER).exists() {
        eprintln!("SKIPPED docker_tcp test: no {DOCKER}");
        return;
    }
    let mut c = Cluster::new();
    // TLS material: a CA, a server certificate for 127.0.0.1, a client certificate.
    let ca = RootCa::generate().unwrap();
    let day = Duration::from_secs(86_400);
    let server = ca
        .issue_node_cert("api", Role::Manager, "tls", day, &["127.0.0.1".into()])
        .unwrap();
    let client = ca
        .issue_node_cert("client", Role::Worker, "tls", day, &[])
        .unwrap();
    let other_ca = RootCa::generate().unwrap();
    let stranger = other_ca
        .issue_node_cert("stranger", Role::Worker, "tls", day, &[])
        .unwrap();
    let f = |name: &str, text: &str| {
        let p = c.tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (ca_pem, cert, key) = (
        f("ca.pem", &ca.cert_pem),
        f("server.pem", &server.cert_pem),
        f("server.key", &server.key_pem),
    );
    let (ccert, ckey) = (
        f("client.pem", &client.cert_pem),
        f("client.key", &client.key_pem),
    );
    let (scert, skey) = (
        f("stranger.pem", &stranger.cert_pem),
        f("stranger.key", &stranger.key_pem),
    );

    let tls_addr = format!("127.0.0.1:{}", free_port());
    let plain_addr = format!("127.0.0.1:{}", free_port());
    c.init(
        "m1",
        &[
            "--docker-tcp",
            &tls_addr,
            "--docker-tlscert",
            &cert,
            "--docker-tlskey",
            &key,
            "--docker-tlscacert",
            &ca_pem,
        ],
    );
    c.join_with("w1", "worker", 0, &["--docker-tcp", &plain_addr]);

    let h = format!("tcp://{tls_addr}");
    // The docker CLI with a client certificate `cert`/`key` signed by `ca`.
    let with_cert = |cert: &str, key: &str, rest: &[&str]| {
        let mut args = vec![
            "--tlsverify",
            "--tlscacert",
            &ca_pem,
            "--tlscert",
            cert,
            "--tlskey",
            key,
            "-H",
            &h,
        ];
        args.extend_from_slice(rest);
        docker(&args)
    };
    let out = with_cert(&ccert, &ckey, &["node", "ls", "--format", "{{.Hostname}}"]);
    assert!(out.status.success(), "{out:?}");
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("m1") && names.contains("w1"), "{names}");

    // No client certificate, one from another CA, or plain HTTP: refused.
    for args in [
        vec!["--tls", "--tlscacert", &ca_pem, "-H", &h, "node", "ls"],
        vec!["-H", &h, "node", "ls"],
    ] {
        let out = docker(&args);
        assert!(!out.status.success(), "{args:?} was let in: {out:?}");
    }
    let out = with_cert(&scert, &skey, &["node", "ls"]);
    assert!(
        !out.status.success(),
        "a certificate of another CA was let in"
    );

    // Plain TCP on the worker: its API answers (and says it is no manager).
    let out = docker(&[
        "-H",
        &format!("tcp://{plain_addr}"),
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}}",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "active");
    let out = docker(&["-H", &format!("tcp://{plain_addr}"), "node", "ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a swarm manager"));

    // The flags are remembered across a restart.
    c.nodes[0].restart();
    let out = with_cert(&ccert, &ckey, &["node", "ls"]);
    assert!(out.status.success(), "{out:?}");
}
