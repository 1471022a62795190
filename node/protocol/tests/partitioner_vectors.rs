//! The key partitioner against the test vectors PROTOCOL.md gives to other languages' clients,
//! read from the document itself so the two cannot drift apart.

use gregor_protocol::partitioner::{murmur2, partition_for_key, to_positive};

#[test]
fn the_documented_vectors_are_what_the_partitioner_computes() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../PROTOCOL.md"))
        .expect("PROTOCOL.md at the workspace root");
    let section = doc
        .split("## 10. Choosing a partition for a key")
        .nth(1)
        .expect("PROTOCOL.md has the partitioner section");
    let mut checked = 0;
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(key) = cells
            .get(1)
            .and_then(|c| c.strip_prefix('`')?.strip_suffix('`'))
        else {
            continue;
        };
        let number = |i: usize| cells[i].parse::<i64>().expect("a number");
        let key = key.as_bytes();
        assert_eq!(number(2), key.len() as i64);
        assert_eq!(i64::from(murmur2(key)), number(3), "murmur2 of {key:?}");
        assert_eq!(i64::from(to_positive(murmur2(key))), number(4));
        for (column, partitions) in [(5, 3), (6, 10), (7, 50)] {
            assert_eq!(
                i64::from(partition_for_key(key, partitions)),
                number(column),
                "{key:?} over {partitions} partitions"
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} vectors found in PROTOCOL.md");
}
