"""Throughput and latency of `s2s serve` against `s2s translate`'s batch throughput on the same sentences.

    python bench/serve.py --model runs/m30k --sentences ../shared/data/multi30k/test2016.de --requests 400

Starts the server on loopback (one decoding thread, torch on --threads), then for 1, 4 and 16 concurrent clients
sends --requests single-sentence requests (beam --beam-size) and reports requests/s, sentences/s and
p50/p95/p99 latency; then one idle client sending a --words-word sentence greedily (p50 latency). The batch
baseline translates the same sentences in one call in this process (Translator.translate on --threads, what
`s2s translate` runs after loading) and through the `s2s translate` command itself (wall time, startup
included). Prints one JSON object per measurement and a table.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def load(url: str, sentences: list[str], clients: int, requests: int, beam_size: int) -> dict:
    import httpx

    latencies: list[float] = []
    answers: dict[int, str] = {}
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            start = time.perf_counter()
            r = await http.post(url + "/translate", json={"texts": [sentences[i % len(sentences)]], "beam_size": beam_size})
            latencies.append(time.perf_counter() - start)
            r.raise_for_status()
            answers[i] = r.json()["translations"][0]

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        seconds = time.perf_counter() - start
    return {"clients": clients, "requests": requests, "beam_size": beam_size, "seconds": round(seconds, 3),
            "requests_per_s": round(requests / seconds, 2), "sentences_per_s": round(requests / seconds, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "p99_ms": round(1000 * percentile(latencies, 99), 1), "answers": answers}


# Bad requests of every kind the server must answer with a 4xx JSON error (path, httpx keywords).
BAD = [
    ("/translate", {"content": b'{"texts": ', "headers": {"content-type": "application/json"}}),  # malformed JSON
    ("/translate", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}),  # not UTF-8
    ("/translate", {"json": {"texts": [1, 2]}}),  # wrong types
    ("/translate", {"json": {"texts": "one string"}}),
    ("/translate", {"json": [1, 2]}),
    ("/translate", {"json": {}}),
    ("/translate", {"json": {"texts": ["a"], "extra": 1}}),
    ("/translate", {"json": {"texts": ["a"], "beam_size": 0}}),
    ("/translate", {"json": {"texts": ["a"], "beam_size": 2, "n_best": 3}}),
    ("/translate", {"json": {"texts": ["a"], "model": "nope"}}),  # unknown model
    ("/tag", {"json": {"texts": ["a"]}}),  # a task not served
    ("/translate", {"json": {"texts": ["a"] * 65}}),  # too many texts
    ("/translate", {"json": {"texts": [" ".join(["w"] * 401)]}}),  # too long a text
    ("/translate", {"content": b'{"texts": ["' + b"a" * 300_000 + b'"]}', "headers": {"content-type": "application/json"}}),  # body
]


async def stress(url: str, sentences: list[str], expected: list[str], rounds: int, good_clients: int) -> dict:
    """Every bad request `rounds` times from 4 clients, interleaved with good greedy requests from `good_clients`
    clients whose answers are checked; counts statuses, 5xx, wrong answers and requests that hung (no answer in 60 s)."""
    import httpx

    counts = {"bad_sent": 0, "bad_4xx": 0, "bad_5xx": 0, "good_sent": 0, "good_right": 0, "good_wrong": 0, "hung": 0, "other": 0}
    bad = iter([b for _ in range(rounds) for b in BAD])

    async def bad_client(http):
        for path, kwargs in bad:
            counts["bad_sent"] += 1
            try:
                r = await http.post(url + path, **kwargs)
            except httpx.TimeoutException:
                counts["hung"] += 1
                continue
            key = "bad_4xx" if 400 <= r.status_code < 500 and "error" in r.json() else "bad_5xx" if r.status_code >= 500 else "other"
            counts[key] += 1

    async def good_client(http, offset):
        for i in range(offset, rounds * 4, good_clients):
            counts["good_sent"] += 1
            j = i % len(sentences)
            try:
                r = await http.post(url + "/translate", json={"texts": [sentences[j]], "beam_size": 1})
            except httpx.TimeoutException:
                counts["hung"] += 1
                continue
            right = r.status_code == 200 and r.json()["translations"] == [expected[j]]
            counts["good_right" if right else "good_wrong"] += 1

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*(bad_client(http) for _ in range(4)), *(good_client(http, k) for k in range(good_clients)))
        counts["alive_after"] = (await http.get(url + "/health")).status_code == 200
    return counts


def in_process(translator, used: list[str], clients: int, beam_size: int) -> dict:
    """Continuous batching without HTTP: `clients` threads each hand s2s.serve.stream one sentence and wait for its
    answer before the next; what the decoding alone gives, set against the server's numbers."""
    import threading

    from s2s.serve.stream import StreamingTranslator

    src = translator.source_ids(used)
    stream = StreamingTranslator(translator, beam_size, in_flight=64)
    todo, lock = iter(range(len(src))), threading.Lock()

    def client():
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            stream.submit(src[i]).result()

    start, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stream.stop()
    return {"clients": clients, "sentences_per_s": round(len(src) / wall, 2), "sentences_per_cpu_s": round(len(src) / cpu, 2),
            "mean_in_flight": round(stream.sentence_steps / max(1, stream.steps), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a translation run directory")
    parser.add_argument("--sentences", default=str(ROOT.parent / "shared/data/multi30k/test2016.de"))
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level (default: 400)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels (default: 1,4,16)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and the baseline (default: 1)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--words", type=int, default=12, help="words of the idle client's sentence (default: 12)")
    parser.add_argument("--idle-requests", type=int, default=50)
    parser.add_argument("--batching", default="continuous", choices=["continuous", "rounds"], help="the server's --batching")
    parser.add_argument("--in-process", action="store_true", help="also: continuous batching without HTTP, 16 client threads")
    parser.add_argument("--stress-rounds", type=int, default=50, help="times each bad request is sent (default: 50; 0 = none)")
    args = parser.parse_args()

    sentences = [s for s in Path(args.sentences).read_text(encoding="utf-8").splitlines() if s.strip()]
    used = [sentences[i % len(sentences)] for i in range(args.requests)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
               "load_average": os.getloadavg()[0], "model": args.model, "batching": args.batching, "threads": args.threads, "beam_size": args.beam_size, "requests": args.requests}

    # The batch baseline: the same sentences in one call, after loading.
    import torch

    from s2s.tasks.translation import Translator

    torch.set_num_threads(args.threads)
    translator = Translator.load(args.model, device="cpu")
    translator.translate(used[:16], beam_size=args.beam_size)  # warm-up
    start = time.perf_counter()
    batch = translator.translate(used, beam_size=args.beam_size)
    seconds = time.perf_counter() - start
    results["batch"] = {"sentences_per_s": round(len(used) / seconds, 2), "seconds": round(seconds, 3)}
    batch_greedy = translator.translate(used[:50], beam_size=1)  # the stress test's expected answers
    path = Path(f"/tmp/s2s-bench-serve-{os.getpid()}.txt")
    path.write_text("".join(s + "\n" for s in used), encoding="utf-8")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "s2s", "-q", "translate", "--model", args.model, "--input", str(path), "--output", os.devnull,
                    "--beam-size", str(args.beam_size)], check=True, env=env)
    cli = time.perf_counter() - start
    path.unlink()
    results["cli"] = {"sentences_per_s": round(len(used) / cli, 2), "seconds": round(cli, 3)}
    if args.in_process:
        start, cpu = time.perf_counter(), time.process_time()
        translator.translate(used, beam_size=args.beam_size)
        batch_now = {"batch_sentences_per_s": round(len(used) / (time.perf_counter() - start), 2),
                     "batch_sentences_per_cpu_s": round(len(used) / (time.process_time() - cpu), 2)}
        results["in_process"] = in_process(translator, used, 16, args.beam_size) | batch_now
        print(json.dumps(results["in_process"]), flush=True)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "s2s", "-q", "serve", "--model", args.model, "--port", str(port), "--threads",
                               str(args.threads), "--max-wait-ms", str(args.max_wait_ms), "--batching", args.batching], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        asyncio.run(load(url, used, 4, 16, args.beam_size))  # warm-up
        results["serve"] = []
        for clients in map(int, args.clients.split(",")):
            # The batch baseline again just before each level: on a shared machine the share of the CPU this
            # benchmark gets changes from minute to minute, and a share of batch throughput should compare like with like.
            start, cpu = time.perf_counter(), time.process_time()
            translator.translate(used, beam_size=args.beam_size)
            before, before_cpu = len(used) / (time.perf_counter() - start), len(used) / (time.process_time() - cpu)
            cpu = cpu_seconds(server.pid)
            found = asyncio.run(load(url, used, clients, args.requests, args.beam_size))
            # Throughput per CPU second of the server process (decoding, HTTP and JSON together) against the batch's:
            # what each would do on a core of its own, whatever else the machine runs meanwhile.
            found["server_sentences_per_cpu_s"] = round(args.requests / (cpu_seconds(server.pid) - cpu), 2)
            found["batch_sentences_per_cpu_s"] = round(before_cpu, 2)
            found["cpu_share_of_batch"] = round(found["server_sentences_per_cpu_s"] / before_cpu, 3)
            streams = httpx.get(url + "/health").json().get("streams", [])
            found["mean_in_flight"] = next((s["mean_in_flight"] for s in streams if s["beam_size"] == args.beam_size), None)
            answers = found.pop("answers")
            found["same_as_batch"] = sum(answers[i] == batch[i] for i in range(args.requests))
            found["batch_sentences_per_s"] = round(before, 2)
            found["share_of_batch"] = round(found["sentences_per_s"] / before, 3)
            results["serve"].append(found)
            print(json.dumps(found), flush=True)
        del translator
        idle = next((s for s in sentences if len(s.split()) == args.words), sentences[0])
        found = asyncio.run(load(url, [idle], 1, args.idle_requests, 1))
        found.pop("answers")
        results["idle"] = found | {"sentence": idle, "words": len(idle.split())}
        if args.stress_rounds:
            greedy = [s for s in used[:50]]
            results["stress"] = asyncio.run(stress(url, greedy, batch_greedy, args.stress_rounds, 4))
    finally:
        server.terminate()
        server.wait(60)

    print(json.dumps(results, ensure_ascii=False))
    print(f"\nbatch (Translator.translate, beam {args.beam_size}): {results['batch']['sentences_per_s']} sentences/s; "
          f"`s2s translate` incl. startup: {results['cli']['sentences_per_s']} sentences/s")
    print(f"batching: {args.batching}; load average at the start {results['load_average']:.1f}")
    print("clients  requests/s  sentences/s  batch just before  share of batch  per CPU s: server  batch  share  p50 ms  p95 ms  p99 ms  same")
    for r in results["serve"]:
        print(f"{r['clients']:>7}  {r['requests_per_s']:>10}  {r['sentences_per_s']:>11}  {r['batch_sentences_per_s']:>17}  {r['share_of_batch']:>14}  "
              f"{r['server_sentences_per_cpu_s']:>17}  {r['batch_sentences_per_cpu_s']:>5}  {r['cpu_share_of_batch']:>5}  "
              f"{r['p50_ms']:>6}  {r['p95_ms']:>6}  {r['p99_ms']:>6}  {r['same_as_batch']}/{args.requests}")
    i = results["idle"]
    print(f"idle client, greedy, {i['words']} words: p50 {i['p50_ms']} ms, p95 {i['p95_ms']} ms")
    if "in_process" in results:
        r = results["in_process"]
        print(f"in process, 16 client threads, no HTTP: {r['sentences_per_s']} sentences/s ({r['sentences_per_s'] / r['batch_sentences_per_s']:.2f} "
              f"of the batch's {r['batch_sentences_per_s']}), {r['sentences_per_cpu_s']} per CPU s ({r['sentences_per_cpu_s'] / r['batch_sentences_per_cpu_s']:.2f} "
              f"of {r['batch_sentences_per_cpu_s']}), {r['mean_in_flight']} sentences in flight")
    if "stress" in results:
        print("stress:", json.dumps(results["stress"]))


if __name__ == "__main__":
    main()
