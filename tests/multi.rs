//! Polls and event streams on several topics at once, end to end (docs/long-polling.md, "Several
//! topics in one subscription"): one hold waits on every topic and is answered by the first
//! publish on any; the cursor string resumes every topic without loss or repeat; a client that
//! hangs up leaves no hold on any topic; publishes on two of its topics in one turn answer a poll
//! once; 1 to 64 distinct topics; a stream names each message's topic in `event:` and resumes
//! every topic from `Last-Event-ID`.
//!
//! The tests run the debug build, whose server walks all of its bookkeeping after every turn and
//! panics on a slip: a test then sees a dead connection. No test asserts that anything is fast.

mod common;

use serde_json::Value;

use common::polls::{assert_nothing_received, get_request, publish, publish_request, wait_held, PAGE};
use common::{assert_accounting, num, Client, Response, Server};

/// An answer on several topics, parsed and checked against the rules every such answer follows.
#[derive(Debug)]
struct Answer {
    status: String,
    epoch: String,
    cursor: String,
    missed: u64,
    /// `(topic, seq, data)` in the order sent.
    messages: Vec<(String, u64, String)>,
}

impl Answer {
    /// `(topic, seq)` of each message.
    fn seqs(&self) -> Vec<(&str, u64)> {
        self.messages.iter().map(|(topic, seq, _)| (topic.as_str(), *seq)).collect()
    }
}

/// Every answer is 200, JSON, `Cache-Control: no-store`, with exactly the fields `status`,
/// `epoch`, `cursor` (both strings), `missed` and `messages`; `ok` carries 1 to 100 messages
/// (or none when all were lost), `timeout` and `reset` none.
fn answer_of(response: &Response) -> Answer {
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("Content-Type"), Some("application/json"), "{response:?}");
    assert_eq!(response.header("Cache-Control"), Some("no-store"), "{response:?}");
    let json: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"));
    let fields: Vec<&str> = json.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 5, "status, epoch, cursor, missed, messages: {json}");
    let text =
        |value: &Value, name: &str| value[name].as_str().unwrap_or_else(|| panic!("no {name} in {json}")).to_string();
    let messages: Vec<(String, u64, String)> = json["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {json}"))
        .iter()
        .map(|m| (text(m, "topic"), m["seq"].as_u64().expect("a seq"), text(m, "data")))
        .collect();
    let answer = Answer {
        status: text(&json, "status"),
        epoch: text(&json, "epoch"),
        cursor: text(&json, "cursor"),
        missed: json["missed"].as_u64().unwrap_or_else(|| panic!("no missed in {json}")),
        messages,
    };
    match answer.status.as_str() {
        "ok" => assert!(answer.messages.len() <= PAGE && (answer.missed > 0 || !answer.messages.is_empty()), "{json}"),
        "timeout" | "reset" => assert!(answer.messages.is_empty() && answer.missed == 0, "{json}"),
        other => panic!("unknown status {other:?} in {json}"),
    }
    answer
}

/// Sends a poll and reads its answer; the connection stays open.
fn poll(client: &mut Client, target: &str, extra_headers: &str) -> Answer {
    client.send(&get_request(target, extra_headers));
    let response = client.read_response();
    response.assert_keeps_alive();
    answer_of(&response)
}

/// A topic's epoch, as a poll on it alone says (a foreign epoch is answered at once: `reset`).
fn epoch_of(server: &Server, topic: &str) -> String {
    let response = server.connect().get(&format!("/poll/{topic}?epoch=-"));
    let json: Value = serde_json::from_slice(&response.body).expect("JSON");
    json["epoch"].as_str().expect("an epoch").to_string()
}

#[test]
fn a_publish_on_either_topic_answers_a_poll_on_both() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut poller = server.connect();
    poller.send(&get_request("/poll?topic=A&topic=B", ""));
    let stats = wait_held(&server, 1);
    assert_eq!(num(&stats, "connections.held"), 1, "one connection, one hold: {stats}");
    assert_nothing_received(&poller, "a poll on two empty topics is held");

    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "B", "hello"), (1, 1), "the publish on B woke the poll");
    let answer = answer_of(&poller.read_response());
    assert_eq!((answer.status.as_str(), answer.cursor.as_str(), answer.missed), ("ok", "A:0,B:1", 0), "{answer:?}");
    assert_eq!(answer.messages, [("B".to_string(), 1, "hello".to_string())]);
    let stats = server.stats();
    assert_eq!((num(&stats, "polls.held"), num(&stats, "polls.answered")), (0, 1), "{stats}");
    let epochs = format!("A:{},B:{}", epoch_of(&server, "A"), epoch_of(&server, "B"));
    assert_eq!(answer.epoch, epochs, "each topic's own epoch, in the order asked");

    // Held again with both strings sent back (percent-encoded, as encodeURIComponent does);
    // now A answers.
    let encoded = |s: &str| s.replace(':', "%3A").replace(',', "%2C");
    let target = format!("/poll?topic=A&topic=B&cursor={}&epoch={}", encoded(&answer.cursor), encoded(&answer.epoch));
    poller.send(&get_request(&target, ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "A", "again"), (1, 1));
    let next = answer_of(&poller.read_response());
    assert_eq!((next.cursor.as_str(), next.seqs()), ("A:1,B:1", vec![("A", 1)]), "{next:?}");
    assert_eq!(next.epoch, epochs);
    assert_accounting(&server.stats());
}

#[test]
fn resuming_with_the_cursor_string_loses_nothing_and_repeats_nothing() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    for seq in 1..=150 {
        publish(&mut publisher, "A", &format!("a{seq}"));
    }
    for seq in 1..=10 {
        publish(&mut publisher, "B", &format!("b{seq}"));
    }
    let mut client = server.connect();

    // 160 messages from the start: at most 100 per answer, topic by topic, then by seq.
    let first = poll(&mut client, "/poll?topic=A&topic=B&cursor=A:0,B:0", "");
    assert_eq!(first.seqs(), (1..=100).map(|seq| ("A", seq)).collect::<Vec<_>>());
    assert_eq!(first.cursor, "A:100,B:0");
    let second = poll(&mut client, &format!("/poll?topic=A&topic=B&cursor={}", first.cursor), "");
    let expected: Vec<(&str, u64)> = (101..=150).map(|seq| ("A", seq)).chain((1..=10).map(|seq| ("B", seq))).collect();
    assert_eq!(second.seqs(), expected);
    assert_eq!(second.cursor, "A:150,B:10");
    for (topic, seq, data) in first.messages.iter().chain(&second.messages) {
        assert_eq!(data, &format!("{}{seq}", topic.to_lowercase()), "each message's own data");
    }

    // Last-Event-ID carries a cursor string too (the query's cursor would win over it).
    assert_eq!(publish(&mut publisher, "B", "b11"), (11, 0));
    let by_header = poll(&mut client, "/poll?topic=A&topic=B", "Last-Event-ID: A:150,B:10\r\n");
    assert_eq!((by_header.seqs(), by_header.cursor.as_str()), (vec![("B", 11)], "A:150,B:11"));

    // A topic the cursor string leaves out starts at the next message, as a poll without one;
    // with from=oldest, at the oldest retained.
    client.send(&get_request("/poll?topic=A&topic=B&cursor=B:11", ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut publisher, "A", "a151"), (151, 1));
    let next = answer_of(&client.read_response());
    assert_eq!((next.seqs(), next.cursor.as_str()), (vec![("A", 151)], "A:151,B:11"));
    let oldest = poll(&mut client, "/poll?topic=A&topic=B&cursor=B:11&from=oldest", "");
    assert_eq!(oldest.seqs().first(), Some(&("A", 1)));
    assert_accounting(&server.stats());
}

#[test]
fn a_reset_on_one_topic_is_answered_alone_and_the_others_follow() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut publisher = server.connect();
    publish(&mut publisher, "A", "a1");
    publish(&mut publisher, "A", "a2");
    publish(&mut publisher, "B", "b1");
    let mut client = server.connect();
    let reset = poll(&mut client, "/poll?topic=A&topic=B&cursor=A:0,B:0&epoch=A:not-this-one", "");
    // A's cursor moves to where A is; B's stays, so its message comes next, not lost.
    assert_eq!((reset.status.as_str(), reset.cursor.as_str()), ("reset", "A:2,B:0"), "{reset:?}");
    assert_eq!(reset.epoch, format!("A:{},B:{}", epoch_of(&server, "A"), epoch_of(&server, "B")));
    let target = format!("/poll?topic=A&topic=B&cursor={}&epoch={}", reset.cursor, reset.epoch);
    let next = poll(&mut client, &target, "");
    assert_eq!((next.status.as_str(), next.seqs(), next.cursor.as_str()), ("ok", vec![("B", 1)], "A:2,B:1"));
    // A cursor ahead of a topic's log resets it too, as for one topic.
    let ahead = poll(&mut client, "/poll?topic=A&topic=B&cursor=A:2,B:9", "");
    assert_eq!((ahead.status.as_str(), ahead.cursor.as_str()), ("reset", "A:2,B:1"));
}

#[test]
fn a_client_that_hangs_up_while_held_on_three_topics_leaves_no_hold() {
    // Hold time 60 s: only noticing the hang-up can free the hold within the wait below.
    let server = Server::start(&["--poll-timeout", "60s"]);
    let mut client = server.connect();
    client.send(&get_request("/poll?topic=x&topic=y&topic=z", ""));
    wait_held(&server, 1);
    drop(client);
    let stats = server.wait_for_stats("the hold released", |s| num(s, "polls.held") == 0);
    assert_eq!(num(&stats, "connections.held"), 0, "{stats}");
    let mut publisher = server.connect();
    for topic in ["x", "y", "z"] {
        assert_eq!(publish(&mut publisher, topic, "m"), (1, 0), "nobody is listed on {topic}");
    }
    assert_accounting(&server.stats());
}

#[test]
fn publishes_on_two_topics_in_one_turn_answer_a_poll_once() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    // One poller returns to idle after its answer; the other has its next poll pipelined behind,
    // which is held again, under the same key, before the key's second turn in the flush phase.
    let mut idle_after = server.connect();
    idle_after.send(&get_request("/poll?topic=A&topic=B", ""));
    let mut held_again = server.connect();
    let mut pipelined = get_request("/poll?topic=A&topic=B", "");
    pipelined.extend(get_request("/poll?topic=A&topic=B&cursor=A:1,B:1", ""));
    held_again.send(&pipelined);
    wait_held(&server, 2);

    // Both publishes in one write: the server reads them in one event and answers both before
    // the flush phase, so each poll's key is queued twice, once by A and once by B.
    let mut publisher = server.connect();
    let mut both = publish_request("A", b"a1");
    both.extend(publish_request("B", b"b1"));
    publisher.send(&both);
    for expected in [r#"{"topic":"A","seq":1,"woken":2}"#, r#"{"topic":"B","seq":1,"woken":2}"#] {
        assert_eq!(publisher.read_response().text().trim_end(), expected);
    }
    for poller in [&mut idle_after, &mut held_again] {
        let answer = answer_of(&poller.read_response());
        assert_eq!((answer.seqs(), answer.cursor.as_str()), (vec![("A", 1), ("B", 1)], "A:1,B:1"), "{answer:?}");
    }
    let stats = wait_held(&server, 1);
    assert_eq!(num(&stats, "polls.answered"), 2, "one answer each: {stats}");
    assert_nothing_received(&idle_after, "the second turn in the flush phase found nothing due");
    assert_nothing_received(&held_again, "the pipelined poll is held, not answered");

    assert_eq!(publish(&mut server.connect(), "A", "a2"), (2, 1));
    let answer = answer_of(&held_again.read_response());
    assert_eq!((answer.seqs(), answer.cursor.as_str()), (vec![("A", 2)], "A:2,B:1"));
    let stats = server.stats();
    assert_eq!((num(&stats, "polls.held"), num(&stats, "polls.answered")), (0, 3), "{stats}");
    assert_accounting(&stats);
}

#[test]
fn one_to_sixty_four_distinct_topics_and_nothing_else() {
    let server = Server::start(&["--poll-timeout", "60s"]);
    let names: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let query = |names: &[String]| names.iter().map(|name| format!("topic={name}")).collect::<Vec<_>>().join("&");
    let mut client = server.connect();
    client.send(&get_request(&format!("/poll?{}", query(&names[..64])), ""));
    wait_held(&server, 1);
    assert_eq!(publish(&mut server.connect(), "t63", "last"), (1, 1));
    let answer = answer_of(&client.read_response());
    assert_eq!(answer.seqs(), [("t63", 1)]);
    let cursors: Vec<String> = (0..64).map(|i| format!("t{i}:{}", u64::from(i == 63))).collect();
    assert_eq!(answer.cursor, cursors.join(","));

    let bad = [
        format!("/poll?{}", query(&names)),
        "/poll".to_string(),
        "/poll?cursor=A:1".to_string(),
        "/poll?topic=A&topic=B&topic=A".to_string(),
        "/poll?topic=A&topic=".to_string(),
        "/poll?topic=a%2Fb".to_string(),
        "/poll?topic=A&cursor=7".to_string(),
        "/poll?topic=A&cursor=A:1,B:2".to_string(),
        "/poll?topic=A&cursor=A:1,A:2".to_string(),
        "/poll?topic=A&epoch=A".to_string(),
        "/poll?topic=A&from=newest".to_string(),
        "/events?topic=A&topic=B&topic=A".to_string(),
        "/events?topic=news&topic=reset".to_string(),
    ];
    for target in &bad {
        let response = server.connect().get(target);
        let text = response.text();
        assert_eq!(response.status, 400, "{target}: {response:?}");
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{target}: one line, got {text:?}");
    }
    let mut client = server.connect();
    client.send(&get_request("/poll?topic=A", "Last-Event-ID: 7\r\n"));
    let by_header = client.read_response();
    assert_eq!(by_header.status, 400, "{by_header:?}");
    let stats = server.stats();
    assert_eq!(num(&stats, "topics.count"), 64, "no refused poll created a topic: {stats}");
    assert_accounting(&stats);
}

// ---- event streams --------------------------------------------------------------------------

fn open_stream(server: &Server, target: &str, extra: &str) -> Client {
    let mut client = server.connect();
    client.send(&get_request(target, extra));
    let head = client.read_stream_head();
    assert_eq!((head.status, head.header("Content-Type")), (200, Some("text/event-stream")), "{head:?}");
    assert_eq!(client.read_stream_until("\n\n"), "retry: 2000\n\n");
    client
}

#[test]
fn a_stream_of_two_topics_names_each_message_and_resumes_from_last_event_id() {
    let server = Server::start(&[]);
    let mut stream = open_stream(&server, "/events?topic=A&topic=B", "");
    server.wait_for_stats("the stream is listed", |s| num(s, "streams.open") == 1);
    let mut publisher = server.connect();
    assert_eq!(publish(&mut publisher, "A", "first"), (1, 1));
    assert_eq!(stream.read_stream_until("first\n\n"), "event: A\nid: A:1,B:0\ndata: first\n\n");
    assert_eq!(publish(&mut publisher, "B", "two\nlines"), (1, 1));
    assert_eq!(stream.read_stream_until("lines\n\n"), "event: B\nid: A:1,B:1\ndata: two\ndata: lines\n\n");
    drop(stream);
    server.wait_for_stats("the stream ended", |s| num(s, "streams.open") == 0);

    // What a browser's EventSource sends when it reconnects: the last id it saw, a cursor string.
    publish(&mut publisher, "A", "third");
    let mut again = open_stream(&server, "/events?topic=A&topic=B", "Last-Event-ID: A:1,B:0\r\n");
    assert_eq!(
        again.read_stream_until("lines\n\n"),
        "event: A\nid: A:2,B:0\ndata: third\n\nevent: B\nid: A:2,B:1\ndata: two\ndata: lines\n\n",
        "nothing lost, nothing twice, topic by topic"
    );
    drop(again);
    let stats = server.wait_for_stats("the stream ended", |s| num(s, "streams.open") == 0);
    assert_accounting(&stats);
    for topic in ["A", "B"] {
        assert_eq!(publish(&mut publisher, topic, "m").1, 0, "no stream is left on {topic}");
    }
}

#[test]
fn a_stream_reports_loss_and_resets_per_topic() {
    let server = Server::start(&["--topic-capacity", "2"]);
    let mut publisher = server.connect();
    for data in ["a1", "a2", "a3"] {
        publish(&mut publisher, "A", data);
    }
    publish(&mut publisher, "B", "b1");
    // A from the start lost one message to the ring; B's epoch is not B's.
    let epoch = epoch_of(&server, "B");
    let mut stream = open_stream(&server, "/events?topic=A&topic=B&cursor=A:0,B:0&epoch=B:not-this-one", "");
    let text = stream.read_stream_until("}\n\n");
    assert_eq!(text, "event: missed\nid: A:1,B:0\ndata: {\"topic\":\"A\",\"missed\":1}\n\n");
    let text = stream.read_stream_until("\"}\n\n");
    let reset = format!("event: reset\nid: A:3,B:1\ndata: {{\"topic\":\"B\",\"cursor\":1,\"epoch\":\"{epoch}\"}}\n\n");
    assert_eq!(text, format!("event: A\nid: A:2,B:0\ndata: a2\n\nevent: A\nid: A:3,B:0\ndata: a3\n\n{reset}"));
    publish(&mut publisher, "B", "b2");
    assert_eq!(stream.read_stream_until("b2\n\n"), "event: B\nid: A:3,B:2\ndata: b2\n\n");
}
