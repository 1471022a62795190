//! The client-facing server over real loopback TCP, with a fake broker behind it.

mod server_support;

use gregor::server::{ServerConfig, SERVER_VERSION};
use gregor_actors::api::{
    Acks, DescribeTopic, ErrorCode, ErrorDetail, HelloReply, ListGroups, Metadata, Produce,
    Request, RequestFrame, Response, PROTOCOL_VERSION,
};
use gregor_storage::{NodeId, PartitionId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use server_support::{batch, error_code, Client, TestServer, FAKE_NODE_ID};
use std::collections::BTreeSet;
use std::time::Duration;

fn describe(name: &str) -> Request {
    Request::DescribeTopic(DescribeTopic { name: name.into() })
}

fn list_groups() -> Request {
    Request::ListGroups(ListGroups {})
}

fn produce(topic: &str, acks: Acks) -> Request {
    Request::Produce(Produce {
        topic: topic.into(),
        partition: PartitionId(0),
        acks,
        timeout_ms: 1000,
        batches: vec![batch()],
        topic_id: None,
    })
}

fn described_name(response: &Response) -> &str {
    match response {
        Response::DescribeTopic(d) => &d.name,
        other => panic!("expected a DescribeTopic reply, got {other:?}"),
    }
}

/// A request frame with any `kind` and body, as a client in another language might send.
fn raw_request<B: Serialize>(id: u64, kind: &str, body: B) -> Vec<u8> {
    #[derive(Serialize)]
    struct Frame<'a, B> {
        id: u64,
        request: Envelope<'a, B>,
    }
    #[derive(Serialize)]
    struct Envelope<'a, B> {
        kind: &'a str,
        body: B,
    }
    rmp_serde::to_vec_named(&Frame {
        id,
        request: Envelope { kind, body },
    })
    .expect("encode")
}

async fn assert_serves(client: &mut Client, id: u64) {
    client.send(id, list_groups()).await;
    let reply = client.recv().await.expect("a reply");
    assert_eq!(reply.id, id);
    assert_eq!(reply.result, Ok(Response::ListGroups(vec!["g".into()])));
}

// ------------------------------------------------------------------ handshake

#[actix_rt::test]
async fn hello_is_answered_with_version_node_and_frame_limit() {
    let server = TestServer::start(ServerConfig {
        max_frame_bytes: 100_000,
        ..ServerConfig::default()
    })
    .await;
    let mut client = server.connect().await;
    let reply = client.hello(PROTOCOL_VERSION).await;
    assert_eq!(reply.id, 1);
    assert_eq!(
        reply.result,
        Ok(Response::Hello(HelloReply {
            protocol_version: PROTOCOL_VERSION,
            node_id: FAKE_NODE_ID,
            server_version: SERVER_VERSION.into(),
            max_frame_bytes: 100_000,
        }))
    );
    assert_serves(&mut client, 2).await;
    drop(client);
    server.shutdown().await;
}

#[actix_rt::test]
async fn hello_with_another_protocol_version_is_refused_and_closed() {
    let server = TestServer::start_default().await;
    let mut client = server.connect().await;
    let reply = client.hello(PROTOCOL_VERSION + 1).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::UNSUPPORTED_VERSION));
    assert_eq!(reply.id, 1);
    client.expect_closed().await;
}

#[actix_rt::test]
async fn request_before_hello_gets_handshake_required_and_closed() {
    let server = TestServer::start_default().await;
    let mut client = server.connect().await;
    client.send(9, list_groups()).await;
    let reply = client.recv().await.expect("an error reply");
    assert_eq!(
        (reply.id, error_code(&reply)),
        (9, Some(ErrorCode::HANDSHAKE_REQUIRED))
    );
    client.expect_closed().await;
}

#[actix_rt::test]
async fn connection_without_hello_is_closed_after_the_handshake_timeout_not_before() {
    let timeout = Duration::from_millis(300);
    let config = ServerConfig {
        handshake_timeout: timeout,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = server.connect().await;
    // The server starts its clock when it accepts, which is after our connect returned.
    let connected = tokio::time::Instant::now();
    client.expect_closed().await;
    let waited = connected.elapsed();
    assert!(
        waited >= timeout,
        "closed after {waited:?}, before the {timeout:?} handshake timeout"
    );
    assert!(waited < timeout * 20, "closed only after {waited:?}");
}

#[actix_rt::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout_not_before() {
    let idle = Duration::from_millis(300);
    let server = TestServer::start(ServerConfig {
        idle_timeout: idle,
        ..ServerConfig::default()
    })
    .await;
    let mut client = server.client().await;
    let last_request = tokio::time::Instant::now();
    client.expect_closed().await;
    let waited = last_request.elapsed();
    assert!(waited >= idle, "closed after {waited:?}, before {idle:?}");
    assert!(waited < idle * 20, "closed only after {waited:?}");
}

#[actix_rt::test]
async fn a_request_in_flight_keeps_a_quiet_connection_open_past_the_idle_timeout() {
    let idle = Duration::from_millis(100);
    let server = TestServer::start(ServerConfig {
        idle_timeout: idle,
        ..ServerConfig::default()
    })
    .await;
    let mut client = server.client().await;
    client.send(2, describe("slow-poll")).await;
    server.broker.wait_in_flight(1).await;
    // The scenario is a long poll outlasting the idle timeout: time has to pass here.
    tokio::time::sleep(idle * 4).await;
    server.broker.open_gate(1);
    let reply = client
        .recv()
        .await
        .expect("answered on the same connection");
    assert_eq!(reply.id, 2);
    assert_serves(&mut client, 3).await;
}

#[actix_rt::test]
async fn a_reply_over_the_frame_limit_becomes_a_typed_error_and_the_connection_goes_on() {
    let server = TestServer::start(ServerConfig {
        max_reply_frame_bytes: 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut client = server.client().await;
    // The fake echoes the name in its reply, so a long name makes a long reply.
    client.send(4, describe(&"x".repeat(2000))).await;
    let reply = client.recv().await.expect("a reply");
    assert_eq!(reply.id, 4);
    assert_eq!(error_code(&reply), Some(ErrorCode::FRAME_TOO_LARGE));
    assert_serves(&mut client, 5).await;
}

#[actix_rt::test]
async fn another_protocol_on_the_port_gets_one_error_and_a_close() {
    let server = TestServer::start_default().await;
    // "GET " read as a length is about 1.2 GB: over the limit.
    let mut http = server.connect().await;
    http.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let reply = http.recv().await.expect("an error reply");
    assert_eq!(
        (reply.id, error_code(&reply)),
        (0, Some(ErrorCode::FRAME_TOO_LARGE))
    );
    http.expect_closed().await;
    // A plausible length with a body that is not msgpack.
    let mut other = server.connect().await;
    other.send_body(&[0x00, 0x0c, 0x00, 0x12]).await;
    let reply = other.recv().await.expect("an error reply");
    assert_eq!(
        (reply.id, error_code(&reply)),
        (0, Some(ErrorCode::MALFORMED_FRAME))
    );
    other.expect_closed().await;
}

// ------------------------------------------------------------------ pipelining

#[actix_rt::test]
async fn pipelined_replies_match_their_ids_even_out_of_order() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send(1, describe("slow-1")).await;
    for id in 2..=300 {
        client.send(id, describe(&format!("fast-{id}"))).await;
    }
    // The slow request blocks until the gate opens, so every fast reply overtakes it.
    let mut seen = BTreeSet::new();
    for _ in 2..=300 {
        let reply = client.recv().await.expect("a reply");
        let response = reply.result.as_ref().expect("success");
        assert_eq!(described_name(response), format!("fast-{}", reply.id));
        assert!(seen.insert(reply.id), "id {} answered twice", reply.id);
    }
    assert_eq!(seen, (2..=300).collect());
    server.broker.open_gate(1);
    let reply = client.recv().await.expect("the slow reply");
    assert_eq!(reply.id, 1);
    assert_eq!(
        described_name(reply.result.as_ref().expect("success")),
        "slow-1"
    );
}

#[actix_rt::test]
async fn requests_in_flight_on_a_connection_are_bounded() {
    let config = ServerConfig {
        max_in_flight_per_connection: 4,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    for id in 1..=20 {
        client.send(id, describe(&format!("slow-{id}"))).await;
    }
    server.broker.wait_in_flight(4).await;
    server.broker.open_gate(20);
    let ids: BTreeSet<u64> = {
        let mut ids = BTreeSet::new();
        for _ in 1..=20 {
            ids.insert(client.recv().await.expect("a reply").id);
        }
        ids
    };
    assert_eq!(ids, (1..=20).collect());
    assert_eq!(
        server.broker.max_in_flight(),
        4,
        "the server read past its in-flight bound"
    );
}

#[actix_rt::test]
async fn produce_with_acks_zero_is_served_without_a_reply() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send(5, produce("t", Acks::None)).await;
    client.send(6, list_groups()).await;
    let reply = client.recv().await.expect("the ListGroups reply");
    assert_eq!(reply.id, 6);
    // The server answers everything in flight before closing, so nothing more means no reply
    // was ever coming for id 5.
    client.finish_sending().await;
    client.expect_closed().await;
    assert_eq!(server.broker.produced(), 1);
}

#[actix_rt::test]
async fn failed_acks_zero_produce_closes_the_connection_after_pending_replies() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send(1, describe("slow-1")).await;
    client.send(2, produce("fail", Acks::None)).await;
    server.broker.wait_produced(1).await;
    server.broker.open_gate(1);
    let reply = client.recv().await.expect("the reply already in flight");
    assert_eq!(reply.id, 1);
    client.expect_closed().await;
    assert_serves(&mut server.client().await, 3).await;
}

#[actix_rt::test]
async fn produce_errors_with_acks_travel_with_their_detail() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send(4, produce("fail", Acks::All)).await;
    let reply = client.recv().await.expect("a reply");
    let error = reply.result.expect_err("NOT_LEADER");
    assert_eq!(error.code, ErrorCode::NOT_LEADER);
    assert_eq!(
        error.detail,
        Some(ErrorDetail::Leader {
            leader: Some(NodeId(7)),
            address: None,
        })
    );
}

#[actix_rt::test]
async fn handler_panic_is_answered_with_internal_and_the_connection_goes_on() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client
        .send(3, Request::Metadata(Metadata { topics: None }))
        .await;
    let reply = client.recv().await.expect("a reply");
    assert_eq!(
        (reply.id, error_code(&reply)),
        (3, Some(ErrorCode::INTERNAL))
    );
    assert_serves(&mut client, 4).await;
}

#[actix_rt::test]
async fn second_hello_is_answered_again() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    let reply = client.hello(PROTOCOL_VERSION).await;
    assert!(matches!(reply.result, Ok(Response::Hello(_))));
    let reply = client.hello(PROTOCOL_VERSION + 1).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::UNSUPPORTED_VERSION));
    assert_serves(&mut client, 2).await;
}

// ------------------------------------------------------------------ bad input

#[actix_rt::test]
async fn malformed_msgpack_gets_malformed_frame_and_the_connection_stays() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    for body in [
        &[0xc1][..],
        &[],
        &[0x93, 0x01, 0x02, 0x03],
        &[0x81, 0xa2, b'i', b'd'],
    ] {
        client.send_body(body).await;
        let reply = client.recv().await.expect("an error reply");
        assert_eq!(
            (reply.id, error_code(&reply)),
            (0, Some(ErrorCode::MALFORMED_FRAME)),
            "{body:x?}"
        );
    }
    assert_serves(&mut client, 2).await;
}

#[actix_rt::test]
async fn unknown_kind_gets_unknown_request_with_its_id() {
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send_body(&raw_request(77, "Teleport", ())).await;
    let reply = client.recv().await.expect("an error reply");
    assert_eq!(
        (reply.id, error_code(&reply)),
        (77, Some(ErrorCode::UNKNOWN_REQUEST))
    );
    assert_serves(&mut client, 78).await;
}

#[actix_rt::test]
async fn body_not_matching_its_kind_gets_malformed_request_with_its_id() {
    #[derive(Serialize)]
    struct WrongFields {
        topic: u8,
    }
    let server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send_body(&raw_request(8, "Produce", 1u8)).await;
    client
        .send_body(&raw_request(9, "Fetch", WrongFields { topic: 1 }))
        .await;
    for id in [8, 9] {
        let reply = client.recv().await.expect("an error reply");
        assert_eq!(
            (reply.id, error_code(&reply)),
            (id, Some(ErrorCode::MALFORMED_REQUEST))
        );
    }
    assert_serves(&mut client, 10).await;
}

#[actix_rt::test]
async fn frame_over_the_limit_gets_frame_too_large_and_closed() {
    let config = ServerConfig {
        max_frame_bytes: 1024,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let mut frame = 1025u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 100]);
    client.send_bytes(&frame).await;
    let reply = client.recv().await.expect("an error reply");
    assert_eq!(
        (reply.id, error_code(&reply)),
        (0, Some(ErrorCode::FRAME_TOO_LARGE))
    );
    client.expect_closed().await;
    // Exactly at the limit is fine.
    let mut client = server.client().await;
    let body = (0..1024)
        .map(|len| RequestFrame {
            id: 5,
            request: describe(&"n".repeat(len)),
        })
        .map(|frame| rmp_serde::to_vec_named(&frame).expect("encode"))
        .find(|body| body.len() == 1024)
        .expect("some name length gives a 1024-byte frame");
    client.send_body(&body).await;
    assert_eq!(client.recv().await.expect("a reply").id, 5);
}

#[actix_rt::test]
async fn truncated_frames_and_vanishing_clients_do_not_disturb_others() {
    let server = TestServer::start_default().await;
    let mut steady = server.client().await;

    let mut mid_body = server.client().await;
    mid_body.send_bytes(&[0, 0, 0, 100, 0x82, 0xa2]).await;
    drop(mid_body);

    let mut mid_prefix = server.connect().await;
    mid_prefix.send_bytes(&[0, 0]).await;
    drop(mid_prefix);

    let mut mid_request = server.client().await;
    mid_request.send(1, describe("slow-gone")).await;
    server.broker.wait_in_flight(1).await;
    drop(mid_request);

    assert_serves(&mut steady, 2).await;
    server.broker.open_gate(1);
    assert_serves(&mut steady, 3).await;
    assert_serves(&mut server.client().await, 4).await;
    drop(steady);
    server.shutdown().await;
}

#[actix_rt::test]
async fn random_and_mutated_frames_never_stop_the_server() {
    let server = TestServer::start_default().await;
    let mut rng = SmallRng::seed_from_u64(0x6772_6567);
    let valid: Vec<Vec<u8>> = [list_groups(), describe("x"), produce("t", Acks::All)]
        .into_iter()
        .map(|request| rmp_serde::to_vec_named(&RequestFrame { id: 1, request }).expect("encode"))
        .collect();

    let mut client = server.client().await;
    for round in 0..400 {
        let body = if round % 2 == 0 {
            let len = rng.gen_range(0..64);
            (0..len).map(|_| rng.gen()).collect::<Vec<u8>>()
        } else {
            let mut body = valid[rng.gen_range(0..valid.len())].clone();
            let at = rng.gen_range(0..body.len());
            body[at] = rng.gen();
            body
        };
        client.send_body(&body).await;
    }
    // Garbage may decode as anything (even a request that gets no reply), so look for the
    // marker rather than counting replies.
    const MARKER: u64 = 0x5eed_0000_0000_0001;
    client.send(MARKER, list_groups()).await;
    loop {
        let reply = client
            .recv()
            .await
            .expect("the server keeps the connection");
        if reply.id == MARKER {
            assert_eq!(reply.result, Ok(Response::ListGroups(vec!["g".into()])));
            break;
        }
    }

    // Garbage from the first byte, length prefix included, on fresh connections.
    for _ in 0..30 {
        let mut stranger = server.connect().await;
        let len = rng.gen_range(1..80);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        stranger.send_bytes(&bytes).await;
        stranger.finish_sending().await;
        while stranger.recv().await.is_some() {}
    }
    assert_serves(&mut server.client().await, 2).await;
}

// ------------------------------------------------------------------ connections and shutdown

#[actix_rt::test]
async fn shutdown_answers_requests_in_flight_then_closes_and_stops_listening() {
    let mut server = TestServer::start_default().await;
    let mut client = server.client().await;
    client.send(1, describe("slow-1")).await;
    server.broker.wait_in_flight(1).await;
    server.begin_shutdown();
    server.broker.open_gate(1);
    let reply = client.recv().await.expect("the in-flight reply");
    assert_eq!(reply.id, 1);
    client.expect_closed().await;
    // The server discards late input for a moment after closing; hanging up ends that at once.
    drop(client);
    server.finished().await;
    let refused = tokio::net::TcpStream::connect(server.addr).await;
    assert!(
        refused.is_err(),
        "the listener should be closed after shutdown"
    );
}

#[actix_rt::test]
async fn shutdown_drops_connections_still_busy_after_the_grace_period() {
    let config = ServerConfig {
        shutdown_grace: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    client.send(1, describe("slow-never")).await;
    server.broker.wait_in_flight(1).await;
    server.shutdown().await;
    let mut stream = client.into_stream();
    let mut rest = Vec::new();
    // Closed without a reply (a reset is as good as an end of stream here).
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
    assert!(rest.is_empty(), "no reply was ready, so none may be sent");
}

#[actix_rt::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = TestServer::start(config).await;
    let first = server.client().await;
    let mut second = server.connect().await;
    let hello = gregor_protocol::frame::encode_frame(&RequestFrame {
        id: 1,
        request: Request::Hello(gregor_actors::api::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: "second".into(),
        }),
    });
    second.send_bytes(&hello).await;
    // Absence can only be observed over some time; the positive half below is exact.
    let early = tokio::time::timeout(Duration::from_millis(200), second.recv()).await;
    assert!(
        early.is_err(),
        "the second connection was served while the first held the only slot"
    );
    drop(first);
    let reply = second.recv().await.expect("served once the first closed");
    assert!(matches!(reply.result, Ok(Response::Hello(_))));
}

#[actix_rt::test]
async fn a_connection_can_be_served_over_an_in_memory_stream() {
    use gregor_protocol::frame::{decode_response, encode_frame, read_frame};
    use tokio::io::AsyncWriteExt;

    let (mut client, server_side) = tokio::io::duplex(64 * 1024);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let served = tokio::task::spawn_local(gregor::server::serve_connection(
        server_side,
        server_support::FakeBroker::new(),
        ServerConfig::default(),
        stop_rx,
    ));
    let hello = Request::Hello(gregor_actors::api::Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: "in-memory".into(),
    });
    for (id, request) in [(1, hello), (2, list_groups())] {
        let frame = encode_frame(&RequestFrame { id, request });
        client.write_all(&frame).await.expect("write");
    }
    client.shutdown().await.expect("half-close");
    let mut ids = Vec::new();
    while let Some(body) = read_frame(&mut client, 1 << 20).await.expect("read") {
        ids.push(decode_response(&body).expect("decode").id);
    }
    assert_eq!(ids, [1, 2]);
    served.await.expect("connection task ends cleanly");
}
