#!/usr/bin/env python3
"""The disk's own fdatasync latency, the floor under any acks=all latency (BENCHMARKS.md,
"The fsync floor"). Writes SIZE bytes then fdatasyncs, COUNT times, paced to RATE syncs/s,
into (a) a file written in full beforehand, so a sync carries data only, and (b) a file
growing at its end, as a fresh journal does. Prints p50 / p99 / p99.9 / max in ms for each, and
how many syncs took over 10 ms.
    python3 tests/bench/fsync_floor.py [DIR] [COUNT] [RATE] [SIZE]
Not part of the test suite."""
import os, sys, tempfile, time

directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 1000.0
size = int(sys.argv[4]) if len(sys.argv) > 4 else 4096


def measure(path, prewrite):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if prewrite:
            block = b"\0" * (1 << 20)
            for _ in range((count * size) // len(block) + 1):
                os.write(fd, block)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        payload = os.urandom(size)
        samples = []
        next_at = time.perf_counter()
        for _ in range(count):
            os.write(fd, payload)
            start = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - start) * 1000.0)
            next_at += 1.0 / rate
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        samples.sort()
        def at(q):
            return samples[min(len(samples) - 1, int(q * len(samples)))]
        return at(0.5), at(0.99), at(0.999), samples[-1], sum(1 for s in samples if s > 10.0)
    finally:
        os.close(fd)
        os.unlink(path)


for label, prewrite in (("written beforehand", True), ("growing", False)):
    p50, p99, p999, worst, slow = measure(os.path.join(directory, "fsync-floor.dat"), prewrite)
    print(f"{label:>19}: p50 {p50:.3f}  p99 {p99:.3f}  p99.9 {p999:.3f}  max {worst:.3f} ms,"
          f" {slow} over 10 ms  ({count} x {size} B at {rate:.0f}/s)")
