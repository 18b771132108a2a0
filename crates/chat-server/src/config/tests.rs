//! Loading, validating and printing the configuration.

// `figment::Jail` closures return figment's large error type by design.
#![allow(clippy::result_large_err)]

use super::*;
use std::path::Path;

#[test]
fn redacts_credentials_in_urls() {
    for (url, shown) in [
        ("sqlite://./data/chat.db", "sqlite://./data/chat.db"),
        ("memory", "memory"),
        (
            "postgres://chat:hunter2@db:5432/chat?sslmode=require",
            "postgres://chat:<redacted>@db:5432/chat?sslmode=require",
        ),
        (
            "redis://:pw@127.0.0.1:6379/0",
            "redis://:<redacted>@127.0.0.1:6379/0",
        ),
        (
            "nats://s3cr3t@127.0.0.1:4222",
            "nats://<redacted>@127.0.0.1:4222",
        ),
        (
            "postgres://db/chat?user=chat&password=hunter2#x",
            "postgres://db/chat?user=chat&password=<redacted>#x",
        ),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

/// A webhook URL's path and query may be its credential: only the scheme
/// and host are shown.
#[test]
fn redacts_the_path_of_webhook_urls() {
    use super::print::redact_path;
    for (url, shown) in [
        (
            "https://hooks.slack.com/services/T0/B0/secretpart",
            "https://hooks.slack.com/<redacted>",
        ),
        (
            "http://127.0.0.1:9000/h?token=abc",
            "http://127.0.0.1:9000/<redacted>",
        ),
        (
            "https://u:p@example.com/x",
            "https://example.com/<redacted>",
        ),
        ("https://example.com/", "https://example.com/"),
        ("https://example.com", "https://example.com"),
        ("", ""),
    ] {
        assert_eq!(redact_path(url), shown, "{url}");
    }
}

#[test]
fn print_config_shows_no_secret() {
    let mut config = Config::default();
    config.admin.token = Secret::new("admin-token-value");
    config.auth.secret = Secret::new("a-secret-of-at-least-thirty-two-bytes");
    config.store.url = "postgres://chat:hunter2@db/chat".into();
    config.redis.url = "redis://:redispw@127.0.0.1:6379".into();
    config.nats.url = "nats://natstoken@127.0.0.1:4222".into();
    let shown = config.to_toml();
    for secret in [
        "admin-token-value",
        "thirty-two",
        "hunter2",
        "redispw",
        "natstoken",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(!format!("{config:?}").contains("admin-token-value"));
    assert!(!format!("{config:?}").contains("thirty-two"));
}

#[test]
fn defaults_when_nothing_is_given() {
    figment::Jail::expect_with(|_jail| {
        let config = Config::load(None, &FlagOverrides::default()).expect("load");
        assert_eq!(config, Config::default());
        assert_eq!(config.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(config.notifications.interval, Duration::from_secs(30));
        assert_eq!(config.shutdown.drain_timeout, Duration::from_secs(10));
        Ok(())
    });
}

#[test]
fn file_then_env_then_flags() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "chat.toml",
            r#"
            listen = "127.0.0.1:6001"
            [limits]
            max_text_bytes = 100
            max_rooms_per_connection = 7
            [notifications]
            interval = "5s"
            [log]
            format = "json"
            "#,
        )?;
        let path = Path::new("chat.toml");
        // File alone.
        let c = Config::load(Some(path), &FlagOverrides::default()).expect("load");
        assert_eq!(c.listen, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(c.limits.max_text_bytes, 100);
        assert_eq!(c.notifications.interval, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);

        // Environment beats the file, nested keys with `__`.
        jail.set_env("CHAT_LISTEN", "127.0.0.1:6002");
        jail.set_env("CHAT_LIMITS__MAX_ROOMS_PER_CONNECTION", "9");
        // Variables for other programs share the prefix; they are ignored.
        jail.set_env("CHAT_TOKEN", "not-a-server-key");
        jail.set_env("CHAT_SERVER", "http://elsewhere:1");
        jail.set_env("CHAT_TEST_REQUIRE_SERVICES", "1");
        let c = Config::load(Some(path), &FlagOverrides::default()).expect("load");
        assert_eq!(c.listen, "127.0.0.1:6002".parse().unwrap());
        assert_eq!(c.limits.max_rooms_per_connection, 9);
        assert_eq!(c.limits.max_text_bytes, 100, "file value kept");

        // Flags beat the environment.
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:6003".parse().unwrap()),
            log: LogOverrides {
                level: Some("debug".into()),
                format: Some(LogFormat::Text),
            },
        };
        let c = Config::load(Some(path), &flags).expect("load");
        assert_eq!(c.listen, "127.0.0.1:6003".parse().unwrap());
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.limits.max_rooms_per_connection, 9, "env value kept");
        Ok(())
    });
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("typo.toml", "[limits]\nmax_txt_bytes = 5\n")?;
        let err = Config::load(Some(Path::new("typo.toml")), &FlagOverrides::default())
            .expect_err("unknown key");
        assert!(err.to_string().contains("max_txt_bytes"), "{err}");

        jail.create_file("zero.toml", "[limits]\nmax_text_bytes = 0\n")?;
        let err = Config::load(Some(Path::new("zero.toml")), &FlagOverrides::default())
            .expect_err("zero limit");
        assert!(err.to_string().contains("max_text_bytes"), "{err}");

        let err = Config::load(Some(Path::new("absent.toml")), &FlagOverrides::default())
            .expect_err("missing file");
        assert!(matches!(err, ConfigError::MissingFile(_)));

        // A typo inside a known section is still an error.
        jail.set_env("CHAT_LIMITS__MAX_TXT_BYTES", "5");
        let err = Config::load(None, &FlagOverrides::default()).expect_err("typo in env");
        assert!(
            err.to_string().to_lowercase().contains("max_txt_bytes"),
            "{err}"
        );
        jail.clear_env();

        jail.set_env("CHAT_BACKPLANE", "carrier-pigeon");
        let err = Config::load(None, &FlagOverrides::default()).expect_err("bad backplane");
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");
        Ok(())
    });
}

#[test]
fn printed_config_loads_back_to_the_same() {
    figment::Jail::expect_with(|jail| {
        let mut config = Config::default();
        config.limits.max_text_bytes = 1234;
        config.notifications.interval = Duration::from_millis(1500);
        jail.create_file("printed.toml", &config.to_toml())?;
        let back =
            Config::load(Some(Path::new("printed.toml")), &FlagOverrides::default()).expect("load");
        assert_eq!(back, config);
        Ok(())
    });
}

/// Issue 15, report 11: a `server_id` is a token of NATS subjects and
/// Redis channel names, and the mark of an instance's own echoes: spaces,
/// wildcards, separators and overlong ids are refused at start.
#[test]
fn server_ids_that_break_subjects_are_refused() {
    for bad in [
        "a b",
        "node*",
        "node>",
        "eu.1",
        "tab\there",
        &"x".repeat(65),
    ] {
        let config = Config {
            server_id: bad.to_string(),
            ..Config::default()
        };
        let err = config.validate().expect_err(bad);
        assert!(err.to_string().contains("server_id"), "{bad:?}: {err}");
    }
    for good in ["", "chat-1", "eu_west_2", "A9"] {
        let config = Config {
            server_id: good.to_string(),
            ..Config::default()
        };
        assert!(config.validate().is_ok(), "{good:?}");
    }
}
