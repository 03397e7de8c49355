"""RSS of the broker process under sustained Apple webhook load (wrk -c32), and its slope.

``python -m bench.soak [--seconds 600] [--out bench/results/soak.json]`` (``make bench-soak``,
``SOAK_S=120 make bench-soak`` for a short run). The broker runs in its own process exactly as
in bench/http.py; RSS (VmRSS from /proc) is sampled every ``--every`` seconds while wrk keeps 32
connections busy. The slope is a least-squares fit over the samples after the first minute
(warm-up: pools, caches and the Kafka producer's buffers fill first), in MiB per 10 minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.http import TOKEN, WRK_SCRIPT, require_tools, servers
from bench.run import _commit, _machine, kafka


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _slope_per_10min(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return cov / var * 600 if var else 0.0


def soak(bootstrap: str, seconds: int, every_s: float) -> dict[str, Any]:
    wrk = require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bench-soak-"))
    with servers(bootstrap, workdir) as started:
        broker = next(s for s in started if s.name == "broker")
        url = f"{broker.url}/apple/bench/notifications"
        args = [wrk, "-t1", "-c32", f"-d{seconds}s", "--timeout=5s", "-s", str(WRK_SCRIPT), url,
                "--", TOKEN, f"soak{uuid.uuid4().hex[:6]}"]  # fmt: skip
        load = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        start = time.monotonic()
        samples: list[tuple[float, float]] = []
        while load.poll() is None:
            samples.append((time.monotonic() - start, _rss_mib(broker.process.pid)))
            time.sleep(every_s)
        out = load.communicate()[0]
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    summary = orjson.loads(line.removeprefix("WRK_JSON "))
    settled = [(t, r) for t, r in samples if t >= min(60.0, seconds / 3)]
    return {
        "seconds": seconds,
        "requests": summary["requests"],
        "non_2xx": summary["status"],
        "rss_mib_first": round(samples[0][1], 1),
        "rss_mib_after_warmup": round(settled[0][1], 1) if settled else None,
        "rss_mib_last": round(samples[-1][1], 1),
        "slope_mib_per_10min_after_warmup": round(_slope_per_10min(settled), 2),
        "samples": [(round(t), round(r, 1)) for t, r in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--every", type=float, default=5.0, help="RSS sample interval (s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak.json"))
    args = parser.parse_args(argv)
    with kafka() as bootstrap:
        result = soak(bootstrap, args.seconds, args.every)
    result |= {"machine": _machine(), "source": _commit(), "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    print(
        f"{result['requests']:,} requests in {args.seconds}s; RSS {result['rss_mib_first']} -> "
        f"{result['rss_mib_last']} MiB; slope after warm-up "
        f"{result['slope_mib_per_10min_after_warmup']} MiB/10 min; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
