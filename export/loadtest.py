"""Load test of the `export.serve` REST service: latency percentiles, throughput, errors.

Usage:
    python -m export.loadtest --url http://127.0.0.1:8080 --images DIR
        [--concurrency 4] [--requests 100] [--timeout-s 300] [--pid PID]
        [--direct EXPORT [--rounds 5]] [--json OUT] [--overwrite]

Sends `--requests` `POST /predict` requests, the image files of `DIR` in turn as raw
bodies (Content-Type from the extension), from `--concurrency` threads, each holding
one keep-alive `http.client` connection. Only loopback URLs are accepted (127.0.0.0/8,
::1, localhost): this measures a service on this machine, not someone else's. Bounded in
count and time: no request starts after `--timeout-s`, and each waits at most that long
(a request cut short is an error; one never sent is counted as not sent).

Prints p50 / p95 / p99 latency in milliseconds (from the start of a request to the end
of its response), throughput (completed requests per second of wall time) and the error
count (non-200 answers and exceptions). `--pid` adds the server process's resident
memory (VmRSS) before and after, and its peak (VmHWM), from /proc.

`--direct EXPORT` also runs the same image files through ONNX Runtime directly, in this
process: each call decodes the file's bytes (as any client of a model must) and runs
one InferenceSession shared by the same number of threads, one image per call. It prints
the service's overhead at p50 (service / direct): HTTP, JSON, the hops between threads
and micro-batching. The two take turns in `--rounds` rounds (each a share of
`--requests`), so a change in background load on a shared machine touches both alike.
Exit 0 when every request succeeded, 1 otherwise.
"""
import argparse
import dataclasses
import http.client
import ipaddress
import json
import math
import os
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from effdet_tf.cli import make_parser, run_cli
from effdet_tf.errors import ConfigError
from export.io import check_output, write_text_atomic

MAX_CONCURRENCY = 256
MAX_REQUESTS = 1_000_000
DEFAULT_ROUNDS = 5
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp", ".bmp": "image/bmp"}


@dataclasses.dataclass
class Result:
    """The figures of one run (service or direct).

    Attributes:
        latencies_ms: per completed request, in completion order.
        errors: non-200 answers and exceptions.
        not_sent: requests never started (the time limit came first).
        wall_s: seconds from the first start to the last end.
        first_error: the first error's description ("" when none).
    """

    latencies_ms: List[float]
    errors: int
    not_sent: int
    wall_s: float
    first_error: str = ""

    def merged(self, other: "Result") -> "Result":
        """This result followed by another one (latencies joined, counts and time added)."""
        return Result(self.latencies_ms + other.latencies_ms, self.errors + other.errors,
                      self.not_sent + other.not_sent, self.wall_s + other.wall_s,
                      self.first_error or other.first_error)

    def summary(self) -> Dict[str, Any]:
        """`{completed, errors, not_sent, wall_s, throughput_rps, p50_ms, p95_ms, p99_ms,
        first_error}`; the percentiles are None when nothing completed."""
        values = np.asarray(self.latencies_ms, np.float64)
        pcts = (np.percentile(values, [50, 95, 99]).tolist() if values.size
                else [None] * 3)
        return {"completed": int(values.size), "errors": self.errors,
                "not_sent": self.not_sent, "wall_s": round(self.wall_s, 3),
                "throughput_rps": values.size / self.wall_s if self.wall_s > 0 else 0.0,
                "p50_ms": pcts[0], "p95_ms": pcts[1], "p99_ms": pcts[2],
                "first_error": self.first_error}


def check_url(url: str) -> Tuple[str, int, str]:
    """Parses a loopback http URL.

    Args:
        url: e.g. `http://127.0.0.1:8080`.

    Returns:
        `(host, port, base path)`.

    Raises:
        ConfigError: not http, or the host is not a loopback address.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"--url {url}: give an http URL such as http://127.0.0.1:8080")
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"--url {url}: only loopback addresses (127.0.0.1, ::1, localhost) "
                          "are load-tested")
    try:
        port = parts.port or 80
    except ValueError as err:
        raise ConfigError(f"--url {url}: bad port ({err})") from err
    return host, port, parts.path.rstrip("/")


def read_bodies(folder: str) -> List[Tuple[str, bytes, str]]:
    """The image files directly in a folder (sorted): `(name, bytes, content type)`.

    Raises:
        ConfigError: no such folder, or no image file in it.
    """
    if not os.path.isdir(folder):
        raise ConfigError(f"--images {folder} is not a folder")
    bodies = []
    for name in sorted(os.listdir(folder)):
        kind = CONTENT_TYPES.get(os.path.splitext(name)[1].lower())
        path = os.path.join(folder, name)
        if kind and not name.startswith(".") and os.path.isfile(path):
            with open(path, "rb") as stream:
                bodies.append((name, stream.read(), kind))
    if not bodies:
        raise ConfigError(f"--images {folder} holds no image file "
                          f"({', '.join(sorted(CONTENT_TYPES))})")
    return bodies


def run_workers(count: int, concurrency: int, timeout_s: float,
                make_call: Callable[[], Callable[[int], Optional[str]]]) -> Result:
    """Runs `count` calls from `concurrency` threads, each its own caller, until done or late.

    Args:
        count: calls in all.
        concurrency: threads.
        timeout_s: no call starts after this many seconds.
        make_call: makes one thread's caller: a function of the call index returning
            None on success or an error description (exceptions count as errors too).

    Returns:
        The `Result`.
    """
    lock = threading.Lock()
    state = {"next": 0, "errors": 0, "first_error": ""}
    latencies: List[float] = []
    start = time.perf_counter()
    deadline = start + timeout_s

    def worker() -> None:
        call = make_call()
        while True:
            with lock:
                index = state["next"]
                if index >= count or time.perf_counter() > deadline:
                    return
                state["next"] += 1
            began = time.perf_counter()
            try:
                error = call(index)
            except Exception as err:  # pylint: disable=broad-except  # every failure counts
                error = f"{type(err).__name__}: {err}"
            elapsed = (time.perf_counter() - began) * 1000.0
            with lock:
                if error is None:
                    latencies.append(elapsed)
                else:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or error

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(latencies, state["errors"], count - state["next"],
                  time.perf_counter() - start, state["first_error"])


def service_caller(url: str, bodies: Sequence[Tuple[str, bytes, str]],
                   timeout_s: float) -> Callable[[], Callable[[int], Optional[str]]]:
    """Per-thread callers posting `bodies[i % len]` to `<url>/predict` on one connection."""
    host, port, base = check_url(url)

    def make_call() -> Callable[[int], Optional[str]]:
        holder: Dict[str, http.client.HTTPConnection] = {}

        def call(index: int) -> Optional[str]:
            name, body, kind = bodies[index % len(bodies)]
            if "conn" not in holder:
                holder["conn"] = http.client.HTTPConnection(host, port, timeout=timeout_s)
            conn = holder["conn"]
            try:
                conn.request("POST", f"{base}/predict", body=body,
                             headers={"Content-Type": kind})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                del holder["conn"]
                raise
            if response.status != 200:
                return f"{name}: HTTP {response.status} {data[:200]!r}"
            return None

        return call

    return make_call


def direct_caller(export_path: str, bodies: Sequence[Tuple[str, bytes, str]]
                  ) -> Callable[[], Callable[[int], Optional[str]]]:
    """Callers decoding `bodies[i % len]` and running it through one shared ONNX Runtime
    session."""
    from export import serve_model  # pylint: disable=import-outside-toplevel  # --direct only

    backend = serve_model.load_backend(serve_model.find_export(export_path, "onnx"))
    backend.run(serve_model.decode_image(bodies[0][1])[None])  # warm-up, as the service's

    def make_call() -> Callable[[int], Optional[str]]:
        def call(index: int) -> Optional[str]:
            backend.run(serve_model.decode_image(bodies[index % len(bodies)][1])[None])

        return call

    return make_call


def rss_kib(pid: int) -> Dict[str, int]:
    """`{"VmRSS", "VmHWM"}` of a process in KiB, from /proc/PID/status.

    Raises:
        ConfigError: no such process (or not readable).
    """
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except OSError as err:
        raise ConfigError(f"--pid {pid}: cannot read /proc/{pid}/status ({err.strerror})") from err
    found = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def load_test(url: str, images: str, *, concurrency: int = 4, requests: int = 100,
              timeout_s: float = 300.0, pid: Optional[int] = None,
              direct: Optional[str] = None, rounds: int = DEFAULT_ROUNDS) -> Dict[str, Any]:
    """Runs the load test (and the direct comparison); returns the figures.

    Args:
        url: the service's loopback base URL.
        images: a folder of image files, sent in turn.
        concurrency: concurrent requests (threads).
        requests: requests in all.
        timeout_s: no request starts after this many seconds; each waits at most as long.
        pid: the server process, for its memory before and after.
        direct: an export (`.onnx` file or export folder) to time ONNX Runtime directly.
        rounds: with `direct`, service and direct take turns this many times (at most
            `requests`), each turn a share of `requests`.

    Returns:
        `{"url", "concurrency", "requests", "images", "service": summary, "rss_kib":
        {"before", "after"} (with pid), "direct": summary and "overhead_p50" (with
        direct)}`.

    Raises:
        ConfigError: a non-loopback URL, bad bounds, no images, an unreadable pid.

    Example:
        >>> load_test("http://127.0.0.1:8080", "photos", concurrency=4, requests=200)
    """
    check_url(url)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    if not 1 <= requests <= MAX_REQUESTS:
        raise ConfigError(f"--requests must be 1..{MAX_REQUESTS}, got {requests}")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ConfigError(f"--timeout-s must be > 0, got {timeout_s}")
    if rounds < 1:
        raise ConfigError(f"--rounds must be >= 1, got {rounds}")
    bodies = read_bodies(images)
    rounds = min(rounds, requests) if direct else 1
    report: Dict[str, Any] = {"url": url, "concurrency": concurrency, "requests": requests,
                              "images": len(bodies), "rounds": rounds}
    callers = {"service": service_caller(url, bodies, timeout_s)}
    if direct:
        callers["direct"] = direct_caller(direct, bodies)
    before = rss_kib(pid) if pid is not None else None
    deadline = time.monotonic() + timeout_s
    results: Dict[str, Result] = {}
    for turn in range(rounds):
        share = requests // rounds + (turn < requests % rounds)
        for mode, caller in callers.items():
            left = deadline - time.monotonic()
            result = (run_workers(share, concurrency, left, caller) if left > 0
                      else Result([], 0, share, 0.0))
            results[mode] = results[mode].merged(result) if mode in results else result
    if before is not None:
        report["rss_kib"] = {"before": before, "after": rss_kib(pid)}
    for mode, result in results.items():
        report[mode] = result.summary()
    if direct and report["service"]["p50_ms"] and report["direct"]["p50_ms"]:
        report["overhead_p50"] = report["service"]["p50_ms"] / report["direct"]["p50_ms"]
    return report


def format_report(report: Dict[str, Any]) -> str:
    """The figures as a text table."""
    turns = (f", service and direct in {report['rounds']} alternating rounds"
             if report.get("rounds", 1) > 1 else "")
    lines = [f"load test of {report['url']}/predict: {report['requests']} requests, "
             f"concurrency {report['concurrency']}, {report['images']} image(s) in turn{turns}",
             f"{'mode':<8} {'done':>7} {'errors':>7} {'not sent':>9} {'p50 ms':>9} "
             f"{'p95 ms':>9} {'p99 ms':>9} {'req/s':>8} {'wall s':>8}"]
    for mode in ("service", "direct"):
        if mode in report:
            row = report[mode]
            pcts = " ".join("        -" if row[k] is None else f"{row[k]:>9.1f}"
                            for k in ("p50_ms", "p95_ms", "p99_ms"))
            lines.append(f"{mode:<8} {row['completed']:>7} {row['errors']:>7} "
                         f"{row['not_sent']:>9} {pcts} {row['throughput_rps']:>8.1f} "
                         f"{row['wall_s']:>8.2f}")
    if "overhead_p50" in report:
        lines.append(f"service overhead at p50: {report['overhead_p50']:.2f}x direct ONNX "
                     "Runtime (same files decoded, same concurrency, one shared session)")
    if "rss_kib" in report:
        rss = report["rss_kib"]
        lines.append(f"server RSS: {rss['before']['VmRSS'] / 1024:.1f} MiB before, "
                     f"{rss['after']['VmRSS'] / 1024:.1f} MiB after, peak "
                     f"{rss['after'].get('VmHWM', 0) / 1024:.1f} MiB")
    if report["service"]["first_error"]:
        lines.append(f"first error: {report['service']['first_error']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = make_parser("python -m export.loadtest",
                         description="Load test of a local export.serve service.")
    parser.add_argument("--url", required=True, help="service base URL (loopback only)")
    parser.add_argument("--images", required=True, help="folder of image files, sent in turn")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent requests")
    parser.add_argument("--requests", type=int, default=100, help="requests in all")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="no request starts after this many seconds")
    parser.add_argument("--pid", type=int, default=None,
                        help="server process id: its resident memory before and after")
    parser.add_argument("--direct", default=None,
                        help="the served export (.onnx or folder): also time ONNX Runtime "
                             "directly and print the service overhead")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="with --direct: service and direct take turns this many times")
    parser.add_argument("--json", default=None, help="JSON file for the figures")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        0 when every request completed with 200, 1 otherwise.
    """
    args = build_parser().parse_args(argv)
    if args.json:
        check_output(args.json, args.overwrite)
    report = load_test(args.url, args.images, concurrency=args.concurrency,
                       requests=args.requests, timeout_s=args.timeout_s, pid=args.pid,
                       direct=args.direct, rounds=args.rounds)
    print(format_report(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    service = report["service"]
    if service["errors"] or service["not_sent"]:
        print(f"FAIL: {service['errors']} error(s), {service['not_sent']} request(s) not sent",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
