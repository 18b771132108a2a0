//! The Docker deliverable, checked without a Docker engine: `compose.yaml`
//! is a valid Compose file (against the Compose Specification schema vendored
//! in `deploy/compose-spec.json`), it keeps the invariants of the scale-out
//! setup (two instances on the Redis backplane, distinct ids, health-gated
//! start, loopback-only ports, one image for servers and client), every
//! `CHAT_*` variable it sets is real server configuration, and the
//! `Dockerfile` runs as non-root with a working health check.

use crate::common::{ServerProcess, server_command};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SERVERS: [&str; 2] = ["chat.server1", "chat.server2"];
const CLIENT: &str = "chat.client";
const REDIS: &str = "redis";
/// The port the server listens on inside its container.
const CONTAINER_PORT: u16 = 5000;

fn repo_file(name: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path, text)
}

/// `compose.yaml` as JSON, the shape the schema describes.
fn compose() -> Value {
    let (path, text) = repo_file("compose.yaml");
    serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("compose.yaml has no service {name:?}"))
}

/// A service's `environment`, in either of its two forms (map or `K=V` list).
fn environment(service: &Value) -> BTreeMap<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match &service["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let item = item.as_str().expect("environment entries are strings");
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        other => panic!("unexpected environment {other}"),
    }
}

/// One `ports` entry as (host address, published port, container port), from
/// the short (`[HOST:]PUBLISHED:TARGET[/PROTO]`) or the long syntax.
fn port_binding(entry: &Value) -> (Option<String>, Option<String>, String) {
    if let Some(map) = entry.as_object() {
        let s = |k: &str| {
            map.get(k)
                .map(|v| v.as_str().map_or(v.to_string(), String::from))
        };
        return (
            s("host_ip"),
            s("published"),
            s("target").unwrap_or_default(),
        );
    }
    let text = entry.as_str().map_or(entry.to_string(), String::from);
    let text = text.split('/').next().unwrap_or_default();
    // An IPv6 host is bracketed: `[::1]:5001:5000`.
    let (host, rest) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (host, rest) = bracketed.split_once("]:").expect("[IPv6]:PORTS");
            (Some(host.to_string()), rest.to_string())
        }
        None => (None, text.to_string()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    match (host, parts.as_slice()) {
        (Some(h), [published, target]) => {
            (Some(h), Some(published.to_string()), target.to_string())
        }
        (None, [h, published, target]) => (
            Some(h.to_string()),
            Some(published.to_string()),
            target.to_string(),
        ),
        (None, [published, target]) => (None, Some(published.to_string()), target.to_string()),
        (None, [target]) => (None, None, target.to_string()),
        _ => panic!("cannot read the port entry {entry}"),
    }
}

/// The Dockerfile's instructions as (KEYWORD, arguments): continuation lines
/// joined, comments and blank lines dropped.
fn dockerfile() -> Vec<(String, String)> {
    let (_, text) = repo_file("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(body) = line.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        instructions.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    instructions
}

/// The instructions of the last (runtime) stage.
fn final_stage(instructions: &[(String, String)]) -> &[(String, String)] {
    let from = instructions
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("the Dockerfile has a FROM");
    &instructions[from + 1..]
}

/// A command in exec form (`["a", "b"]`) or shell form (`a b`).
fn command_words(args: &str) -> Vec<String> {
    if args.trim_start().starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("bad exec form {args}: {e}"))
    } else {
        args.split_whitespace().map(String::from).collect()
    }
}

/// The `ENV` values the runtime stage sets, which every container starts with.
fn image_env(stage: &[(String, String)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, args) in stage.iter().filter(|(k, _)| k == "ENV") {
        if let Some((key, value)) = args.split_once(char::is_whitespace)
            && !key.contains('=')
        {
            env.insert(key.to_string(), value.trim().to_string()); // legacy `ENV KEY value`
            continue;
        }
        for pair in args.split_whitespace() {
            let (key, value) = pair.split_once('=').expect("ENV KEY=VALUE");
            env.insert(key.to_string(), value.trim_matches('"').to_string());
        }
    }
    env
}

/// The health check's command, e.g. `["chat-server", "healthcheck"]`.
fn healthcheck_command(stage: &[(String, String)]) -> Vec<String> {
    let (_, args) = stage
        .iter()
        .rfind(|(k, _)| k == "HEALTHCHECK")
        .expect("the runtime stage has a HEALTHCHECK");
    let (_, cmd) = args
        .split_once("CMD")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {args}"));
    command_words(cmd)
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let (schema_path, schema) = repo_file("deploy/compose-spec.json");
    let schema: Value =
        serde_json::from_str(&schema).unwrap_or_else(|e| panic!("{}: {e}", schema_path.display()));
    let validator = jsonschema::validator_for(&schema).expect("the vendored schema compiles");
    let errors = |doc: &Value| -> Vec<String> {
        validator
            .iter_errors(doc)
            .map(|e| format!("at {:?}: {e}", e.instance_path().as_str()))
            .collect()
    };

    let doc = compose();
    let found = errors(&doc);
    assert!(
        found.is_empty(),
        "compose.yaml does not match the Compose Specification ({}):\n  {}",
        schema_path.display(),
        found.join("\n  ")
    );

    // The validator does reject what Compose rejects: a misspelt key, a
    // wrong type, an unknown depends_on condition.
    let mut typo = doc.clone();
    typo["services"][REDIS]["imagee"] = "redis:7-alpine".into();
    let mut wrong_type = doc.clone();
    wrong_type["services"][SERVERS[0]]["ports"] = 5001.into();
    let mut bad_condition = doc.clone();
    bad_condition["services"][SERVERS[0]]["depends_on"][REDIS]["condition"] =
        "service_ready".into();
    for broken in [typo, wrong_type, bad_condition] {
        assert!(!errors(&broken).is_empty(), "accepted: {broken}");
    }
}

#[test]
fn servers_share_the_redis_backplane_with_distinct_ids_and_health_gated_start() {
    let doc = compose();
    let redis = service(&doc, REDIS);
    assert!(
        redis["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("redis:")),
        "the {REDIS} service runs Redis: {redis}"
    );
    assert!(
        redis["healthcheck"]["test"].is_array() || redis["healthcheck"]["test"].is_string(),
        "the {REDIS} service has a healthcheck, which the servers wait for"
    );

    let mut ids = Vec::new();
    let mut stores = Vec::new();
    let mut published = Vec::new();
    for name in SERVERS {
        let server = service(&doc, name);
        let env = environment(server);
        assert_eq!(
            env.get("CHAT_BACKPLANE").map(String::as_str),
            Some("redis"),
            "{name}"
        );
        let url = env
            .get("CHAT_REDIS__URL")
            .unwrap_or_else(|| panic!("{name} sets CHAT_REDIS__URL"));
        let host = url
            .strip_prefix("redis://")
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or_else(|| panic!("{name}: {url} is a redis:// URL"));
        assert_eq!(host, REDIS, "{name} points at the {REDIS} service: {url}");

        let id = env.get("CHAT_SERVER_ID").cloned().unwrap_or_default();
        assert!(!id.is_empty(), "{name} sets CHAT_SERVER_ID");
        ids.push(id);

        // One store numbers every room's messages for both instances.
        let store = env
            .get("CHAT_STORE__URL")
            .unwrap_or_else(|| panic!("{name} sets CHAT_STORE__URL"));
        assert!(
            store.starts_with("postgres://") && store.contains("@postgres:"),
            "{name} uses the shared postgres service: {store}"
        );
        stores.push(store.clone());
        assert_eq!(
            server["depends_on"]["postgres"]["condition"].as_str(),
            Some("service_healthy"),
            "{name} starts once PostgreSQL is healthy"
        );

        assert_eq!(
            server["depends_on"][REDIS]["condition"].as_str(),
            Some("service_healthy"),
            "{name} starts once Redis is healthy"
        );
        assert!(
            server.get("entrypoint").is_none() && server.get("command").is_none(),
            "{name} runs the image's chat-server entrypoint"
        );

        let ports = server["ports"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} publishes its port"));
        for entry in ports {
            let (_, host_port, target) = port_binding(entry);
            assert_eq!(target, CONTAINER_PORT.to_string(), "{name}: {entry}");
            published.push(host_port.unwrap_or_else(|| panic!("{name}: {entry} names a port")));
        }
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), SERVERS.len(), "server ids are distinct: {ids:?}");
    stores.dedup();
    assert_eq!(stores.len(), 1, "the servers share one store: {stores:?}");
    let mut unique = published.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        published.len(),
        "host ports differ: {published:?}"
    );
}

#[test]
fn every_published_port_is_bound_to_loopback() {
    let doc = compose();
    for (name, svc) in doc["services"].as_object().expect("services") {
        for entry in svc["ports"].as_array().into_iter().flatten() {
            let (host, _, _) = port_binding(entry);
            let loopback = host
                .as_deref()
                .and_then(|h| h.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback());
            assert!(loopback, "{name} publishes {entry} beyond 127.0.0.1");
        }
    }
}

#[test]
fn client_runs_the_servers_image_and_is_not_started_by_up() {
    let doc = compose();
    let client = service(&doc, CLIENT);
    for name in SERVERS {
        let server = service(&doc, name);
        assert_eq!(
            client["image"], server["image"],
            "{CLIENT} and {name}: image"
        );
        assert_eq!(
            client["build"], server["build"],
            "{CLIENT} and {name}: build"
        );
    }
    assert!(
        client["image"].is_string() || client["build"].is_object() || client["build"].is_string(),
        "{CLIENT} names an image or a build"
    );

    assert!(
        client["profiles"].as_array().is_some_and(|p| !p.is_empty()),
        "{CLIENT} has a profile, so `docker compose up` leaves it out"
    );
    let entrypoint = match &client["entrypoint"] {
        Value::String(s) => command_words(s),
        other => serde_json::from_value(other.clone()).expect("entrypoint"),
    };
    assert_eq!(entrypoint, ["chat"], "{CLIENT} runs the chat console");
    assert_eq!(client["stdin_open"], true, "{CLIENT}: stdin_open");
    assert_eq!(client["tty"], true, "{CLIENT}: tty");

    let args: Vec<String> = serde_json::from_value(client["command"].clone())
        .expect("the client's command is a list of arguments");
    let flag = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{CLIENT} passes {f}: {args:?}"))
    };
    let server = flag("--server");
    let authority = server
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{server} is an http:// URL"));
    let (host, port) = authority
        .trim_end_matches('/')
        .split_once(':')
        .expect("HOST:PORT");
    assert!(
        SERVERS.contains(&host),
        "{CLIENT} talks to one of {SERVERS:?}: {server}"
    );
    assert_eq!(
        port,
        CONTAINER_PORT.to_string(),
        "{server} uses the container port"
    );
    // The servers require tokens: the client passes one.
    let env = environment(client);
    assert!(
        env.contains_key("CHAT_TOKEN"),
        "{CLIENT} passes CHAT_TOKEN: the servers require tokens"
    );

    // The only CHAT_* variables the `chat` console reads.
    for key in env.keys() {
        assert!(
            !key.starts_with("CHAT_")
                || ["CHAT_SERVER", "CHAT_NAME", "CHAT_TOKEN"].contains(&key.as_str()),
            "{CLIENT} sets {key}, which `chat` does not read"
        );
    }
}

#[test]
fn compose_variables_are_real_server_configuration() {
    let doc = compose();
    let instructions = dockerfile();
    let image = image_env(final_stage(&instructions));
    for name in SERVERS {
        // What the container sees: the image's ENV, then the service's.
        let mut env = image.clone();
        env.extend(environment(service(&doc, name)));
        let out = server_command(&env)
            .arg("--print-config")
            .output()
            .expect("run chat-server");
        assert!(
            out.status.success(),
            "{name}: chat-server --print-config rejects its environment {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let config: toml::Table = printed.parse().expect("--print-config prints TOML");

        // Variables that name no key are ignored by the server, so each must
        // show up, with its value, in the effective configuration.
        for (key, value) in env.iter().filter(|(k, _)| k.starts_with("CHAT_")) {
            if key == "CHAT_CONFIG" {
                continue; // the `--config` flag's variable, not a key
            }
            let path = key["CHAT_".len()..].to_ascii_lowercase();
            let mut node = Some(&config);
            let mut leaf = None;
            let parts: Vec<&str> = path.split("__").collect();
            for (i, part) in parts.iter().enumerate() {
                let found = node.and_then(|t| t.get(*part));
                if i + 1 == parts.len() {
                    leaf = found;
                } else {
                    node = found.and_then(|v| v.as_table());
                }
            }
            let shown = match leaf {
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => panic!(
                    "{name} sets {key}, which is no configuration key \
                     (the server ignores it):\n{printed}"
                ),
            };
            // Secrets are printed redacted.
            if key == "CHAT_AUTH__SECRET" {
                assert_eq!(shown, "<redacted>", "{name}: {key} in\n{printed}");
                continue;
            }
            // Credentials inside URLs too (`chat:chat@postgres`).
            let expected = if key.ends_with("__URL") {
                chat_server::config::redact_url(value)
            } else {
                value.clone()
            };
            assert_eq!(shown, expected, "{name}: {key} in\n{printed}");
        }
        assert_eq!(config["backplane"].as_str(), Some("redis"), "{name}");
        assert_eq!(
            config["auth"]["mode"].as_str(),
            Some("jwt"),
            "{name} listens beyond loopback, so it requires tokens"
        );
        assert_eq!(
            config["listen"].as_str(),
            Some(format!("0.0.0.0:{CONTAINER_PORT}").as_str()),
            "{name} listens on every interface of its container"
        );
    }
}

#[test]
fn dockerfile_builds_both_binaries_and_runs_as_non_root() {
    let instructions = dockerfile();
    let build = instructions
        .iter()
        .find(|(k, a)| k == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a.as_str())
        .expect("a stage runs cargo build");
    for needed in ["--release", "--locked", "--bin chat-server", "--bin chat"] {
        assert!(
            build.contains(needed),
            "cargo build without {needed}: {build}"
        );
    }

    let stage = final_stage(&instructions);
    let copies: Vec<&str> = stage
        .iter()
        .filter(|(k, _)| k == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    for bin in ["chat-server", "chat"] {
        assert!(
            copies.iter().any(|a| a.contains("/usr/local/bin")
                && a.split_whitespace()
                    .any(|w| w.ends_with(&format!("/{bin}")))),
            "the runtime stage copies {bin} to /usr/local/bin: {copies:?}"
        );
    }

    let user = stage
        .iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, a)| a.as_str())
        .expect("the runtime stage sets a USER");
    let who = user.split(':').next().unwrap_or_default();
    assert!(
        !["root", "0", ""].contains(&who),
        "the runtime stage runs as root: USER {user}"
    );

    let exposed: Vec<&str> = stage
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace())
        .collect();
    assert!(
        exposed
            .iter()
            .any(|p| p.trim_end_matches("/tcp") == CONTAINER_PORT.to_string()),
        "EXPOSE {CONTAINER_PORT}: {exposed:?}"
    );
    assert_eq!(
        image_env(stage).get("CHAT_LISTEN").map(String::as_str),
        Some(format!("0.0.0.0:{CONTAINER_PORT}").as_str())
    );
    let entrypoint = stage
        .iter()
        .rfind(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, a)| command_words(a))
        .expect("an ENTRYPOINT");
    assert_eq!(entrypoint, ["chat-server"]);
    assert_eq!(healthcheck_command(stage), ["chat-server", "healthcheck"]);

    let (_, ignore) = repo_file(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    for dir in ["target", ".git", "data"] {
        assert!(ignored.contains(&dir), ".dockerignore leaves out {dir}");
    }
}

#[tokio::test]
async fn the_dockerfile_health_check_tells_ready_from_absent() {
    let instructions = dockerfile();
    let stage = final_stage(&instructions);
    let check = healthcheck_command(stage);
    assert_eq!(check[0], "chat-server", "the health check runs chat-server");
    // The check as the container runs it: the program is our binary, the
    // listen address comes from the configuration (CHAT_LISTEN).
    let probe = |listen: &str| {
        let env = BTreeMap::from([("CHAT_LISTEN".to_string(), listen.to_string())]);
        server_command(&env)
            .args(&check[1..])
            .output()
            .expect("run the health check")
    };

    // Nothing listening: unhealthy.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    assert!(
        !probe(&closed.to_string()).status.success(),
        "healthy with no server at {closed}"
    );

    // A running instance: healthy once it is ready.
    let server = ServerProcess::start(&[]).await;
    let started = Instant::now();
    loop {
        let out = probe(&server.addr);
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("\"ready\""));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never healthy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
