//! The `chat` binary in line mode against a real server: the stable output
//! format, commands, and a clean exit on `/quit`.

use chat_client::{Client, ClientConfig, Event};
use chat_server::Config;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn test_config() -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.store.url = "memory".into();
    c
}

/// Reads stdout lines until one starts with `prefix`; returns it.
async fn line_starting(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with(prefix) {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no line starting with {prefix:?}; saw {seen:#?}"),
    }
}

async fn next_event(
    events: &mut chat_client::Events,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.next().await.expect("events open");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event within the wait")
}

#[tokio::test]
async fn line_mode_chats_with_a_library_client() {
    let mut config = test_config();
    config.notifications.interval = Duration::from_millis(300);
    config.notifications.text = "hello everyone".into();
    let shutdown = CancellationToken::new();
    let server = chat_server::start(config, shutdown.clone()).await.unwrap();
    let url = format!("http://{}", server.addr());

    let mut alice_config = ClientConfig::new(url.clone(), "alice");
    alice_config.rooms = vec!["lobby".into()];
    let (alice, mut alice_ev) = Client::connect(alice_config);
    next_event(&mut alice_ev, |e| matches!(e, Event::Rejoined { .. })).await;

    let mut chat = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--server", &url, "--name", "carol", "--room", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut out = BufReader::new(chat.stdout.take().unwrap()).lines();

    let connected = line_starting(&mut out, "connected ").await;
    assert!(connected.ends_with("as=carol"), "{connected}");
    assert_eq!(
        line_starting(&mut out, "joined ").await,
        "joined lobby members=2 latest=0 read=0 unread=0"
    );
    next_event(&mut alice_ev, |e| matches!(e, Event::MembersChanged(m) if m.joined.iter().any(|u| u.display_name == "carol"))).await;

    // carol types a message; alice receives it.
    stdin.write_all(b"hello from carol\n").await.unwrap();
    assert_eq!(line_starting(&mut out, "sent ").await, "sent lobby 1");
    match next_event(&mut alice_ev, |e| matches!(e, Event::Message(_))).await {
        Event::Message(m) => assert_eq!(m.text, "hello from carol"),
        _ => unreachable!(),
    }
    // alice answers (with a newline, which line mode escapes); carol prints it.
    alice.send("lobby", "hi carol\nsecond line").await.unwrap();
    assert_eq!(
        line_starting(&mut out, "message lobby 2 ").await,
        "message lobby 2 alice: hi carol\\nsecond line"
    );
    assert_eq!(
        line_starting(&mut out, "notification ").await,
        "notification hello everyone"
    );
    stdin.write_all(b"/history\n").await.unwrap();
    assert_eq!(
        line_starting(&mut out, "history ").await,
        "history lobby 1 carol: hello from carol"
    );
    assert_eq!(
        line_starting(&mut out, "history ").await,
        "history lobby 2 alice: hi carol\\nsecond line"
    );
    assert_eq!(
        line_starting(&mut out, "history-end ").await,
        "history-end lobby shown=2 latest=2"
    );

    stdin
        .write_all(b"/who\n/join dev\n/rooms\n/switch lobby\n/join bad!room\n/nonsense\n")
        .await
        .unwrap();
    assert_eq!(
        line_starting(&mut out, "members ").await,
        "members lobby: alice, carol"
    );
    assert_eq!(
        line_starting(&mut out, "joined ").await,
        "joined dev members=1 latest=0 read=0 unread=0"
    );
    assert_eq!(
        line_starting(&mut out, "rooms: ").await,
        "rooms: dev, lobby"
    );
    assert_eq!(line_starting(&mut out, "switched ").await, "switched lobby");
    let err = line_starting(&mut out, "error ").await;
    assert!(
        err.starts_with("error INVALID_ARGUMENT: room name"),
        "{err}"
    );
    let err = line_starting(&mut out, "error ").await;
    assert!(
        err.starts_with("error INVALID_COMMAND: unknown command /nonsense"),
        "{err}"
    );

    // Presence lines.
    let (bob, _bob_ev) = Client::connect(ClientConfig::new(url.clone(), "bob"));
    bob.wait_connected(WAIT).await.unwrap();
    bob.join("lobby").await.unwrap();
    assert_eq!(
        // (carol's own join of dev is announced too, in its own time.)
        line_starting(&mut out, "member-joined lobby ").await,
        "member-joined lobby bob"
    );
    bob.close();
    assert_eq!(
        line_starting(&mut out, "member-left lobby ").await,
        "member-left lobby bob"
    );

    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(WAIT, chat.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    next_event(
        &mut alice_ev,
        |e| matches!(e, Event::MembersChanged(m) if m.left.iter().any(|u| u.display_name == "carol")),
    )
    .await;

    shutdown.cancel();
    server.wait().await.unwrap();
}

/// Issue 16, point 4: `/edit` and `/delete` (the last own message by
/// default, or `#SEQ`), the `edited`/`deleted` event lines, the marks in
/// `/history`, and the refusals.
#[tokio::test]
async fn line_mode_edits_and_deletes_messages() {
    let mut config = test_config();
    config.notifications.enabled = false;
    let shutdown = CancellationToken::new();
    let server = chat_server::start(config, shutdown.clone()).await.unwrap();
    let url = format!("http://{}", server.addr());
    let mut alice_config = ClientConfig::new(url.clone(), "alice");
    alice_config.rooms = vec!["lobby".into()];
    let (alice, mut alice_ev) = Client::connect(alice_config);
    next_event(&mut alice_ev, |e| matches!(e, Event::Rejoined { .. })).await;
    alice.send("lobby", "from alice").await.unwrap();

    let mut chat = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--server", &url, "--name", "carol", "--room", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut out = BufReader::new(chat.stdout.take().unwrap()).lines();
    line_starting(&mut out, "history-end ").await;

    stdin
        .write_all(b"/edit nothing of mine yet\n")
        .await
        .unwrap();
    let err = line_starting(&mut out, "error ").await;
    assert!(
        err.starts_with("error INVALID_COMMAND: no message of yours"),
        "{err}"
    );
    stdin.write_all(b"/edit #1 not mine\n").await.unwrap();
    let err = line_starting(&mut out, "error ").await;
    assert!(err.starts_with("error NOT_THE_AUTHOR:"), "{err}");

    stdin.write_all(b"frist\nsecond\n").await.unwrap();
    assert_eq!(line_starting(&mut out, "sent ").await, "sent lobby 2");
    assert_eq!(line_starting(&mut out, "sent ").await, "sent lobby 3");
    line_starting(&mut out, "message lobby 3 ").await;
    stdin.write_all(b"/edit #2 first\n").await.unwrap();
    assert_eq!(
        line_starting(&mut out, "edit-sent ").await,
        "edit-sent lobby 4"
    );
    assert_eq!(
        line_starting(&mut out, "edited ").await,
        "edited lobby 4 #2 carol: first"
    );
    // Without a number: carol's last message, 3.
    stdin.write_all(b"/delete\n").await.unwrap();
    assert_eq!(
        line_starting(&mut out, "delete-sent ").await,
        "delete-sent lobby 5"
    );
    assert_eq!(
        line_starting(&mut out, "deleted ").await,
        "deleted lobby 5 #3 carol"
    );
    // Now her last live message is 2.
    stdin.write_all(b"/edit first!\n").await.unwrap();
    assert_eq!(
        line_starting(&mut out, "edit-sent ").await,
        "edit-sent lobby 6"
    );
    stdin.write_all(b"/delete #3\n").await.unwrap();
    let err = line_starting(&mut out, "error ").await;
    assert!(err.starts_with("error MESSAGE_NOT_FOUND:"), "{err}");

    // alice saw it all, in order, with the changes among the messages.
    let mut seen = Vec::new();
    while seen.len() < 6 {
        if let Event::Message(m) =
            next_event(&mut alice_ev, |e| matches!(e, Event::Message(_))).await
        {
            seen.push((m.sequence, m.kind, m.target_sequence, m.text));
        }
    }
    assert_eq!(
        seen,
        [
            (1, 0, 0, "from alice".to_string()),
            (2, 0, 0, "frist".into()),
            (3, 0, 0, "second".into()),
            (4, 1, 2, "first".into()),
            (5, 2, 3, "".into()),
            (6, 1, 2, "first!".into()),
        ]
    );

    stdin.write_all(b"/history\n").await.unwrap();
    for expected in [
        "history lobby 1 alice: from alice",
        "history lobby 2 carol (edited): first!",
        "history lobby 3 carol (deleted): ",
    ] {
        assert_eq!(line_starting(&mut out, "history ").await, expected);
    }
    assert_eq!(
        line_starting(&mut out, "history-end ").await,
        "history-end lobby shown=6 latest=6"
    );
    // Read marks: carol's own, and the announcement of it.
    stdin.write_all(b"/read\n").await.unwrap();
    assert_eq!(
        line_starting(&mut out, "read-marked ").await,
        "read-marked lobby 6 unread=0"
    );
    assert_eq!(line_starting(&mut out, "read ").await, "read lobby 6 carol");
    stdin.write_all(b"/quit\n").await.unwrap();
    let status = tokio::time::timeout(WAIT, chat.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    shutdown.cancel();
    server.wait().await.unwrap();
}

#[tokio::test]
async fn line_mode_reports_shutdown_and_reconnects() {
    let mut config = test_config();
    config.notifications.enabled = false;
    let shutdown = CancellationToken::new();
    let server = chat_server::start(config.clone(), shutdown.clone())
        .await
        .unwrap();
    let addr = server.addr();
    let url = format!("http://{addr}");

    let mut chat = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args([
            "--server", &url, "--name", "dave", "--room", "lobby", "--room", "dev",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = chat.stdin.take().unwrap();
    let mut out = BufReader::new(chat.stdout.take().unwrap()).lines();
    line_starting(&mut out, "joined dev").await;
    line_starting(&mut out, "joined lobby").await;

    shutdown.cancel();
    server.wait().await.unwrap();
    let notice = line_starting(&mut out, "disconnected ").await;
    assert!(
        notice.starts_with("disconnected SHUTTING_DOWN: "),
        "{notice}"
    );
    line_starting(&mut out, "reconnecting attempt=1 ").await;

    config.listen = addr;
    let shutdown = CancellationToken::new();
    let server = chat_server::start(config, shutdown.clone()).await.unwrap();
    line_starting(&mut out, "connected ").await;
    line_starting(&mut out, "joined dev").await;
    line_starting(&mut out, "joined lobby").await;

    // End of input quits, like /quit.
    stdin.shutdown().await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(WAIT, chat.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success());
    shutdown.cancel();
    server.wait().await.unwrap();
}

#[tokio::test]
async fn a_refused_fixed_token_stops_the_client_with_a_failure() {
    let mut config = test_config();
    config.auth.mode = chat_server::config::AuthMode::Jwt;
    config.auth.secret = "test-secret-test-secret-test-secret!".into();
    let shutdown = CancellationToken::new();
    let server = chat_server::start(config, shutdown.clone()).await.unwrap();
    let url = format!("http://{}", server.addr());

    let chat = Command::new(env!("CARGO_BIN_EXE_chat"))
        .args(["--server", &url, "--token", "not-a-jwt", "--room", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // It does not retry: it exits, unsuccessfully, on its own.
    let out = tokio::time::timeout(WAIT, chat.wait_with_output())
        .await
        .expect("exits without retrying")
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopped: session refused: "), "{stdout}");
    assert!(!stdout.contains("reconnecting"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("session refused"));
    shutdown.cancel();
    server.wait().await.unwrap();
}
