//! The command line, run as a user would: config loading and its errors,
//! exit codes, text and `--json`, and the first start of `serve`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{BIN, Backend, TestServer};
use serde_json::{Value, json};

fn run(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir).args(args).stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn config_check_layers_defaults_file_and_environment_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("l.toml"),
        "region = \"eu\"\nenvironment = \"sandbox\"\n[ratelimit]\nbackend = \"memory\"\n",
    )
    .unwrap();
    let o = run(
        dir.path(),
        &["--config", "l.toml", "--json", "config", "check"],
        &[
            ("LATCHKEY_ENVIRONMENT", "production"),
            ("LATCHKEY_MASTER_KEY", common::MASTER_KEY),
            ("LATCHKEY_CREDENTIALS__QUERY_PARAM", "api_key"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["region"], "eu", "file over defaults");
    assert_eq!(c["environment"], "production", "environment over file");
    assert_eq!(c["credentials"]["query_param"], "api_key", "nested with __");
    assert_eq!(c["listen"], "127.0.0.1:8080", "defaults");
    assert_eq!(c["master_key"], "********");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(common::MASTER_KEY));
    let text = run(
        dir.path(),
        &["--config", "l.toml", "config", "check"],
        &[("LATCHKEY_MASTER_KEY", common::MASTER_KEY)],
    );
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("config OK") && out.contains("master_key = \"********\""),
        "{out}"
    );
}

#[test]
fn bad_configs_exit_2_with_one_line_naming_setting_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("colour = \"red\"\n", &["colour", "bad.toml"]),
        ("listen = 8080\n", &["listen", "bad.toml"]),
        ("[cache]\nttl = \"soon\"\n", &["cache.ttl", "bad.toml"]),
        (
            "[[key_kinds]]\nname = \"a\"\nprefix = \"sk_\"\nenvironments = [\"live\"]\n[[key_kinds]]\nname = \"b\"\nprefix = \"sk_\"\nenvironments = [\"test\"]\n",
            &["key_kinds.1.prefix", "duplicate", "bad.toml"],
        ),
        (
            "[[key_kinds]]\nname = \"a\"\nprefix = \"sk_\"\nenvironments = [\"live\"]\n[[key_kinds]]\nname = \"b\"\nprefix = \"sk_test_\"\nenvironments = [\"test\"]\n",
            &["key_kinds.1.prefix", "prefixes of one another", "bad.toml"],
        ),
        (
            "[scopes]\nseparator = \"/\"\n",
            &["scopes.separator", "bad.toml"],
        ),
        ("listen = \"nowhere\"\n", &["listen", "bad.toml"]),
        ("this is not toml\n", &["bad.toml"]),
    ];
    for (toml, needles) in cases {
        std::fs::write(dir.path().join("bad.toml"), toml).unwrap();
        for cmd in [&["config", "check"][..], &["serve"][..]] {
            let mut args = vec!["--config", "bad.toml"];
            args.extend_from_slice(cmd);
            let o = run(dir.path(), &args, &[]);
            assert_eq!(o.status.code(), Some(2), "{toml:?} {cmd:?}: {}", stderr(&o));
            let err = stderr(&o);
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(!err.contains("panicked"), "{err}");
            for n in *needles {
                assert!(err.contains(n), "{toml:?}: `{n}` not in {err}");
            }
        }
    }
    let o = run(
        dir.path(),
        &["--config", "missing.toml", "config", "check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.toml"));
    let o = run(
        dir.path(),
        &["config", "check"],
        &[("LATCHKEY_LISTEN", "bad")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("listen"), "{}", stderr(&o));
    let o = run(
        dir.path(),
        &["config", "check"],
        &[("LATCHKEY_MASTER_KEY", "tooshort")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("master_key") && !stderr(&o).contains("tooshort"),
        "{}",
        stderr(&o)
    );
    let o = run(dir.path(), &["keys", "frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

/// `latchkey serve` with no config at all, in an empty directory: the
/// embedded database, the master key file, and the banner printed once.
#[test]
fn first_start_prints_a_root_key_once_and_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = Command::new(BIN)
            .current_dir(dir.path())
            .arg("serve")
            .env("LATCHKEY_LISTEN", "127.0.0.1:0")
            .env_remove("LATCHKEY_MASTER_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(1500)) {
            lines.push(l);
        }
        (child, lines.join("\n"))
    };
    let (mut child, out) = start();
    let url = out
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let root = out
        .split("LATCHKEY_ROOT_KEY=")
        .nth(1)
        .expect(&out)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(
        out.contains("curl") && out.contains("/v1/orgs") && out.contains("/v1/verify"),
        "{out}"
    );
    assert!(dir.path().join("latchkey-data/latchkey.db").exists());
    let mk = dir.path().join("latchkey-data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&mk).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{url}/v1/instance"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let (mut child, out) = start();
    assert!(out.contains("listening on"), "{out}");
    assert!(
        !out.contains("lk_root_"),
        "the root key is printed only on a fresh database: {out}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn cli_json(s: &TestServer, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let o = s.cli(&full);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "{args:?}: {} {}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        )
    });
    (o.status.code().unwrap(), v)
}

async fn cli_commands(s: TestServer) {
    let (code, org) = cli_json(&s, &["orgs", "create", "--name", "Acme"]);
    assert_eq!(code, 0);
    let org = org["id"].as_str().unwrap().to_owned();
    let (code, k) = cli_json(
        &s,
        &[
            "keys",
            "create",
            "--org",
            &org,
            "--name",
            "ci",
            "--kind",
            "test",
            "--scopes",
            "a.read, a.write",
            "--expires-in",
            "30d",
        ],
    );
    assert_eq!(code, 0, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    s.remember(&key);
    let id = k["id"].as_str().unwrap().to_owned();
    assert_eq!(k["scopes"], json!(["a.read", "a.write"]));
    assert!(k["expires_at"].is_string());
    // The CLI and the HTTP API see the same data.
    let v = s
        .verify(json!({"credential": key, "environment": "test", "required_scopes": ["a.write"]}))
        .await;
    assert_eq!(v["valid"], true, "{v}");
    let (code, v) = cli_json(
        &s,
        &[
            "verify",
            &key,
            "--environment",
            "test",
            "--scopes",
            "a.read",
        ],
    );
    assert_eq!((code, v["valid"].as_bool()), (0, Some(true)));
    let (code, v) = cli_json(&s, &["verify", &key]);
    assert_eq!((code, v["code"].as_str()), (1, Some("WRONG_ENVIRONMENT")));
    let (code, list) = cli_json(&s, &["keys", "list", "--org", &org]);
    assert_eq!(code, 0);
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert!(list["data"][0].get("key").is_none());
    let (code, rotated) = cli_json(&s, &["keys", "rotate", &id, "--grace-period", "1h"]);
    assert_eq!(code, 0, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    s.remember(&new_key);
    let (code, revoked) = cli_json(&s, &["keys", "revoke", &id, "--reason", "done"]);
    assert_eq!((code, revoked["status"].as_str()), (0, Some("revoked")));
    // Text output for people; refusals exit 1 with the code.
    let o = s.cli(&["keys", "list", "--org", &org]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("revoked") && text.contains("ci"), "{text}");
    let o = s.cli(&["verify", &key, "--environment", "test"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("KEY_REVOKED"));
    let o = s.cli(&["keys", "revoke", "key_000000000000000000000A"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("NOT_FOUND"), "{}", stderr(&o));
    let (code, p) = cli_json(
        &s,
        &[
            "keys", "create", "--org", &org, "--name", "x", "--kind", "nope",
        ],
    );
    assert_eq!(
        (code, p["code"].as_str(), p["status"].as_u64()),
        (1, Some("VALIDATION_FAILED"), Some(422))
    );
    let o = s.cli(&[
        "keys",
        "create",
        "--org",
        &org,
        "--name",
        "x",
        "--expires-in",
        "soon",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let (code, _) = cli_json(&s, &["verify", "sk_test_garbage"]);
    assert_eq!(code, 1);
    let (code, m) = cli_json(&s, &["migrate"]);
    assert_eq!((code, m["migrated"].as_bool()), (0, Some(true)));
}
both!(cli_commands);

#[tokio::test]
async fn data_survives_a_restart() {
    let Some(mut s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let org = s.org().await;
    let (_, k) = s.key(&org, json!({"name": "k"})).await;
    s.restart();
    assert_eq!(s.verify(json!({"credential": k})).await["valid"], true);
}

/// The word of `text` that starts with `prefix`.
fn word_with(text: &str, prefix: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(|w| w.trim_end_matches([',', ')', '(']).to_owned())
}

async fn cli_clients_and_users(s: TestServer) {
    let (_, org) = cli_json(&s, &["orgs", "create", "--name", "Acme"]);
    let org = org["id"].as_str().unwrap().to_owned();
    let cb = "https://app.example.com/callback";

    // Text: the id and the secret, once, with the warning.
    let o = s.cli(&[
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "Web app",
        "--redirect-uri",
        cb,
        "--redirect-uri",
        "http://127.0.0.1:5000/cb",
        "--scopes",
        "documents.read, documents.write",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let secret = word_with(&text, "lk_cs_").expect(&text);
    s.remember(&secret);
    assert!(latchkey_core::keyfmt::check(&secret, "lk_cs_").is_ok());
    let id = word_with(&text, "cli_").expect(&text);
    assert!(text.contains("will not be shown again"), "{text}");
    assert!(text.contains("confidential") && text.contains(cb), "{text}");
    let got = s.get(&format!("/v1/clients/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    let got = got.json();
    assert_eq!(got["name"], "Web app");
    assert_eq!(got["org_id"], org.as_str());
    assert_eq!(
        got["redirect_uris"],
        json!([cb, "http://127.0.0.1:5000/cb"])
    );
    assert_eq!(
        got["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(got["scopes"], json!(["documents.read", "documents.write"]));
    assert_eq!(got["token_endpoint_auth_method"], "client_secret_basic");

    // --json: the HTTP API's NewClientView.
    let (code, c) = cli_json(
        &s,
        &[
            "clients",
            "create",
            "--org",
            &org,
            "--name",
            "worker",
            "--grant-type",
            "client_credentials",
            "--scopes",
            "documents.read",
        ],
    );
    assert_eq!(code, 0, "{c}");
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    s.remember(&secret);
    assert!(secret.starts_with("lk_cs_"));
    let cid = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["client_id"], cid.as_str());
    assert_eq!(c["grant_types"], json!(["client_credentials"]));
    let mut view = c.clone();
    view.as_object_mut().unwrap().remove("client_id");
    view.as_object_mut().unwrap().remove("client_secret");
    assert_eq!(s.get(&format!("/v1/clients/{cid}")).await.json(), view);

    // Public: no secret.
    let (code, p) = cli_json(
        &s,
        &[
            "clients",
            "create",
            "--org",
            &org,
            "--name",
            "SPA",
            "--public",
            "--redirect-uri",
            cb,
            "--grant-type",
            "authorization_code",
            "--grant-type",
            "refresh_token",
        ],
    );
    assert_eq!(code, 0, "{p}");
    assert!(p.get("client_secret").is_none(), "{p}");
    assert_eq!(p["public"], true);
    assert_eq!(p["token_endpoint_auth_method"], "none");
    let o = s.cli(&[
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "Mobile",
        "--public",
        "--redirect-uri",
        "com.example.app:/cb",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("public") && text.contains("no secret") && !text.contains("lk_cs_"),
        "{text}"
    );

    // Refusals: exit 1 with the code and the field on a line of its own.
    let o = s.cli(&[
        "clients",
        "create",
        "--org",
        &org,
        "--name",
        "bad",
        "--redirect-uri",
        "http://app.example.com/cb",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.lines().next().unwrap().contains("VALIDATION_FAILED"),
        "{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("redirect_uris[0]: ") && l.contains("https")),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let (code, p) = cli_json(
        &s,
        &[
            "clients",
            "create",
            "--org",
            &org,
            "--name",
            "bad",
            "--public",
            "--grant-type",
            "client_credentials",
        ],
    );
    assert_eq!((code, p["code"].as_str()), (1, Some("VALIDATION_FAILED")));
    assert_eq!(p["errors"][0]["field"], "grant_types");
    let o = s.cli(&[
        "clients",
        "create",
        "--org",
        "org_0000000000000000000000",
        "--name",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("NOT_FOUND"), "{}", stderr(&o));
    let o = s.cli(&["clients", "create", "--org", &org]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a missing --name is a usage error"
    );
    let list = s.get(&format!("/v1/orgs/{org}/clients")).await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 4, "{list}");

    // Users: --password, then --password-stdin.
    let pw = "a long cli password";
    let (code, u) = cli_json(
        &s,
        &[
            "users",
            "create",
            "--org",
            &org,
            "--email",
            "Ada@Example.COM",
            "--password",
            pw,
            "--role",
            "admin",
        ],
    );
    s.remember(pw);
    assert_eq!(code, 0, "{u}");
    assert!(u["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(u["email"], "ada@example.com");
    assert_eq!(u["role"], "admin");
    assert_eq!(u["org_id"], org.as_str());
    assert!(!u.to_string().contains("password") && !u.to_string().contains("argon2"));
    assert_eq!(
        s.get(&format!("/v1/users/{}", u["id"].as_str().unwrap()))
            .await
            .json(),
        u
    );
    let stdin_pw = "  read from standard input ";
    let o = s.cli_with_stdin(
        &[
            "users",
            "create",
            "--org",
            &org,
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        &format!("{stdin_pw}\n"),
    );
    s.remember(stdin_pw);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("bob@example.com") && text.contains("member"),
        "{text}"
    );
    let bob = word_with(&text, "usr_").expect(&text);
    // The password is the line as typed, without its newline.
    let store = latchkey_store::connect(&s.database_url).await.unwrap();
    let hash = store.get_user(&bob).await.unwrap().password_hash;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(latchkey::oauth::password::verify(stdin_pw.to_owned(), Some(hash.clone())).await);
    assert!(!latchkey::oauth::password::verify(format!("{stdin_pw}\n"), Some(hash)).await);
    drop(store);

    let o = s.cli_with_stdin(
        &[
            "users",
            "create",
            "--org",
            &org,
            "--email",
            "BOB@example.com",
            "--password-stdin",
        ],
        "another long password\r\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("CONFLICT"), "{}", stderr(&o));
    let o = s.cli_with_stdin(
        &[
            "users",
            "create",
            "--org",
            &org,
            "--email",
            "carol@example.com",
            "--password-stdin",
            "--role",
            "owner",
        ],
        "short\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("VALIDATION_FAILED"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("password: ")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.trim_start().starts_with("role: ")),
        "{err}"
    );
    for args in [
        &["users", "create", "--org", &org, "--email", "d@example.com"][..],
        &[
            "users",
            "create",
            "--org",
            &org,
            "--email",
            "d@example.com",
            "--password",
            "twelve chars",
            "--password-stdin",
        ],
    ] {
        let o = s.cli(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let users = s.get(&format!("/v1/orgs/{org}/users")).await.json();
    let emails: Vec<&str> = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["bob@example.com", "ada@example.com"]);

    // The command line's actions are in the log, by `cli`.
    let started = std::time::Instant::now();
    loop {
        let log = s
            .get(&format!("/v1/orgs/{org}/logs?limit=200"))
            .await
            .json();
        let by_cli = |action: &str| {
            log["data"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["action"] == action && e["actor"] == "cli")
                .count()
        };
        if by_cli("client.created") == 4 && by_cli("user.created") == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{log:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
both!(cli_clients_and_users);
