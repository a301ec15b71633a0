"""The bridge into a three-node cluster through `zlogcollect topology`'s shards, and the brokers' CPU.

``python -m benchmarks.cluster [--records N] [--runs R] [--shards S]``: starts a private
three-node cluster (``RabbitCluster``), declares the sharded topology (consistent-hash
exchange, quorum queues with single active consumer), then per run pre-queues N records
of 8 sources at a SIGSTOPped ``zlogcollect bridge`` on node 1 and times from SIGCONT until
the queues hold them all and until the bridge counted every confirm. The brokers' CPU is
the three beam processes' user + system time from /proc over that interval, also with
what the idle nodes burn (measured for 5 s before each run) subtracted. Not part of
``python -m benchmarks`` (a cluster takes 30-60 s to start); docs/SCALING.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pika
import zmq

from benchmarks.bridge import prime_bridge
from benchmarks.common import BenchError, counters, progress, scratch, tcp_endpoint, wait_until, zlogcollect
from benchmarks.workers import MESSAGE
from zlogcollect.testing.rabbitmq import RabbitCluster

SOURCES = 8
PREFIX = "bench.shard"


def beam_cpu(cluster: RabbitCluster) -> float:
    """CPU seconds (user + system) the cluster's VMs have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for node in cluster.nodes:
        pid = node.layout.beam_pid()
        if pid is None:
            continue
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class Shards:
    def __init__(self, url: str, shards: int) -> None:
        self.queues = [f"{PREFIX}.{i}" for i in range(shards)]
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        self._channel = self._connection.channel()

    def depth(self) -> int:
        return sum(
            int(self._channel.queue_declare(q, passive=True).method.message_count) for q in self.queues
        )

    def purge(self) -> None:
        for queue in self.queues:
            self._channel.queue_purge(queue)

    def close(self) -> None:
        self._connection.close()


def one_run(cluster: RabbitCluster, shards: Shards, n: int) -> dict[str, float]:
    records = [[f"app{i % SOURCES}.INFO.db".encode(), (MESSAGE % i + "\n").encode()] for i in range(n)]
    with scratch("cluster") as tmp:
        endpoint = tcp_endpoint()
        proc = zlogcollect("bridge", ["--bind", endpoint, "--amqp-url", cluster.urls[0]], tmp)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            probes = prime_bridge(proc, sock, shards)
            # What three idle nodes burn anyway (timers, Raft ticks, the stats): subtracted below.
            idle0, i0 = beam_cpu(cluster), time.perf_counter()
            time.sleep(5)
            idle_rate = (beam_cpu(cluster) - idle0) / (time.perf_counter() - i0)
            for frames in records:
                sock.send_multipart(frames)
            cpu0 = beam_cpu(cluster)
            t0 = time.perf_counter()
            proc.send(signal.SIGCONT)
            t1 = wait_until(lambda: shards.depth() >= n, 300, f"{n} records in the shards", interval=0.02)

            def confirmed() -> bool:
                return int(counters(proc)["amqp"].get("delivered", 0)) >= n + probes

            t2 = wait_until(confirmed, 60, "the bridge's confirms", interval=0.02)
            cpu = beam_cpu(cluster) - cpu0
            busy = max(cpu - idle_rate * (t2 - t0), 0.0)
            return {
                "queued_per_s": n / (t1 - t0),
                "confirmed_per_s": n / (t2 - t0),
                "broker_cpu_s": cpu,
                "broker_idle_cores": idle_rate,
                "broker_cores_per_10k_per_s": cpu / n * 10_000,
                "broker_cores_per_10k_per_s_idle_subtracted": busy / n * 10_000,
            }
        finally:
            sock.close(0)
            ctx.term()
            proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument(
        "--nodes", type=int, default=3, help="cluster size; 1 gives the same queues without replication"
    )
    args = parser.parse_args(argv)
    progress(f"cluster: starting {args.nodes} RabbitMQ node(s)")
    with RabbitCluster(size=args.nodes) as cluster:
        cluster.start()
        progress(f"cluster: up in {cluster.last_start_seconds:.1f} s")
        declared = subprocess.run(
            [sys.executable, "-m", "zlogcollect", "topology", "declare", cluster.urls[0],
             "--shards", str(args.shards), "--queue-prefix", PREFIX],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if declared.returncode != 0:
            raise BenchError(f"topology declare failed: {declared.stderr}")
        shards = Shards(cluster.urls[-1], args.shards)
        try:
            runs = []
            for index in range(args.runs):
                result = one_run(cluster, shards, args.records)
                progress(
                    f"cluster run {index + 1}: {json.dumps({k: round(v, 3) for k, v in result.items()})}"
                )
                runs.append(result)
        finally:
            shards.close()
        summary = {
            "nodes": args.nodes,
            "start_seconds": cluster.last_start_seconds,
            "records": args.records,
            "shards": args.shards,
            "runs": runs,
            "median": {key: statistics.median(r[key] for r in runs) for key in runs[0]},
        }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
