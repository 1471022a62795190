//! Table-driven placement tests (`testdata/placement/*.txt`).
//!
//! Commands: `nodes 1:rackA 2 3:rackB` (the candidates), `load 1=R/L ...` (cluster replicas and
//! leaders per node before placing), `place NAME partitions=P rf=R` (prints each partition's
//! replicas and the topic's replica and leader counts per node),
//! `replace NAME P current=1,2,3 leaving=2` (the replacement for a leaving replica).

use super::*;
use crate::testdata::{list, nodes, run_file, Args};
use std::fmt::Write as _;

#[derive(Default)]
struct Harness {
    candidates: Vec<Candidate>,
    cluster: Load,
}

impl Harness {
    fn run(&mut self, input: &[String]) -> String {
        let args = Args::parse(&input[0]);
        match args.word(0) {
            "nodes" => {
                self.candidates = args.words[1..]
                    .iter()
                    .map(|spec| {
                        let (node, rack) = spec
                            .split_once(':')
                            .map_or((spec.as_str(), None), |(n, r)| (n, Some(r.to_string())));
                        Candidate {
                            node: NodeId(node.parse().expect("node")),
                            rack,
                        }
                    })
                    .collect();
                "ok".into()
            }
            "load" => {
                self.cluster = Load::default();
                for spec in &input[0].split_whitespace().skip(1).collect::<Vec<_>>() {
                    let (node, counts) = spec.split_once('=').expect("N=R/L");
                    let (replicas, leaders) = counts.split_once('/').expect("R/L");
                    let node = NodeId(node.parse().expect("node"));
                    self.cluster
                        .replicas
                        .insert(node, replicas.parse().expect("replicas"));
                    self.cluster
                        .leaders
                        .insert(node, leaders.parse().expect("leaders"));
                }
                "ok".into()
            }
            "place" => {
                let placed = place_topic(
                    args.word(1),
                    args.num("partitions"),
                    args.num("rf"),
                    &self.candidates,
                    &self.cluster,
                );
                match placed {
                    Err(error) => format!("error {}: {}", error.code.name(), error.message),
                    Ok(assignment) => show(&assignment),
                }
            }
            "replace" => {
                let current = nodes(args.get("current").expect("current="));
                let leaving = NodeId(args.num("leaving"));
                let kept: Vec<NodeId> = current.iter().copied().filter(|n| *n != leaving).collect();
                let placer = Placer::new(
                    args.word(1),
                    &self.candidates,
                    self.cluster.clone(),
                    Load::default(),
                );
                let partition = PartitionId(args.word(2).parse().expect("partition"));
                match placer.choose(partition, &kept, &[leaving], false) {
                    Some(node) => format!("{node}"),
                    None => "none".into(),
                }
            }
            other => panic!("unknown command {other}"),
        }
    }
}

fn show(assignment: &[Vec<NodeId>]) -> String {
    let mut out = String::new();
    let mut replicas: BTreeMap<NodeId, u32> = BTreeMap::new();
    let mut leaders: BTreeMap<NodeId, u32> = BTreeMap::new();
    for (p, set) in assignment.iter().enumerate() {
        let _ = writeln!(out, "p{p} {}", list(set));
        for node in set {
            *replicas.entry(*node).or_default() += 1;
        }
        *leaders.entry(set[0]).or_default() += 1;
    }
    let counts = |m: &BTreeMap<NodeId, u32>| {
        m.iter()
            .map(|(n, c)| format!("{n}={c}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(out, "replicas {}", counts(&replicas));
    let _ = write!(out, "leaders {}", counts(&leaders));
    out
}

#[test]
fn new_topics() {
    let mut harness = Harness::default();
    run_file("testdata/placement/new_topics.txt", |input| {
        harness.run(input)
    });
}

#[test]
fn racks_and_replacements() {
    let mut harness = Harness::default();
    run_file("testdata/placement/racks.txt", |input| harness.run(input));
}

/// Over many topics of many shapes, counts stay even per topic and across the cluster.
#[test]
fn counts_stay_even_across_many_topics() {
    for nodes_count in 1..=7u64 {
        let candidates: Vec<Candidate> = (1..=nodes_count)
            .map(|n| Candidate {
                node: NodeId(n),
                rack: None,
            })
            .collect();
        let mut cluster = Load::default();
        let shapes = [1u32, 3, 7, 12, 50, 5, 2]
            .iter()
            .chain(&[4, 9, 1, 1, 6, 20, 3, 2, 11, 1, 8, 2, 2, 5, 30]);
        for (t, partitions) in shapes.enumerate() {
            let factor = (1 + t as u16 % 3).min(nodes_count as u16);
            let name = format!("topic-{t}");
            let assignment =
                place_topic(&name, *partitions, factor, &candidates, &cluster).unwrap();
            let mut topic = Load::default();
            for set in &assignment {
                let distinct: BTreeSet<_> = set.iter().collect();
                assert_eq!(distinct.len(), set.len(), "{set:?} repeats a node");
                for node in set {
                    topic.add_replica(*node);
                    cluster.add_replica(*node);
                }
                *topic.leaders.entry(set[0]).or_default() += 1;
                *cluster.leaders.entry(set[0]).or_default() += 1;
            }
            // Per topic within one; across the cluster within two, where one topic's even
            // spread and the cluster's can pull apart.
            for (load, leaders_bound, replicas_bound) in [(&topic, 1, 1), (&cluster, 2, 2)] {
                for (counts, bound) in [
                    (&load.leaders, leaders_bound),
                    (&load.replicas, replicas_bound),
                ] {
                    let all: Vec<u32> = candidates
                        .iter()
                        .map(|c| counts.get(&c.node).copied().unwrap_or(0))
                        .collect();
                    let (min, max) = (all.iter().min().unwrap(), all.iter().max().unwrap());
                    assert!(
                        max - min <= bound,
                        "{nodes_count} nodes, {name}: uneven {all:?}"
                    );
                }
            }
            // Same inputs, same placement.
            let again = place_topic(&name, *partitions, factor, &candidates, &Load::default());
            let fresh = place_topic(&name, *partitions, factor, &candidates, &Load::default());
            assert_eq!(again.unwrap(), fresh.unwrap());
        }
    }
}
