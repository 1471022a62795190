//! Sends a few keyed records to a topic, compressed with zstd, and waits for each one's
//! acknowledgement.
//!
//! ```sh
//! gregor serve &                                    # a broker on 127.0.0.1:9092
//! cargo run -p gregor-client --example produce -- 127.0.0.1:9092 orders
//! ```

use gregor_client::protocol::batch::Compression;
use gregor_client::{Admin, ClientError, NewTopic, Producer, ProducerConfig, ProducerRecord};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());

    let admin = Admin::connect(gregor_client::ClientConfig::new(&bootstrap)).await?;
    match admin
        .create_topic(NewTopic::new(&topic).partitions(3))
        .await
    {
        Ok(_) => println!("created topic {topic} with 3 partitions"),
        Err(e)
            if e.code() == Some(gregor_client::protocol::api::ErrorCode::TOPIC_ALREADY_EXISTS) => {}
        Err(e) => return Err(e),
    }

    let config = ProducerConfig::new(&bootstrap)
        .linger_ms(5)
        .compression(Compression::Zstd);
    let producer = Producer::connect(config).await?;
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let key = format!("customer-{}", i % 4);
        let value = format!("{{\"order\":{i},\"state\":\"paid\"}}");
        // `send` copies the bytes into the open batch and returns at once.
        let record = ProducerRecord::new(&topic, value.as_bytes()).key(key.as_bytes());
        let delivery = producer.send(record).await?;
        deliveries.push((key, delivery));
    }
    for (key, delivery) in deliveries {
        let stored = delivery.await?;
        println!(
            "{key} -> partition {} offset {:?}",
            stored.partition, stored.offset
        );
    }
    Ok(())
}
