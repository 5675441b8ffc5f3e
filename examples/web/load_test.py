#!/usr/bin/env python3
"""Latency of ``GET /api/tasks/{id}`` under concurrent pollers while a narration runs (loopback only).

    python examples/web/load_test.py [--pollers 50] [--requests 200] [--max-seconds 60] [--url URL]
    python examples/web/load_test.py --narration-time [--pollers 8] [--sentences 100]

Without ``--url`` it starts the app itself (app.py on a free 127.0.0.1 port).
It queues one long narration (espeak-ng really speaking, a sentence every
0.2 s), then ``--pollers`` asyncio tasks each poll its status back to back,
``--requests`` times or until ``--max-seconds``, over one keep-alive
connection each. The pollers speak HTTP/1.1 over asyncio streams: a full
client such as httpx costs more CPU per request than the server does, and on
a small machine the figure would be the client's. It prints the latency
percentiles and writes them to target/web/load_test.json. A measurement, not a test: it asserts nothing
about time; it fails only if a request fails or the narration was not running
throughout.

``--narration-time`` measures the other side: how long one narration of
``--sentences`` sentences (no pause between them) takes from its start to its
end, by the task's own ``started_at``/``completed_at``, with no load and
while ``--pollers`` poll its status back to back, in three set-ups of the app:
the memory store with the handler in the API process, an SQLite store with the
handler in the API process, and an SQLite store with the handler in a worker
process of its own (``--worker-process``). Python pollers' requests hold the
API process's GIL, which a handler in that process needs too. It writes
target/web/load_test_narration.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Dict, List, Tuple
from urllib.parse import urlsplit

import httpx

from server_process import running_app

WEB_DIR = Path(__file__).resolve().parent
REPO_DIR = WEB_DIR.parent.parent
LOOPBACK_PREFIXES = ("http://127.", "http://localhost:", "http://[::1]:")
#: Long enough to outlast the load: 500 sentences, 0.2 s apart (cancelled at the end).
NARRATION = {"text": " ".join(f"Status polling sentence {n}." for n in range(1, 501)), "pace_seconds": 0.2}


def percentile(sorted_values: List[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class KeepAliveConnection:
    """One HTTP/1.1 connection that sends GETs one after another and reads each whole response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, base_url: str) -> "KeepAliveConnection":
        url = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        return cls(reader, writer, url.netloc)

    async def get(self, path: str) -> Tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(":", 1) for line in header_lines if ":" in line)
        lengths = [value for name, value in headers.items() if name.strip().lower() == "content-length"]
        if not lengths:
            raise RuntimeError(f"a response without Content-Length: {status_line}")
        body = await self.reader.readexactly(int(lengths[0]))
        return int(status_line.split()[1]), body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def poll(connection: KeepAliveConnection, path: str, requests: int,
               deadline: float) -> List[Tuple[float, int, str]]:
    """One poller: ``requests`` GETs back to back (or until ``deadline``); (seconds, HTTP status, task state) each."""
    samples = []
    for _ in range(requests):
        if time.perf_counter() > deadline:
            break
        started = time.perf_counter()
        code, body = await connection.get(path)
        elapsed = time.perf_counter() - started
        state = json.loads(body).get("status", "?") if code == 200 else "?"
        samples.append((elapsed, code, state))
    return samples


async def measure(base_url: str, pollers: int, requests: int, max_seconds: float) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        started = await http.post("/api/stories/load-test/narrate", json=NARRATION)
        started.raise_for_status()
        task = started.json()
        path = task["status_url"]
        connections = []
        try:
            async with aclosing(_events(http, task["events_url"])) as statuses:
                async for status in statuses:
                    if status["status"] != "PENDING":
                        break  # it runs: the load starts now
            connections = [await KeepAliveConnection.open(base_url) for _ in range(pollers)]
            await asyncio.gather(*(connection.get(path) for connection in connections))  # warm-up
            load_average = os.getloadavg()
            began = time.perf_counter()
            deadline = began + max_seconds
            results = await asyncio.gather(*(poll(connection, path, requests, deadline) for connection in connections))
            wall = time.perf_counter() - began
            final = (await http.get(path)).json()
        finally:
            for connection in connections:
                await connection.close()
            await http.delete(path)
    samples = [sample for result in results for sample in result]
    latencies = sorted(seconds * 1000 for seconds, _, _ in samples)
    responses: Dict[str, int] = {}
    for _, code, state in samples:
        responses[f"{code} {state}"] = responses.get(f"{code} {state}", 0) + 1
    return {
        "pollers": pollers,
        "requests": len(samples),
        "wall_seconds": round(wall, 3),
        "requests_per_second": round(len(samples) / wall, 1),
        "latency_ms": {name: round(percentile(latencies, fraction), 2)
                       for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))},
        "responses": responses,
        "segments_spoken_during_load": len(final["completed_segments"]),
        "narration_state_after_load": final["status"],
        "load_average_before": [round(value, 2) for value in load_average],
        "cpus": os.cpu_count(),
    }


async def _events(http: httpx.AsyncClient, path: str):
    async with http.stream("GET", path) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:])


#: The app set-ups --narration-time compares: a name, and app.py's options (the store file in a temporary folder).
SETUPS = [
    ("memory store, handler in the API process", lambda scratch: []),
    ("sqlite store, handler in the API process", lambda scratch: ["--store", f"sqlite:{scratch}/tasks.db"]),
    ("sqlite store, handler in a worker process",
     lambda scratch: ["--store", f"sqlite:{scratch}/tasks.db", "--worker-process"]),
]


async def timed_narration(base_url: str, pollers: int, sentences: int) -> dict:
    """One narration's run time while ``pollers`` poll its status back to back (none: no load)."""
    text = " ".join(f"Timed sentence number {n}." for n in range(1, sentences + 1))
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as http:
        started = await http.post(f"/api/stories/timed-{os.urandom(4).hex()}/narrate",
                                  json={"text": text, "pace_seconds": 0})
        started.raise_for_status()
        path = started.json()["status_url"]
        connections = [await KeepAliveConnection.open(base_url) for _ in range(pollers)]
        finished = asyncio.Event()
        counts = [0] * pollers

        async def poll_until_finished(index: int) -> None:
            while not finished.is_set():
                code, body = await connections[index].get(path)
                counts[index] += 1
                if code != 200:
                    raise RuntimeError(f"GET {path}: {code} {body[:200]!r}")

        load = [asyncio.create_task(poll_until_finished(index)) for index in range(pollers)]
        try:
            async with aclosing(_events(http, started.json()["events_url"])) as statuses:
                async for status in statuses:
                    if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                        break
        finally:
            finished.set()
            await asyncio.gather(*load, return_exceptions=True)
            for connection in connections:
                await connection.close()
    if status["status"] != "COMPLETED" or len(status["completed_segments"]) != sentences:
        raise RuntimeError(f"the timed narration ended {status['status']}: {status.get('error')}")
    seconds = status["completed_at"] - status["started_at"]
    return {"pollers": pollers, "narration_seconds": round(seconds, 3), "status_requests": sum(counts),
            "status_requests_per_second": round(sum(counts) / seconds, 1) if seconds > 0 else None}


def narration_time(pollers: int, sentences: int, json_path: Path) -> int:
    results = []
    for name, options in SETUPS:
        with tempfile.TemporaryDirectory(prefix="storyflow-load-") as scratch:
            with running_app(Path(scratch) / "media", options(scratch)) as base_url:
                asyncio.run(timed_narration(base_url, 0, 3))  # warm-up: the engine's first voice load
                quiet = asyncio.run(timed_narration(base_url, 0, sentences))
                loaded = asyncio.run(timed_narration(base_url, pollers, sentences))
        results.append({"setup": name, "no_load": quiet, "under_load": loaded})
        print(f"{name}: {sentences} sentences in {quiet['narration_seconds']} s alone, "
              f"{loaded['narration_seconds']} s under {pollers} pollers "
              f"({loaded['status_requests_per_second']} status req/s)", flush=True)
    report = {"sentences": sentences, "pollers": pollers, "cpus": os.cpu_count(),
              "load_average_before": [round(value, 2) for value in os.getloadavg()], "results": results}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {json_path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200, help="GETs per poller (default 200)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop polling after this long")
    parser.add_argument("--url", help="a running app (loopback only); default: start one")
    parser.add_argument("--json", type=Path, help="where the figures go (default target/web/load_test*.json)")
    parser.add_argument("--narration-time", action="store_true",
                        help="time one narration under the load instead, in the three app set-ups")
    parser.add_argument("--sentences", type=int, default=100, help="the timed narration's sentences (default 100)")
    args = parser.parse_args(argv)
    if args.narration_time:
        if not (0 <= args.pollers <= 200 and 1 <= args.sentences <= 500):
            parser.error("keep the load bounded: 0..200 pollers, 1..500 sentences")
        return narration_time(args.pollers, args.sentences,
                              args.json or REPO_DIR / "target" / "web" / "load_test_narration.json")
    args.json = args.json or REPO_DIR / "target" / "web" / "load_test.json"
    if not (1 <= args.pollers <= 200 and 1 <= args.requests <= 10_000 and 0 < args.max_seconds <= 300):
        parser.error("keep the load bounded: 1..200 pollers, 1..10000 requests each, at most 300 s")
    if args.url and not args.url.startswith(LOOPBACK_PREFIXES):
        parser.error("--url must be a loopback address (127.0.0.0/8, localhost or [::1])")

    with tempfile.TemporaryDirectory(prefix="storyflow-load-") as scratch:
        server = nullcontext(args.url) if args.url else running_app(Path(scratch) / "media")
        with server as base_url:
            report = asyncio.run(measure(base_url, args.pollers, args.requests, args.max_seconds))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    latency = report["latency_ms"]
    print(f"GET /api/tasks/{{id}}: {report['requests']} requests from {report['pollers']} concurrent pollers "
          f"in {report['wall_seconds']} s ({report['requests_per_second']} req/s) during a narration")
    print(f"latency ms: p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  max {latency['max']}")
    print(f"responses: {report['responses']}; {report['segments_spoken_during_load']} sentences spoken meanwhile; "
          f"load average before: {report['load_average_before']} on {report['cpus']} CPUs")
    print(f"written to {args.json}")
    all_running = set(report["responses"]) == {"200 PROCESSING"}
    if not all_running:
        print("load_test: some requests failed, or the narration was not running throughout", file=sys.stderr)
    return 0 if all_running else 1


if __name__ == "__main__":
    sys.exit(main())
