//! Bad input against the real server over TCP: typed errors, the connection or the node keep
//! working, and nothing is written.

use gregor_actors::api::{
    ErrorCode, Hello, ListTopics, Request, RequestFrame, Response, ResponseFrame, PROTOCOL_VERSION,
};
use gregor_tests::{success, Node};
use std::io::{Read, Write};
use std::net::TcpStream;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn request(id: u64, request: Request) -> Vec<u8> {
    frame(&rmp_serde::to_vec_named(&RequestFrame { id, request }).unwrap())
}

fn read_reply(stream: &mut TcpStream) -> ResponseFrame {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).unwrap();
    rmp_serde::from_slice(&body).unwrap()
}

fn connect(node: &Node) -> TcpStream {
    let mut stream = TcpStream::connect(&node.address).unwrap();
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: "e2e".into(),
    });
    stream.write_all(&request(1, hello)).unwrap();
    let reply = read_reply(&mut stream);
    assert!(matches!(reply.result, Ok(Response::Hello(_))), "{reply:?}");
    stream
}

fn error_code(reply: &ResponseFrame) -> ErrorCode {
    reply.result.as_ref().unwrap_err().code
}

#[test]
fn malformed_and_unknown_requests_get_typed_errors_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let mut stream = connect(&node);

    stream.write_all(&frame(&[0xc1, 0x00, 0x13])).unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::MALFORMED_FRAME
    );

    #[derive(serde::Serialize)]
    struct Unknown {
        id: u64,
        request: Kind,
    }
    #[derive(serde::Serialize)]
    struct Kind {
        kind: &'static str,
        body: u8,
    }
    let unknown = rmp_serde::to_vec_named(&Unknown {
        id: 7,
        request: Kind {
            kind: "Teleport",
            body: 0,
        },
    })
    .unwrap();
    stream.write_all(&frame(&unknown)).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply.id, error_code(&reply)),
        (7, ErrorCode::UNKNOWN_REQUEST)
    );

    let bad_body = rmp_serde::to_vec_named(&Unknown {
        id: 8,
        request: Kind {
            kind: "Produce",
            body: 0,
        },
    })
    .unwrap();
    stream.write_all(&frame(&bad_body)).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(
        (reply.id, error_code(&reply)),
        (8, ErrorCode::MALFORMED_REQUEST)
    );

    // The same connection still serves.
    stream
        .write_all(&request(
            9,
            Request::ListTopics(ListTopics {
                include_internal: false,
            }),
        ))
        .unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!(reply.id, 9);
    assert!(matches!(reply.result, Ok(Response::ListTopics(_))));
}

#[test]
fn oversized_truncated_and_versionless_connections_do_not_hurt_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());

    // A frame over the limit is refused from its length alone.
    let mut stream = connect(&node);
    stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::FRAME_TOO_LARGE
    );

    // A client that disconnects mid-frame.
    let mut stream = connect(&node);
    stream.write_all(&100u32.to_be_bytes()).unwrap();
    stream.write_all(&[0x80; 10]).unwrap();
    drop(stream);

    // A wrong protocol version.
    let mut stream = TcpStream::connect(&node.address).unwrap();
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        client_id: "future".into(),
    });
    stream.write_all(&request(1, hello)).unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::UNSUPPORTED_VERSION
    );

    // No handshake.
    let mut stream = TcpStream::connect(&node.address).unwrap();
    stream
        .write_all(&request(
            1,
            Request::ListTopics(ListTopics {
                include_internal: false,
            }),
        ))
        .unwrap();
    assert_eq!(
        error_code(&read_reply(&mut stream)),
        ErrorCode::HANDSHAKE_REQUIRED
    );

    // The node is fine.
    success(&node.cli(&["topic", "create", "after"]));
    assert_eq!(success(&node.cli(&["topic", "list"])).trim(), "after");
}
