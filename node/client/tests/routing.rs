//! Routing across several brokers: fake brokers on loopback speak the real wire protocol and
//! share one view of the cluster (who leads which partition), which a test changes under the
//! client to see it follow `NOT_LEADER`, skip a dead broker and give up after its retries.

use gregor_client::{ClientConfig, ClientError, Cluster, Route};
use gregor_protocol::api::{
    Acks, ApiError, BrokerInfo, ClusterMetadata, ErrorCode, HelloReply, PartitionMetadata, Produce,
    ProduceReply, Request, Response, ResponseFrame, TopicMetadata, PROTOCOL_VERSION,
};
use gregor_protocol::batch::{BatchBuilder, NewRecord};
use gregor_protocol::frame::{decode_request, encode_frame, read_frame, DEFAULT_MAX_FRAME_BYTES};
use gregor_protocol::{NodeId, Offset, PartitionId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TOPIC: &str = "orders";

/// What every fake broker agrees on, and what each one was asked.
#[derive(Default)]
struct World {
    /// Leader of each partition of `TOPIC`.
    leaders: Vec<Option<NodeId>>,
    /// Whether `NOT_LEADER` names the leader.
    hint: bool,
    addresses: BTreeMap<NodeId, String>,
    /// Every request, as (broker, kind).
    seen: Vec<(NodeId, &'static str)>,
    /// Produces a leader accepted, as (broker, partition).
    accepted: Vec<(NodeId, u32)>,
}

type Shared = Arc<Mutex<World>>;

fn answer(world: &Shared, me: NodeId, request: Request) -> Result<Response, ApiError> {
    let mut world = world.lock().unwrap();
    world.seen.push((me, request.kind()));
    match request {
        Request::Metadata(_) => Ok(Response::Metadata(ClusterMetadata {
            brokers: world
                .addresses
                .iter()
                .map(|(node_id, address)| BrokerInfo {
                    node_id: *node_id,
                    address: address.clone(),
                })
                .collect(),
            topics: vec![TopicMetadata {
                name: TOPIC.into(),
                partitions: world
                    .leaders
                    .iter()
                    .enumerate()
                    .map(|(p, leader)| PartitionMetadata {
                        partition: PartitionId(p as u32),
                        leader: *leader,
                        replicas: world.addresses.keys().copied().collect(),
                    })
                    .collect(),
                topic_id: None,
            }],
        })),
        Request::Produce(produce) => {
            let p = produce.partition.0;
            let leader = world.leaders[p as usize];
            if leader != Some(me) {
                return Err(ApiError::not_leader(if world.hint { leader } else { None }));
            }
            world.accepted.push((me, p));
            Ok(Response::Produce(ProduceReply {
                base_offset: Offset(world.accepted.len() as u64 - 1),
                log_start_offset: Offset(0),
            }))
        }
        other => Err(ApiError::internal(format!(
            "the fake broker does not serve {}",
            other.kind()
        ))),
    }
}

/// A fake broker; `kill` closes its listener and every connection, as a crashed process.
struct FakeBroker {
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl FakeBroker {
    async fn start(world: &Shared, me: NodeId) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        world.lock().unwrap().addresses.insert(me, addr);
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (world, tasks) = (world.clone(), tasks.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let task = tokio::spawn(serve_connection(stream, world.clone(), me));
                    tasks.lock().unwrap().push(task);
                }
            }
        });
        tasks.lock().unwrap().push(accept);
        FakeBroker { tasks }
    }

    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn serve_connection(stream: TcpStream, world: Shared, me: NodeId) {
    let (mut reader, mut writer) = stream.into_split();
    while let Ok(Some(body)) = read_frame(&mut reader, DEFAULT_MAX_FRAME_BYTES).await {
        let frame = decode_request(&body).expect("the client sends valid frames");
        let result = match frame.request {
            Request::Hello(_) => Ok(Response::Hello(HelloReply {
                protocol_version: PROTOCOL_VERSION,
                node_id: me,
                server_version: "fake".into(),
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            })),
            request => answer(&world, me, request),
        };
        let reply = ResponseFrame {
            id: frame.id,
            result,
        };
        if writer.write_all(&encode_frame(&reply)).await.is_err() {
            return;
        }
    }
}

/// Three fake brokers, node 1 leading every partition of `TOPIC` (2 partitions).
async fn three_brokers(hint: bool) -> (Shared, BTreeMap<NodeId, FakeBroker>) {
    let world: Shared = Arc::new(Mutex::new(World {
        leaders: vec![Some(NodeId(1)); 2],
        hint,
        ..World::default()
    }));
    let mut brokers = BTreeMap::new();
    for id in 1..=3 {
        brokers.insert(NodeId(id), FakeBroker::start(&world, NodeId(id)).await);
    }
    (world, brokers)
}

fn address(world: &Shared, node: u64) -> String {
    world.lock().unwrap().addresses[&NodeId(node)].clone()
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new(bootstrap).seed(7).retries(5);
    config.retry_backoff = Duration::from_millis(10);
    config.retry_backoff_max = Duration::from_millis(50);
    config
}

fn produce(partition: u32) -> Request {
    let mut batch = BatchBuilder::with_capacity(64);
    batch.push(&NewRecord {
        key: None,
        value: Some(b"v"),
        headers: &[],
        timestamp: 0,
    });
    Request::Produce(Produce {
        topic: TOPIC.into(),
        partition: PartitionId(partition),
        acks: Acks::All,
        timeout_ms: 1_000,
        batches: vec![batch.finish()],
        topic_id: None,
    })
}

fn to_leader(partition: u32) -> Route {
    Route::Leader {
        topic: TOPIC.into(),
        partition: PartitionId(partition),
    }
}

fn produces_seen_by(world: &Shared, node: u64) -> usize {
    let world = world.lock().unwrap();
    world
        .seen
        .iter()
        .filter(|(n, kind)| *n == NodeId(node) && *kind == "Produce")
        .count()
}

#[tokio::test]
async fn a_partition_request_goes_to_its_leader_whatever_broker_bootstrap_reached() {
    let (world, _brokers) = three_brokers(true).await;
    world.lock().unwrap().leaders = vec![Some(NodeId(2)), Some(NodeId(3))];
    let cluster = Cluster::connect(config(&address(&world, 1)))
        .await
        .expect("connect");
    for partition in [0, 1, 0] {
        cluster
            .request(to_leader(partition), produce(partition))
            .await
            .expect("produced");
    }
    let world = world.lock().unwrap();
    assert_eq!(
        world.accepted,
        [(NodeId(2), 0), (NodeId(3), 1), (NodeId(2), 0)]
    );
    assert!(
        !world
            .seen
            .iter()
            .any(|(n, kind)| *n == NodeId(1) && *kind == "Produce"),
        "no produce went to a broker that leads nothing"
    );
}

#[tokio::test]
async fn not_leader_without_a_hint_refreshes_metadata_and_reaches_the_new_leader() {
    let (world, _brokers) = three_brokers(false).await;
    let cluster = Cluster::connect(config(&address(&world, 1)))
        .await
        .expect("connect");
    cluster
        .request(to_leader(0), produce(0))
        .await
        .expect("first");
    world.lock().unwrap().leaders[0] = Some(NodeId(3));
    cluster
        .request(to_leader(0), produce(0))
        .await
        .expect("second, after the leader moved");
    assert_eq!(
        world.lock().unwrap().accepted,
        [(NodeId(1), 0), (NodeId(3), 0)]
    );
    assert_eq!(
        produces_seen_by(&world, 1),
        2,
        "one refused attempt at the old leader"
    );
}

#[tokio::test]
async fn not_leader_with_a_hint_goes_straight_to_the_named_leader() {
    let (world, _brokers) = three_brokers(true).await;
    let cluster = Cluster::connect(config(&address(&world, 1)))
        .await
        .expect("connect");
    cluster
        .request(to_leader(1), produce(1))
        .await
        .expect("first");
    let metadata_requests = |world: &Shared| {
        let world = world.lock().unwrap();
        world.seen.iter().filter(|(_, k)| *k == "Metadata").count()
    };
    let before = metadata_requests(&world);
    world.lock().unwrap().leaders[1] = Some(NodeId(2));
    cluster
        .request(to_leader(1), produce(1))
        .await
        .expect("second");
    assert_eq!(world.lock().unwrap().accepted.last(), Some(&(NodeId(2), 1)));
    assert_eq!(
        metadata_requests(&world),
        before,
        "the hint was enough, no metadata request"
    );
}

#[tokio::test]
async fn a_refusal_naming_the_leader_is_followed_without_a_backoff() {
    let (world, _brokers) = three_brokers(true).await;
    let mut slow_retries = config(&address(&world, 1));
    // A retry that waited its backoff would take 24-36 s.
    slow_retries.retry_backoff = Duration::from_secs(30);
    slow_retries.retry_backoff_max = Duration::from_secs(30);
    let cluster = Cluster::connect(slow_retries).await.expect("connect");
    cluster
        .request(to_leader(0), produce(0))
        .await
        .expect("first");
    world.lock().unwrap().leaders[0] = Some(NodeId(3));
    tokio::time::timeout(
        Duration::from_secs(10),
        cluster.request(to_leader(0), produce(0)),
    )
    .await
    .expect("the named leader was tried without waiting a backoff")
    .expect("second, after the leader moved");
    assert_eq!(world.lock().unwrap().accepted.last(), Some(&(NodeId(3), 0)));
}

#[tokio::test]
async fn a_dead_bootstrap_address_is_passed_over_for_a_live_one() {
    let (world, brokers) = three_brokers(true).await;
    brokers[&NodeId(1)].kill();
    let bootstrap = format!(
        "{},{},{}",
        address(&world, 1),
        address(&world, 2),
        address(&world, 3)
    );
    world.lock().unwrap().leaders = vec![Some(NodeId(3)); 2];
    let cluster = Cluster::connect(config(&bootstrap))
        .await
        .expect("the second address answers");
    cluster
        .request(to_leader(0), produce(0))
        .await
        .expect("produced");
    assert_eq!(world.lock().unwrap().accepted, [(NodeId(3), 0)]);
}

#[tokio::test]
async fn when_the_leader_dies_the_client_follows_the_new_leader_and_skips_the_dead_broker() {
    let (world, brokers) = three_brokers(false).await;
    let mut config = config(&address(&world, 2));
    // Long enough that the check at the end cannot outlive it.
    config = config.reconnect_backoff(Duration::from_secs(30), Duration::from_secs(30));
    let cluster = Cluster::connect(config).await.expect("connect");
    cluster
        .request(to_leader(0), produce(0))
        .await
        .expect("first");
    // The leader crashes; metadata still names it for a while, then the new one.
    brokers[&NodeId(1)].kill();
    let failover = tokio::spawn({
        let world = world.clone();
        let cluster = cluster.clone();
        async move {
            // Wait until the client has found node 1 dead at least once.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                if let Err(ClientError::Connect { .. }) = cluster.node_connection(NodeId(1)).await {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node 1 still reachable"
                );
                tokio::task::yield_now().await;
            }
            world.lock().unwrap().leaders[0] = Some(NodeId(3));
        }
    });
    cluster
        .request(to_leader(0), produce(0))
        .await
        .expect("produced at the new leader");
    failover.await.expect("failover task");
    assert_eq!(world.lock().unwrap().accepted.last(), Some(&(NodeId(3), 0)));
    // Having failed lately, the dead broker is skipped without being dialled.
    let err = cluster.node_connection(NodeId(1)).await.expect_err("dead");
    assert!(err.to_string().contains("skipped"), "{err}");
}

#[tokio::test]
async fn a_partition_that_never_finds_its_leader_fails_after_the_configured_retries() {
    let (world, _brokers) = three_brokers(false).await;
    // Metadata names node 9 as the leader, at node 2's address: node 2 refuses every time, as
    // a broker would whose view of leadership never settles.
    {
        let mut world = world.lock().unwrap();
        world.leaders[0] = Some(NodeId(9));
        let two = world.addresses[&NodeId(2)].clone();
        world.addresses.insert(NodeId(9), two);
    }
    let cluster = Cluster::connect(config(&address(&world, 1)))
        .await
        .expect("connect");
    let err = cluster
        .request(to_leader(0), produce(0))
        .await
        .expect_err("nobody leads");
    assert_eq!(err.code(), Some(ErrorCode::NOT_LEADER), "{err}");
    let attempts: usize = (1..=3).map(|n| produces_seen_by(&world, n)).sum();
    assert_eq!(attempts, 6, "one attempt and 5 retries");
}
