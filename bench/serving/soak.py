"""The served model under abuse, for a few minutes, under a memory limit: `python -m pipeline.serve`
in its own cgroup (v1, root), loopback only.

    python -m bench.serving.soak [--model models:/attention-classifier@champion] [--seconds 120] [--clients 6]
                         [--memory-mb 1500]

First one client streams a 2 GB chunked body (no Content-Length) and the server's resident memory
is read before and after; then `--clients` threads for `--seconds` send a mix of requests, each
kind in turn: good (one 28-px PNG), huge (images declaring more pixels than a request may hold),
slow (16 images of 2,048² with overlays), malformed (not JSON, wrong params), while one more thread
calls `/ping` every 50 ms. Reported: each kind's answers by status, the good requests' p50 / p99
latency and throughput, `/ping`'s worst time, the resident memory of the server and its workers
after one request of each kind and at the end, and the cgroup's peak. Writes `bench/results/soak.json`; prints a table.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from PIL import Image

from bench import RESULTS
from pipeline.core.paths import project_root
from tests.servers import free_port, stop_group

PROJECT = project_root()
CGROUP = Path("/sys/fs/cgroup/memory/attention-soak")


def png(side: int, value: int = 128) -> str:
    buffer = io.BytesIO()
    Image.new("L", (side, side), value).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


KINDS = {  # name -> (body, expected statuses)
    "good": (json.dumps({"inputs": [png(28, 90)]}).encode(), {200}),
    "huge": (json.dumps({"inputs": [png(4096)] * 5}).encode(), {413}),
    "slow": (json.dumps({"inputs": [png(2048, v) for v in range(16)], "params": {"overlay": True}}).encode(),
             {200, 503}),
    "not json": (b"{inputs: nope", {400}),
    "wrong params": (json.dumps({"inputs": [png(28)], "params": {"overlay": "yes"}}).encode(), {400}),
}  # fmt: skip


def resident_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes."""
    import psutil

    server = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [server, *server.children(recursive=True)]) / (1 << 20)


def chunked_flood(port: int, gigabytes: float) -> dict:
    """Stream `gigabytes` of junk as a chunked body until the server answers; what it answered, when."""
    chunk = b"x" * (1 << 20)
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent, started, reply = 0, time.perf_counter(), b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        try:
            while sent < gigabytes * (1 << 30):
                if select.select([client], [], [], 0)[0]:  # the server has answered: stop sending
                    break
                client.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = client.recv(4096)
        except OSError:
            pass
    return {"status_line": reply.split(b"\r\n")[0].decode() if reply else None, "sent_mb": sent >> 20,
            "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip


def soak(url: str, seconds: float, clients: int) -> dict:
    statuses: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    good_ms: list[float] = []
    ping_ms: list[float] = []
    stop = time.monotonic() + seconds

    def client(offset: int) -> None:
        names = list(KINDS)
        with requests.Session() as session:
            turn = offset
            while time.monotonic() < stop:
                kind = names[turn % len(names)]
                turn += 1
                body, _ = KINDS[kind]
                started = time.perf_counter()
                try:
                    response = session.post(f"{url}/invocations", data=body, timeout=120,
                                            headers={"Content-Type": "application/json"})  # fmt: skip
                    statuses[kind][response.status_code] += 1
                except requests.RequestException as error:
                    statuses[kind][type(error).__name__] += 1
                    continue
                if kind == "good" and response.status_code == 200:
                    good_ms.append(1000 * (time.perf_counter() - started))

    def pinger() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            requests.get(f"{url}/ping", timeout=30).raise_for_status()
            ping_ms.append(1000 * (time.perf_counter() - started))
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)] + [threading.Thread(target=pinger)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    good_ms.sort()
    unexpected = {
        kind: {str(s): n for s, n in counts.items() if s not in KINDS[kind][1]} for kind, counts in statuses.items()
    }
    return {
        "seconds": seconds, "clients": clients,
        "statuses": {kind: {str(s): n for s, n in counts.items()} for kind, counts in statuses.items()},
        "unexpected": {kind: found for kind, found in unexpected.items() if found},
        "good_p50_ms": round(statistics.median(good_ms), 1) if good_ms else None,
        "good_p99_ms": round(good_ms[max(0, int(0.99 * len(good_ms)) - 1)], 1) if good_ms else None,
        "requests_per_second": round(sum(sum(c.values()) for c in statuses.values()) / seconds, 1),
        "ping_worst_ms": round(max(ping_ms), 1), "ping_p99_ms": round(sorted(ping_ms)[int(0.99 * len(ping_ms)) - 1], 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/attention-classifier@champion")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--memory-mb", type=int, default=1500, help="the server's cgroup memory limit")
    parser.add_argument("--flood-gb", type=float, default=2.0)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "soak-serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.serve", "--model", args.model, "--port", str(port)],
        cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            assert server.poll() is None, Path(log.name).read_text()[-2000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        CGROUP.mkdir(exist_ok=True)
        (CGROUP / "memory.limit_in_bytes").write_text(str(args.memory_mb << 20))
        import psutil

        for process in [server, *psutil.Process(server.pid).children(recursive=True)]:  # the workers too
            (CGROUP / "cgroup.procs").write_text(str(process.pid))
        (CGROUP / "memory.max_usage_in_bytes").write_text("0")  # the peak from here on
        for body, _ in KINDS.values():  # each kind once: the memory a steady state needs
            requests.post(f"{url}/invocations", data=body, timeout=120, headers={"Content-Type": "application/json"})
        start_mb = resident_mb(server.pid)
        flood = chunked_flood(port, args.flood_gb)
        flood["resident_mb_after"] = round(resident_mb(server.pid), 1)
        result = {"limit_mb": args.memory_mb, "resident_mb_start": round(start_mb, 1), "flood": flood,
                  "soak": soak(url, args.seconds, args.clients)}  # fmt: skip
        result["resident_mb_end"] = round(resident_mb(server.pid), 1)
        result["cgroup_peak_mb"] = round(int((CGROUP / "memory.max_usage_in_bytes").read_text()) / (1 << 20), 1)
        result["server_alive"] = server.poll() is None
    finally:
        stop_group(server)
        log.close()
        if CGROUP.exists():
            try:
                CGROUP.rmdir()
            except OSError:
                pass
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    s, f = result["soak"], result["flood"]
    print("| what | measured | target |\n|---|---|---|")
    print(f"| {args.flood_gb:g} GB chunked body | {f['status_line']} after {f['sent_mb']:,} MB sent; resident "
          f"{result['resident_mb_start']} → {f['resident_mb_after']} MB | refused, ≤ +64 MB |")  # fmt: skip
    print(f"| `/ping` under load | worst {s['ping_worst_ms']} ms, p99 {s['ping_p99_ms']} ms | ≤ 100 ms |")
    print(f"| unexpected answers | {s['unexpected'] or 'none'} | no 5xx but 503 |")
    print(
        f"| memory over the soak | resident {result['resident_mb_start']} → {result['resident_mb_end']} MB, "
        f"cgroup peak {result['cgroup_peak_mb']} MB (limit {args.memory_mb}) | ≤ +10 % |"
    )
    print(
        f"| good requests | p50 {s['good_p50_ms']} ms, p99 {s['good_p99_ms']} ms; "
        f"{s['requests_per_second']} req/s all kinds | |"
    )


if __name__ == "__main__":
    main()
