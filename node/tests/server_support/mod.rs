//! A fake broker and a minimal client for testing the server over real loopback TCP.
#![allow(dead_code)] // each test binary uses a different part of this module

use bytes::Bytes;
use gregor::server::{self, RequestHandler, ServerConfig};
use gregor_actors::api::{
    ApiError, ClusterMetadata, Hello, ProduceReply, Request, RequestFrame, Response, ResponseFrame,
    TopicConfig, TopicDescription, PROTOCOL_VERSION,
};
use gregor_protocol::frame::{decode_response, encode_frame, read_frame, DEFAULT_MAX_FRAME_BYTES};
use gregor_storage::{NodeId, Offset};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, Semaphore};

pub const FAKE_NODE_ID: NodeId = NodeId(42);

/// Serves requests from memory. Topics named `slow*` wait for the test to open the gate;
/// produce to `fail` returns NOT_LEADER; `Metadata` panics.
#[derive(Clone)]
pub struct FakeBroker {
    state: Rc<FakeState>,
}

struct FakeState {
    gate: Semaphore,
    in_flight: watch::Sender<usize>,
    max_in_flight: Cell<usize>,
    produced: watch::Sender<usize>,
}

impl FakeBroker {
    pub fn new() -> Self {
        FakeBroker {
            state: Rc::new(FakeState {
                gate: Semaphore::new(0),
                in_flight: watch::Sender::new(0),
                max_in_flight: Cell::new(0),
                produced: watch::Sender::new(0),
            }),
        }
    }

    /// Lets `n` gated requests complete.
    pub fn open_gate(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Resolves once at least `n` requests are inside the handler at the same time.
    pub async fn wait_in_flight(&self, n: usize) {
        let mut rx = self.state.in_flight.subscribe();
        rx.wait_for(|&now| now >= n).await.expect("fake alive");
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.get()
    }

    pub fn produced(&self) -> usize {
        *self.state.produced.borrow()
    }

    pub async fn wait_produced(&self, n: usize) {
        let mut rx = self.state.produced.subscribe();
        rx.wait_for(|&now| now >= n).await.expect("fake alive");
    }
}

struct InFlight(Rc<FakeState>);

impl InFlight {
    fn enter(state: &Rc<FakeState>) -> InFlight {
        state.in_flight.send_modify(|n| *n += 1);
        let now = *state.in_flight.borrow();
        state.max_in_flight.set(state.max_in_flight.get().max(now));
        InFlight(Rc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n -= 1);
    }
}

impl RequestHandler for FakeBroker {
    fn handle(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, ApiError>> + 'static {
        let state = Rc::clone(&self.state);
        async move {
            let _guard = InFlight::enter(&state);
            match request {
                Request::DescribeTopic(d) => {
                    if d.name.starts_with("slow") {
                        state.gate.acquire().await.expect("gate open").forget();
                    }
                    Ok(Response::DescribeTopic(TopicDescription {
                        name: d.name,
                        replication_factor: 1,
                        internal: false,
                        config: TopicConfig::default(),
                        partitions: vec![],
                    }))
                }
                Request::Produce(p) => {
                    state.produced.send_modify(|n| *n += 1);
                    if p.topic == "fail" {
                        return Err(ApiError::not_leader(Some(NodeId(7))));
                    }
                    Ok(Response::Produce(ProduceReply {
                        base_offset: Offset(*state.produced.borrow() as u64),
                        log_start_offset: Offset(0),
                    }))
                }
                Request::ListGroups(_) => Ok(Response::ListGroups(vec!["g".into()])),
                Request::Metadata(_) => panic!("the fake broker panics on Metadata"),
                _ => Ok(Response::Metadata(ClusterMetadata {
                    brokers: vec![],
                    topics: vec![],
                })),
            }
        }
    }

    fn node_id(&self) -> NodeId {
        FAKE_NODE_ID
    }
}

/// A server on 127.0.0.1 with an ephemeral port, running on the test's actix System.
pub struct TestServer {
    pub addr: SocketAddr,
    pub broker: FakeBroker,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let broker = FakeBroker::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let done =
            tokio::task::spawn_local(server::serve(listener, broker.clone(), config, async {
                let _ = stopped.await;
            }));
        TestServer {
            addr,
            broker,
            stop: Some(stop),
            done: Some(done),
        }
    }

    pub async fn start_default() -> TestServer {
        TestServer::start(ServerConfig::default()).await
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client that has completed the handshake.
    pub async fn client(&self) -> Client {
        let mut client = self.connect().await;
        let reply = client.hello(PROTOCOL_VERSION).await;
        assert!(
            matches!(reply.result, Ok(Response::Hello(_))),
            "handshake failed: {reply:?}"
        );
        client
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        self.finished().await;
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub async fn finished(&mut self) {
        if let Some(done) = self.done.take() {
            done.await.expect("server task did not panic");
        }
    }
}

pub struct Client {
    stream: TcpStream,
    max_reply_bytes: u32,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to test server");
        Client {
            stream,
            max_reply_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }

    pub async fn hello(&mut self, protocol_version: u16) -> ResponseFrame {
        let hello = Request::Hello(Hello {
            protocol_version,
            client_id: "server-test".into(),
        });
        self.send(1, hello).await;
        self.recv().await.expect("a reply to Hello")
    }

    pub async fn send(&mut self, id: u64, request: Request) {
        self.send_bytes(&encode_frame(&RequestFrame { id, request }))
            .await;
    }

    /// Sends a frame with this body (the length prefix is added).
    pub async fn send_body(&mut self, body: &[u8]) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.send_bytes(&frame).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("send to test server");
    }

    /// The next reply, or `None` once the server has closed the connection.
    pub async fn recv(&mut self) -> Option<ResponseFrame> {
        match read_frame(&mut self.stream, self.max_reply_bytes).await {
            Ok(Some(body)) => Some(decode_response(&body).expect("server sends valid replies")),
            Ok(None) => None,
            Err(e) => panic!("reading a reply failed: {e}"),
        }
    }

    /// Tells the server we will send nothing more; replies can still arrive.
    pub async fn finish_sending(&mut self) {
        self.stream.shutdown().await.expect("half-close");
    }

    /// Asserts that the server closes the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        if let Some(extra) = self.recv().await {
            panic!("expected the server to close the connection, got {extra:?}");
        }
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

pub fn error_code(frame: &ResponseFrame) -> Option<gregor_actors::api::ErrorCode> {
    frame.result.as_ref().err().map(|e| e.code)
}

pub fn batch() -> Bytes {
    Bytes::from_static(b"not checked by the fake")
}
