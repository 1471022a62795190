//! The connector seam: a client handed a `Connector` dials through it instead of TCP, and a
//! connector's failure is a connect error like a refused TCP connection.

use gregor_client::{ClientError, Connection, ConnectionConfig, Connector};
use gregor_protocol::api::{
    HelloReply, ListGroups, Request, Response, ResponseFrame, PROTOCOL_VERSION,
};
use gregor_protocol::frame::{decode_request, encode_frame, read_frame, DEFAULT_MAX_FRAME_BYTES};
use gregor_protocol::NodeId;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Answers Hello as node 7, then `ListGroups` with the address the client dialled.
async fn serve(stream: tokio::io::DuplexStream, dialled: String) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    while let Ok(Some(body)) = read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES).await {
        let frame = decode_request(&body).expect("valid frame");
        let result = match frame.request {
            Request::Hello(_) => Ok(Response::Hello(HelloReply {
                protocol_version: PROTOCOL_VERSION,
                node_id: NodeId(7),
                server_version: "in-memory".into(),
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            })),
            _ => Ok(Response::ListGroups(vec![dialled.clone()])),
        };
        let reply = encode_frame(&ResponseFrame {
            id: frame.id,
            result,
        });
        if writer.write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn in_memory(dials: Arc<Mutex<Vec<String>>>) -> Connector {
    Connector::new(move |addr| {
        dials.lock().unwrap().push(addr.to_owned());
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(server, addr.to_owned()));
        Box::pin(async move { Ok(Box::new(client) as Box<dyn gregor_client::BrokerStream>) })
    })
}

#[tokio::test]
async fn a_connector_replaces_tcp_for_every_dial() {
    let dials = Arc::new(Mutex::new(Vec::new()));
    let config = ConnectionConfig {
        connector: Some(in_memory(dials.clone())),
        ..ConnectionConfig::default()
    };
    // No such host: only the connector can reach it.
    let conn = Connection::connect("node-7.invalid:9092", &config)
        .await
        .expect("connected through the connector");
    assert_eq!(conn.node_id(), NodeId(7));
    let reply = conn
        .send(Request::ListGroups(ListGroups {}))
        .await
        .expect("reply");
    assert_eq!(
        reply,
        Response::ListGroups(vec!["node-7.invalid:9092".into()])
    );
    assert_eq!(*dials.lock().unwrap(), vec!["node-7.invalid:9092"]);
}

#[tokio::test]
async fn a_connector_that_fails_gives_a_connect_error() {
    let config = ConnectionConfig {
        connector: Some(Connector::new(|_| {
            Box::pin(async {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "link down",
                ))
            })
        })),
        ..ConnectionConfig::default()
    };
    let error = Connection::connect("node-1:9092", &config)
        .await
        .expect_err("the connector refused");
    assert!(
        matches!(error, ClientError::Connect { .. }),
        "expected a connect error, got {error:?}"
    );
}
