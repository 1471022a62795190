//! The quickstart from the README, through the real binary: create a topic, produce, consume
//! with a group, see the lag, rewind, and the errors a person meets on the way.

use gregor_tests::{failure, success, Node};

#[test]
fn quickstart_topic_produce_consume_group_and_rewind() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());

    success(&node.cli(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "3",
        "--retention",
        "7d",
    ]));
    let list = success(&node.cli(&["topic", "list"]));
    assert_eq!(list.trim(), "orders");
    let describe = success(&node.cli(&["topic", "describe", "orders"]));
    assert!(describe.contains("Partitions: 3"), "{describe}");

    let input: String = (0..30)
        .map(|i| format!("seller-{}:order-{i}\n", i % 4))
        .collect();
    let produced = node.cli_with_stdin(
        &["produce", "orders", "--key-separator", ":", "--acks", "all"],
        input.as_bytes(),
    );
    success(&produced);

    let consumed = success(&node.cli(&[
        "consume", "orders", "--group", "billing", "--from", "earliest", "--max", "30", "--format",
        "%k %s\n",
    ]));
    let mut lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), 30, "{consumed}");
    // Per-key order holds: the orders of one seller come back in the order they were sent.
    for seller in 0..4 {
        let key = format!("seller-{seller} ");
        let seen: Vec<usize> = lines
            .iter()
            .filter(|l| l.starts_with(&key))
            .map(|l| l.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(seen, sorted, "seller {seller} out of order");
    }
    lines.sort_unstable();

    let lag = success(&node.cli(&["group", "describe", "billing"]));
    assert!(lag.contains("orders"), "{lag}");
    // Rows: TOPIC PARTITION COMMITTED-OFFSET LOG-END-OFFSET LAG MEMBER, one per partition.
    let rows: Vec<&str> = lag.lines().filter(|l| l.starts_with("orders ")).collect();
    assert_eq!(rows.len(), 3, "one row per partition: {lag}");
    for line in rows {
        let lag_column = line.split_whitespace().nth(4);
        assert_eq!(
            lag_column,
            Some("0"),
            "lag should be 0 after consuming everything: {line}"
        );
    }

    // Nothing new: the group resumes where it stopped.
    let again = node.cli(&[
        "consume",
        "orders",
        "--group",
        "billing",
        "--max",
        "1",
        "--timeout-ms",
        "500",
    ]);
    assert!(String::from_utf8_lossy(&again.stdout).trim().is_empty());

    // Rewind by five hours (all records are newer), and re-read everything.
    success(&node.cli(&[
        "group",
        "reset",
        "billing",
        "--topic",
        "orders",
        "--by-duration",
        "5h",
    ]));
    let replay = success(&node.cli(&[
        "consume", "orders", "--group", "billing", "--max", "30", "--format", "%s\n",
    ]));
    assert_eq!(replay.lines().count(), 30);

    success(&node.cli(&["topic", "delete", "orders"]));
    assert!(success(&node.cli(&["topic", "list"])).trim().is_empty());
}

#[test]
fn errors_say_what_to_do_next() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    let missing = failure(&node.cli(&["consume", "nope", "--max", "1"]));
    assert!(missing.contains("gregor topic create nope"), "{missing}");
    let bad_name = failure(&node.cli(&["topic", "create", "bad name"]));
    assert!(bad_name.contains("invalid topic name"), "{bad_name}");
    success(&node.cli(&["topic", "create", "dup"]));
    let dup = failure(&node.cli(&["topic", "create", "dup"]));
    assert!(dup.contains("already exists"), "{dup}");
    let partitions = failure(&node.cli(&["topic", "create", "many", "--partitions", "10001"]));
    assert!(partitions.contains("1 to 10000"), "{partitions}");

    let unreachable = node.cli(&["topic", "list", "--bootstrap", "127.0.0.1:1"]);
    let message = failure(&unreachable);
    assert!(
        message.contains("gregor serve") || message.contains("--bootstrap"),
        "{message}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    success(&node.cli(&["topic", "create", "t"]));
    success(&node.cli_with_stdin(&["produce", "t"], b"one\ntwo\n"));
    let address = node.address.clone();
    let (status, _) = node.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    let node = Node::start(dir.path(), &address);
    let out = success(&node.cli(&["consume", "t", "--from", "earliest", "--max", "2"]));
    assert_eq!(out, "one\ntwo\n");
}

#[test]
fn records_produced_compressed_read_back_and_list_offsets_by_time_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_fresh(dir.path());
    success(&node.cli(&["topic", "create", "z"]));
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let input = format!("{codec}-1\n{codec}-2\n");
        success(&node.cli_with_stdin(&["produce", "z", "--compression", codec], input.as_bytes()));
    }
    let out = success(&node.cli(&["consume", "z", "--from", "earliest", "--max", "8"]));
    let values: Vec<&str> = out.lines().collect();
    assert_eq!(
        values,
        ["gzip-1", "gzip-2", "snappy-1", "snappy-2", "lz4-1", "lz4-2", "zstd-1", "zstd-2"]
    );
    // A time lookup walks the records of a stored (compressed) batch.
    let out = success(&node.cli(&["consume", "z", "--from=-1h", "--max", "1"]));
    assert_eq!(out.trim(), "gzip-1");
}
