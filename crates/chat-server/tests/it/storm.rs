//! Join storms (issue 18): a resume that is up to date reads nothing from
//! the store but the joiners' batched read state, presence comes coalesced
//! per room, and member lists come in pages. (Joiners sharing a slow
//! store's reads are `hub::tests::joiners_resuming_a_room_at_once…`;
//! paced reconnects `lifecycle::a_shutdown_spreads_its_clients_reconnects…`
//! and the session admission rate `limits`' and `websocket`'s tests.)

use crate::common::*;
use chat_client::Event;
use chat_client::proto::server_frame::Frame;
use chat_client::proto::{JoinRoomRequest, JoinRoomResult, client_frame::Request, reply};
use std::collections::BTreeSet;
use std::time::Duration;

/// The server's count of store statements joins issued for `query`.
async fn join_queries(server: &TestServer, query: &str) -> f64 {
    let metrics = scrape_metrics(server.addr()).await;
    metrics
        .get(&format!(
            "chat_join_store_queries_total{{query=\"{query}\"}}"
        ))
        .copied()
        .unwrap_or_else(|| panic!("no {query} count in {metrics:?}"))
}

/// Joins `room` on a raw session resuming from `since`; the reply.
async fn resume(url: &str, name: &str, room: &str, since: u64) -> (RawSession, JoinRoomResult) {
    let mut raw = RawSession::open(url, name).await.unwrap();
    let join = JoinRoomRequest {
        room: room.into(),
        since_sequence: Some(since),
    };
    raw.send(1, Request::JoinRoom(join)).await;
    loop {
        match raw.next().await {
            Some(Frame::Reply(r)) => match r.result {
                Some(reply::Result::JoinRoom(j)) => return (raw, j),
                other => panic!("join refused: {other:?}"),
            },
            Some(_) => {}
            None => panic!("the session ended before the join's reply"),
        }
    }
}

#[tokio::test]
async fn a_resume_that_is_up_to_date_reads_neither_the_latest_sequence_nor_a_backlog() {
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (alice, _alice_ev) = connect(&url, "alice").await;
    alice.join("lobby").await.unwrap();
    for i in 0..3 {
        alice.send("lobby", &format!("m{i}")).await.unwrap();
    }
    let (latest, backlog) = (
        join_queries(&server, "latest_sequence").await,
        join_queries(&server, "backlog").await,
    );
    // The room is served here (alice is in it): it knows its latest.
    let (_bob, joined) = resume(&url, "bob", "lobby", 3).await;
    assert_eq!(joined.latest_sequence, 3);
    assert_eq!(
        (
            join_queries(&server, "latest_sequence").await - latest,
            join_queries(&server, "backlog").await - backlog
        ),
        (0.0, 0.0),
        "an up-to-date resume asked the store for nothing but its read state"
    );
    // A resume from further back reads its backlog: the count moves.
    let (mut carol, joined) = resume(&url, "carol", "lobby", 1).await;
    assert_eq!(
        (joined.latest_sequence, joined.backlog_after_sequence),
        (3, 1)
    );
    let mut backlog_seen = Vec::new();
    while backlog_seen.len() < 2 {
        match carol.next().await {
            Some(Frame::Message(m)) => backlog_seen.push(m.sequence),
            Some(_) => {}
            None => panic!("carol's session ended"),
        }
    }
    assert_eq!(backlog_seen, [2, 3]);
    assert_eq!(join_queries(&server, "backlog").await - backlog, 1.0);
    assert_eq!(join_queries(&server, "latest_sequence").await - latest, 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_joining_at_once_reaches_each_member_in_a_few_coalesced_events() {
    const CROWD: usize = 150;
    let server = TestServer::start(config()).await;
    let url = server.url();
    let (watcher, mut watcher_ev) = connect(&url, "watcher").await;
    watcher.join("stage").await.unwrap();
    let mut crowd = Vec::new();
    for i in 0..CROWD {
        crowd.push(connect(&url, &format!("fan-{i:03}")).await);
    }
    let joins = crowd.iter().map(|(c, _)| c.join("stage"));
    for joined in futures::future::join_all(joins).await {
        joined.unwrap();
    }
    // Every fan reaches the watcher, in far fewer events than fans.
    let (mut heard, mut events) = (BTreeSet::new(), 0);
    while heard.len() < CROWD {
        let event = expect_event(&mut watcher_ev, "the crowd's arrival", presence_event).await;
        let Event::MembersChanged(m) = event else {
            panic!("{event:?}")
        };
        events += 1;
        assert!(m.left.is_empty(), "{m:?}");
        heard.extend(m.joined.iter().map(|u| u.display_name.clone()));
    }
    heard.remove("watcher");
    assert_eq!(heard.len(), CROWD);
    assert!(events <= 20, "{CROWD} joins came in {events} events");
    let metrics = scrape_metrics(server.addr()).await;
    let frames = metrics["chat_presence_frames_total"];
    assert!(
        frames < (CROWD * CROWD / 4) as f64,
        "{frames} presence frames for {CROWD} joins"
    );

    // A late joiner's reply holds the first page and the count; the pages
    // together hold everyone once.
    let (late, _late_ev) = connect(&url, "late").await;
    let reply = late.join("stage").await.unwrap();
    let total = CROWD + 2;
    assert_eq!(
        (reply.members.len(), reply.member_count as usize),
        (20, total)
    );
    assert!(!reply.members_next_page.is_empty());
    let page = late
        .list_members_page("stage", &reply.members_next_page, 30)
        .await
        .unwrap();
    assert_eq!(page.members.len(), 30);
    assert!(page.members[0].display_name > reply.members[19].display_name);
    let all = late.list_members("stage").await.unwrap();
    let names: BTreeSet<String> = all.iter().map(|m| m.display_name.clone()).collect();
    assert_eq!((all.len(), names.len()), (total, total), "each member once");
    let bad = late.list_members_page("stage", "not a cursor", 0).await;
    assert_eq!(refusal(bad), chat_client::proto::ErrorCode::InvalidArgument);

    // Half the crowd leaves at once: the watcher's list converges.
    for (client, _) in crowd.iter().take(CROWD / 2) {
        client.close();
    }
    let mut gone = BTreeSet::new();
    while gone.len() < CROWD / 2 {
        let event = expect_event(&mut watcher_ev, "the crowd's leaving", presence_event).await;
        if let Event::MembersChanged(m) = event {
            gone.extend(m.left.iter().map(|u| u.display_name.clone()));
        }
    }
    let expected: BTreeSet<String> = (0..CROWD / 2).map(|i| format!("fan-{i:03}")).collect();
    assert_eq!(gone, expected);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        watcher.list_members("stage").await.unwrap().len(),
        total - CROWD / 2
    );
    server.stop().await;
}
