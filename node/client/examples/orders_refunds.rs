//! The mission's own case. Producers write orders and refunds keyed by seller id; three
//! services read them as three consumer groups:
//!
//! - `logistics` (three members sharing `orders`),
//! - `sellers` (one member reading `orders` and `refunds`),
//! - `payments` (one member reading `refunds`).
//!
//! Every group must see every record of its topics, each exactly once, and each seller's
//! records in the order they were produced (a seller's records share a partition, and a
//! partition has one owner in a group). The example checks that and prints it.
//!
//! ```sh
//! gregor serve &
//! cargo run -p gregor-client --example orders_refunds -- 127.0.0.1:9092
//! ```

use gregor_client::protocol::api::ErrorCode;
use gregor_client::{
    Admin, AutoOffsetReset, ClientConfig, ClientError, Consumer, ConsumerConfig, NewTopic,
    Producer, ProducerConfig, ProducerRecord,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SELLERS: u32 = 20;
const ORDERS_PER_SELLER: u32 = 50;
const REFUNDS_PER_SELLER: u32 = 10;

/// What one group saw: (topic, seller) -> sequence numbers in the order they arrived.
type Seen = Arc<Mutex<BTreeMap<(String, String), Vec<u32>>>>;

struct Service {
    group: &'static str,
    topics: &'static [&'static str],
    members: usize,
}

const SERVICES: [Service; 3] = [
    Service {
        group: "logistics",
        topics: &["orders"],
        members: 3,
    },
    Service {
        group: "sellers",
        topics: &["orders", "refunds"],
        members: 1,
    },
    Service {
        group: "payments",
        topics: &["refunds"],
        members: 1,
    },
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    // A fresh run's own topics and groups, so the example can run again on the same node.
    let run = gregor_client::seed_from_clock() % 1_000_000;
    let orders = format!("orders-{run}");
    let refunds = format!("refunds-{run}");
    let admin = Admin::connect(ClientConfig::new(&bootstrap)).await?;
    for (topic, partitions) in [(&orders, 6), (&refunds, 3)] {
        match admin
            .create_topic(NewTopic::new(topic.as_str()).partitions(partitions))
            .await
        {
            Err(e) if e.code() == Some(ErrorCode::TOPIC_ALREADY_EXISTS) => {}
            other => {
                other?;
            }
        }
    }
    let name = |t: &str| {
        if t == "orders" {
            orders.clone()
        } else {
            refunds.clone()
        }
    };

    let mut members = tokio::task::JoinSet::new();
    let mut seen: BTreeMap<&str, Seen> = BTreeMap::new();
    let assigned: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    for service in &SERVICES {
        let group_seen = Seen::default();
        seen.insert(service.group, group_seen.clone());
        for i in 0..service.members {
            let config = ConsumerConfig::new(&bootstrap)
                .group(format!("{}-{run}", service.group))
                .auto_offset_reset(AutoOffsetReset::Earliest);
            let mut consumer = Consumer::connect(config).await?;
            let topics: Vec<String> = service.topics.iter().map(|t| name(t)).collect();
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
            let (seen, assigned) = (group_seen.clone(), assigned.clone());
            let member = format!("{}#{i}", service.group);
            members.spawn(consume(consumer, member, seen, assigned));
        }
    }
    // Produce once every member of every group owns partitions, so each seller's records are
    // read by one member from first to last.
    let everyone: usize = SERVICES.iter().map(|s| s.members).sum();
    while assigned
        .lock()
        .unwrap()
        .values()
        .filter(|n| **n > 0)
        .count()
        < everyone
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&bootstrap, &orders, &refunds).await?;
    println!(
        "produced {} orders and {} refunds for {SELLERS} sellers",
        SELLERS * ORDERS_PER_SELLER,
        SELLERS * REFUNDS_PER_SELLER
    );

    let mut failures = 0;
    for service in &SERVICES {
        let expected: usize = service
            .topics
            .iter()
            .map(|t| (SELLERS * per_seller(t)) as usize)
            .sum();
        let group_seen = &seen[service.group];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while count(group_seen) < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let verdict = check(service, group_seen);
        match &verdict {
            Ok(()) => println!(
                "{:<10} ({} member{}) saw all {expected} records of {}, each once, in seller order",
                service.group,
                service.members,
                if service.members == 1 { "" } else { "s" },
                service.topics.join(" and ")
            ),
            Err(why) => {
                failures += 1;
                println!("{:<10} FAILED: {why}", service.group);
            }
        }
    }
    members.abort_all();
    if failures > 0 {
        return Err(format!("{failures} service(s) did not see what they should").into());
    }
    Ok(())
}

fn per_seller(topic: &str) -> u32 {
    if topic == "orders" {
        ORDERS_PER_SELLER
    } else {
        REFUNDS_PER_SELLER
    }
}

async fn produce(bootstrap: &str, orders: &str, refunds: &str) -> Result<(), ClientError> {
    let producer = Producer::connect(ProducerConfig::new(bootstrap)).await?;
    let mut deliveries = Vec::new();
    for seq in 0..ORDERS_PER_SELLER {
        for seller in 0..SELLERS {
            let key = format!("seller-{seller}");
            let order = format!("{seq}");
            let record = ProducerRecord::new(orders, order.as_bytes()).key(key.as_bytes());
            deliveries.push(producer.send(record).await?);
            if seq < REFUNDS_PER_SELLER {
                let record = ProducerRecord::new(refunds, order.as_bytes()).key(key.as_bytes());
                deliveries.push(producer.send(record).await?);
            }
        }
    }
    for delivery in deliveries {
        delivery.await?;
    }
    Ok(())
}

/// One member: records every record's seller and sequence number as it comes.
async fn consume(
    mut consumer: Consumer,
    member: String,
    seen: Seen,
    assigned: Arc<Mutex<BTreeMap<String, usize>>>,
) -> Result<(), ClientError> {
    loop {
        let records = consumer.poll(Duration::from_millis(200)).await?;
        assigned
            .lock()
            .unwrap()
            .insert(member.clone(), consumer.assignment().len());
        let mut seen = seen.lock().unwrap();
        for record in records {
            let seller = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
            let seq: u32 = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                .parse()
                .unwrap_or(u32::MAX);
            let topic = record
                .topic
                .split('-')
                .next()
                .unwrap_or_default()
                .to_string();
            seen.entry((topic, seller.into_owned()))
                .or_default()
                .push(seq);
        }
    }
}

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().values().map(Vec::len).sum()
}

fn check(service: &Service, seen: &Seen) -> Result<(), String> {
    let seen = seen.lock().unwrap();
    for topic in service.topics {
        for seller in 0..SELLERS {
            let key = (topic.to_string(), format!("seller-{seller}"));
            let got = seen.get(&key).cloned().unwrap_or_default();
            let expected: Vec<u32> = (0..per_seller(topic)).collect();
            if got != expected {
                return Err(format!(
                    "{topic} of seller-{seller}: expected 0..{} in order, got {got:?}",
                    per_seller(topic)
                ));
            }
        }
    }
    Ok(())
}
