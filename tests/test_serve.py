"""`s2s serve`: answers equal the Python API's, the batcher joins concurrent requests, every bad request gets a
4xx JSON error and never a 500 or a dead server, and TERM lets the request in flight finish, then exits 0."""
from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from test_serve_runs import classification_run, forecasting_run, spread_run, tagging_run  # noqa: E402,F401  (fixtures)

from s2s.serve import Limits, build_app  # noqa: E402
from s2s.serve.batcher import Batcher, QueueFull  # noqa: E402
from s2s.serve.models import load_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["der hund sieht ein ball", "die katze mag ein haus", "", "der mann sieht der hund"]


@pytest.fixture(scope="module")
def served(trained_run, tagging_run, classification_run):  # noqa: F811  (fixtures from test_serve_runs)
    return load_models([trained_run, tagging_run, classification_run])


@pytest.fixture(scope="module")
def client(served):
    limits = Limits(max_body_bytes=4096, max_texts=8, max_tokens=20, max_wait_ms=2)
    with TestClient(build_app(served, limits)) as c:
        yield c


def names(served) -> dict[str, str]:
    return {s.task: s.name for s in served.values()}


def test_translate_equals_the_translator(client, served):
    translator = served[names(served)["translation"]].api
    for beam in (1, 3):
        r = client.post("/translate", json={"texts": SOURCES, "beam_size": beam})
        assert r.status_code == 200, r.text
        assert r.json()["translations"] == translator.translate(SOURCES, beam_size=beam)
    r = client.post("/translate", json={"texts": SOURCES[:2], "beam_size": 3, "n_best": 2})
    nbest = r.json()["n_best"]
    assert [n[0]["text"] for n in nbest] == r.json()["translations"] == translator.translate(SOURCES[:2], beam_size=3)
    assert all(len(n) <= 2 and n[0]["score"] >= n[-1]["score"] for n in nbest)


def test_tag_and_classify_equal_their_apis(client, served):
    tagger, classifier = served[names(served)["tagging"]].api, served[names(served)["classification"]].api
    texts = ["Alan Shearer visited Paris .", "the EU said on Monday"]
    records = client.post("/tag", json={"texts": texts}).json()["records"]
    assert records == [json.loads(r.to_json()) for r in tagger.tag(texts)]
    reviews = ["the movie was great", "awful plot", " "]
    found = client.post("/classify", json={"texts": reviews}).json()["predictions"]
    expected = classifier.predict(reviews)
    assert found[2] is None and expected[2] is None
    assert [f["label"] for f in found[:2]] == [p.label for p in expected[:2]]
    assert [f["prob"] for f in found[:2]] == pytest.approx([p.prob for p in expected[:2]], abs=1e-6)


def test_health_models_and_page(client, served):
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/models").json()["models"]
    assert {m["task"] for m in models} == {"translation", "tagging", "classification"}
    assert all("encoder" in m and "scores" in m for m in models)
    assert next(m for m in models if m["task"] == "classification")["scores"]["accuracy"] >= 0
    page = client.get("/")
    assert page.status_code == 200 and 'id="submit"' in page.text
    assert client.get("/openapi.json").status_code == 200


def test_forecast_equals_the_forecaster(forecasting_run):  # noqa: F811
    served = load_models([forecasting_run])
    forecaster = next(iter(served.values())).api
    history = [[math.sin(2 * math.pi * i / 24), 0.01 * i] for i in range(20)]
    with TestClient(build_app(served)) as c:
        r = c.post("/forecast", json={"history": history})
        assert r.status_code == 200, r.text
        assert r.json()["columns"] == ["sin", "OT"]
        expected = forecaster.predict(torch.tensor(history, dtype=torch.float64))
        assert torch.allclose(torch.tensor(r.json()["forecast"], dtype=torch.float64), expected)
        short = c.post("/forecast", json={"history": history[:3]})  # shorter than the look-back
        assert short.status_code == 422 and "look" in short.json()["error"]
        assert c.post("/forecast", json={"history": [[1.0, "x"]]}).status_code == 422


def bad_requests(served) -> list[tuple[str, dict, int]]:
    """(path, httpx request keywords, expected status) for each kind of bad request."""
    many = {"texts": ["a"] * 9}
    return [
        ("/translate", {"content": b'{"texts": ', "headers": {"content-type": "application/json"}}, 400),  # malformed JSON
        ("/translate", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400),  # not UTF-8
        ("/translate", {"json": {"texts": [1, 2]}}, 422),  # wrong types
        ("/translate", {"json": {"texts": "one string"}}, 422),
        ("/translate", {"json": [1, 2]}, 422),
        ("/translate", {"json": {}}, 422),  # texts missing
        ("/translate", {"json": {"texts": ["a"], "extra": 1}}, 422),  # a misspelt key
        ("/translate", {"json": {"texts": ["a"], "beam_size": 0}}, 422),
        ("/translate", {"json": {"texts": ["a"], "beam_size": 2, "n_best": 3}}, 422),
        ("/translate", {"json": {"texts": ["a"], "model": "nope"}}, 400),  # unknown model
        ("/translate", {"json": {"texts": ["a"], "model": names(served)["tagging"]}}, 400),  # another task's model
        ("/forecast", {"json": {"history": [[1.0]]}}, 400),  # no forecaster served
        ("/classify", {"json": many}, 413),  # too many texts
        ("/tag", {"json": {"texts": [" ".join(["w"] * 21)]}}, 413),  # too long a text
        ("/classify", {"content": b'{"texts": ["' + b"a" * 5000 + b'"]}', "headers": {"content-type": "application/json"}}, 413),
        ("/classify", {"content": iter([b'{"texts": ["', b"a" * 3000, b"a" * 3000, b'"]}']), "headers": {"content-type": "application/json"}}, 413),
        ("/translate", {"json": {"texts": ["a"], "beam_size": 1.5}}, 422),
    ]


def test_bad_requests_get_json_errors_and_good_ones_stay_right(client, served):
    translator = served[names(served)["translation"]].api
    expected = translator.translate(SOURCES, beam_size=1)
    for _ in range(5):
        for path, kwargs, status in bad_requests(served):
            r = client.post(path, **kwargs)
            assert r.status_code == status, (path, kwargs.get("json"), r.text)
            body = r.json()
            assert isinstance(body["error"], str) and body["error"]
            if status == 413:
                assert body["limit"] in ("max_texts", "max_tokens", "max_body_bytes")
            good = client.post("/translate", json={"texts": SOURCES, "beam_size": 1})
            assert good.status_code == 200 and good.json()["translations"] == expected
    assert client.get("/health").json()["status"] == "ok"


def test_a_request_over_its_time_is_cancelled_with_504(served):
    with TestClient(build_app(served, Limits(timeout_s=1e-4))) as c:
        r = c.post("/translate", json={"texts": SOURCES * 2, "beam_size": 3})
        assert r.status_code == 504 and r.json()["limit"] == "timeout_s"


def test_a_body_that_trickles_in_is_cut_off_with_408(trained_run):
    port = free_port()
    proc = start_server([trained_run], port, "--timeout", "1")
    try:
        wait_until_up(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"te")
            answer = s.recv(4096).decode()  # the rest never comes
        assert answer.startswith("HTTP/1.1 408") and "timeout_s" in answer
        import httpx

        assert httpx.post(f"http://127.0.0.1:{port}/translate", json={"texts": SOURCES, "beam_size": 1}).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_answer():
    calls = []

    def run(key, items):
        calls.append((key, list(items)))
        time.sleep(0.01)
        return [f"{key}:{x}" for x in items]

    async def main():
        from concurrent.futures import ThreadPoolExecutor

        b = Batcher(run, ThreadPoolExecutor(1), max_batch=64, max_wait=0.05, queue_size=100)
        b.start()
        results = await asyncio.gather(*(b.submit("k", [i]) for i in range(16)), b.submit("other", ["x", "y"]))
        # A request cancelled while it waits is never decoded.
        waiting = asyncio.ensure_future(b.submit("k", ["late"]))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(QueueFull):
            await asyncio.gather(b.submit("k", list(range(60))), b.submit("k", list(range(60))))
        await asyncio.sleep(0.1)
        await b.stop()
        return results

    results = asyncio.run(main())
    assert results[:16] == [[f"k:{i}"] for i in range(16)] and results[16] == ["other:x", "other:y"]
    assert calls[0] == ("k", list(range(16))) and calls[1] == ("other", ["x", "y"])  # 16 requests, one batch
    assert not any("late" in items for _, items in calls)


def test_continuous_batching_gives_each_sentence_the_beam_searchs_answer(spread_run):  # noqa: F811
    """Sentences joining a running search at different steps (the batch refilled as others end) get what beam search
    over all of them at once gives, and each answer comes as soon as its sentence ends."""
    from s2s.serve.stream import StreamingTranslator
    from s2s.tasks.translation import Translator

    translator = Translator.load(spread_run, device="cpu")
    g = torch.Generator().manual_seed(3)
    vocab = translator.sp_src.get_piece_size()
    sources = [torch.randint(4, vocab, (int(n),), generator=g).tolist() for n in torch.randint(1, 8, (40,), generator=g)]
    sources[5] = []
    for beam in (2, 3):
        expected = [translator.sp_tgt.decode(ids) for ids in translator.translate_ids([translator.sp_src.decode(x) for x in sources], beam)]
        stream = StreamingTranslator(translator, beam, in_flight=8)
        try:
            futures = []
            for i, ids in enumerate(translator.source_ids([translator.sp_src.decode(x) for x in sources])):
                futures.append(stream.submit(ids))
                if i % 7 == 0:
                    time.sleep(0.005)  # let the search run a few steps before more arrive
            found = [translator.sp_tgt.decode(f.result(timeout=60)) for f in futures]
        finally:
            stream.stop()
        assert found == expected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("server did not start")


def start_server(runs: list[Path], port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "s2s", "serve", "--port", str(port), *extra]
    for run in runs:
        argv += ["--model", str(run)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_term_finishes_the_request_in_flight_then_exits_0(trained_run):
    import httpx

    port = free_port()
    proc = start_server([trained_run], port, "--max-texts", "512", "--max-batch", "512")
    try:
        wait_until_up(port, proc)
        answer = {}

        def ask():
            answer["r"] = httpx.post(f"http://127.0.0.1:{port}/translate", json={"texts": SOURCES * 100, "beam_size": 3}, timeout=60)

        thread = threading.Thread(target=ask)
        thread.start()
        end = time.monotonic() + 60
        while time.monotonic() < end:  # until the request is being decoded
            streams = httpx.get(f"http://127.0.0.1:{port}/health").json().get("streams", [])
            if streams and streams[0]["steps"] > 0:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        thread.join(60)
        assert proc.wait(60) == 0
        assert answer["r"].status_code == 200 and len(answer["r"].json()["translations"]) == 400
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
