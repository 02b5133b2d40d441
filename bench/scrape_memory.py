"""Benchmark: the daemon's RSS under back-to-back ``/metrics`` scrapes of a large fleet, optionally against another
checkout of comfywatch in alternating runs.

Starts ``comfywatch simulate --targets N`` and ``comfywatch run`` watching its N targets (15 s interval, monitor
on, canary off, as bench/scale.py does), scrapes ``/metrics`` once per interval for ``--warm`` intervals, as
Prometheus would (the fleet's first polls ramp up over targets x 20 ms: 200 s at 10,000), then ``--scrapes``
times back to back, plain and gzip alternating, while a thread samples the daemon's ``VmRSS`` every 0.1 s. It
prints RSS before the scrapes, the largest sample during them and RSS after them, and the client's median
scrape time, plain and gzip.

With ``--against TREE`` (another commit's checkout, e.g. ``git worktree add /tmp/before REV``) each run of this
tree's daemon is followed by a run of TREE's, ``--runs`` times: the same machine load for both. TREE's daemon runs
with this environment's packages, against this tree's simulator.

    .venv/bin/python bench/scrape_memory.py [--targets 10000] [--warm 16] [--scrapes 14] [--runs 1]
                                            [--against TREE] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from scale import REPO, comfywatch, fleet_config, rss_bytes, scrape, simulator, stop_children_on_sigterm

MB = 2**20
INTERVAL = 15.0


@dataclass
class Run:
    tree: str
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    body_mb: float
    plain_ms: float
    gzip_ms: float

    @property
    def rise_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb


class Sampler:
    """The largest ``VmRSS`` of a process, sampled every 0.1 s on a thread while in the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._done.wait(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


async def measure(tree: Path, pid: int, base: str, warm: int, scrapes: int) -> Run:
    async with aiohttp.ClientSession() as session:
        for _ in range(warm):
            await scrape(session, base, parse=False)
            await asyncio.sleep(INTERVAL)
        before = rss_bytes(pid)
        plain: list[float] = []
        gzipped: list[float] = []
        size = 0
        with Sampler(pid) as sampler:
            for index in range(scrapes):
                result = await scrape(session, base, gzip=index % 2 == 1, parse=False)
                (gzipped if index % 2 else plain).append(result.seconds)
                if index % 2 == 0:
                    size = result.size
        after = rss_bytes(pid)
    return Run(str(tree), before / MB, sampler.peak / MB, after / MB, size / MB,
               statistics.median(plain) * 1000, statistics.median(gzipped) * 1000)


def run_once(tree: Path, targets: int, warm: int, scrapes: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="comfywatch-scrape-memory-") as tmp:
        workdir = Path(tmp)
        with simulator(workdir, targets) as sim_url, comfywatch(
            workdir, fleet_config(sim_url, targets, INTERVAL, websocket_monitor=True), tree=tree
        ) as (process, base):
            return asyncio.run(measure(tree, process.pid, base, warm, scrapes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--warm", type=int, default=16, help="intervals of one scrape each before the scrapes")
    parser.add_argument("--scrapes", type=int, default=14, help="back-to-back scrapes, plain and gzip alternating")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--against", type=Path, help="another checkout of comfywatch, run after each of this one")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    if args.scrapes < 2:
        parser.error("--scrapes must be at least 2 (one plain, one gzip)")
    stop_children_on_sigterm()
    trees = [REPO] + ([args.against.resolve()] if args.against else [])
    runs: list[Run] = []
    print(f"{args.targets} targets, {args.warm} intervals of {INTERVAL:g} s scraped once, then {args.scrapes} "
          "scrapes back to back (plain and gzip alternating); MB of 2^20 bytes", flush=True)
    print(f"{'tree':40} {'RSS before':>11} {'peak':>8} {'rise':>7} {'after':>8} {'body':>7} "
          f"{'plain ms':>9} {'gzip ms':>8}", flush=True)
    for _ in range(args.runs):
        for tree in trees:
            run = run_once(tree, args.targets, args.warm, args.scrapes)
            runs.append(run)
            print(f"{run.tree[-40:]:40} {run.rss_before_mb:11.1f} {run.rss_peak_mb:8.1f} {run.rise_mb:7.1f} "
                  f"{run.rss_after_mb:8.1f} {run.body_mb:7.1f} {run.plain_ms:9.0f} {run.gzip_ms:8.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(run) | {"rise_mb": run.rise_mb} for run in runs], indent=2))


if __name__ == "__main__":
    main()
