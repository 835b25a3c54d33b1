"""The HTTP application of `s2s serve`: FastAPI routes over the batcher, request limits, JSON errors.

Every failure a client can cause is answered with a JSON body {"error": ...} and a 4xx status: a body over
the size limit 413, too many texts or too long a text 413 (naming the limit), malformed JSON 400, wrong
types or values 422, an unknown model 400, a full queue 503, a body not received within the request timeout 408, a request over its time 504. The server itself
stays up: a failing batch fails its own requests only.
"""
# No `from __future__ import annotations`: FastAPI reads the request models from the route annotations, and
# those models are made inside build_app (their limits are the server's), where string annotations would not resolve.
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from s2s.errors import S2SError
from s2s.serve.batcher import Batcher, QueueFull
from s2s.serve.models import ENDPOINTS, Served

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
MAX_BEAM = 16


@dataclass
class Limits:
    max_body_bytes: int = 256 * 1024  # a request body, in bytes
    max_texts: int = 64  # texts per request
    max_tokens: int = 400  # whitespace-separated tokens per text
    max_batch: int = 64  # texts decoded together at most
    max_wait_ms: float = 5.0  # how long the first text of a batch waits for others
    queue_size: int = 1024  # texts waiting at most
    timeout_s: float = 30.0  # a request's time at most, queueing included
    continuous: bool = True  # beam search with sentences joining as others end (s2s.serve.stream), not rounds


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any of it is parsed, whether it
    declares its length or comes in chunks."""

    def __init__(self, app, limit: int, timeout: float = 30.0):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks, size = [], 0
        end = asyncio.get_running_loop().time() + self.timeout
        while not too_big:
            try:  # a body that trickles in is cut off at the request timeout, as decoding is
                message = await asyncio.wait_for(receive(), max(0.0, end - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                return await _send_json(send, 408, {"error": f"request body not received within {self.timeout:g} s", "limit": "timeout_s",
                                                    "max": self.timeout})
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            too_big = size > self.limit
            if not message.get("more_body"):
                break
        if too_big:
            return await _send_json(send, 413, {"error": f"request body over {self.limit} bytes", "limit": "max_body_bytes", "max": self.limit})
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _send_json(send, status: int, payload: dict) -> None:
    import json

    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def build_app(served: dict[str, Served], limits: Limits | None = None, threads: int = 1):
    """The FastAPI application serving `served` (see s2s.serve.models.load_models)."""
    from fastapi import FastAPI, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictStr

    limits = limits or Limits()

    def set_threads():
        import torch

        torch.set_num_threads(threads)

    # One decoding thread: batches run one after another, each on `threads` torch threads.
    executor = ThreadPoolExecutor(1, thread_name_prefix="s2s-decode", initializer=set_threads)
    batcher = Batcher(lambda key, items: served[key[0]].run(key[1:], items), executor, limits.max_batch,
                      limits.max_wait_ms / 1000, limits.queue_size)

    streams = {}  # (model name, beam size) -> StreamingTranslator, made on first use

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()  # uvicorn has let the requests in flight finish by now
        for stream in streams.values():
            stream.stop()
        executor.shutdown(wait=True)

    app = FastAPI(title="s2s", description="Recurrent sequence models: translation, tagging, classification, forecasting.",
                  lifespan=lifespan)
    app.state.batcher, app.state.served, app.state.limits = batcher, served, limits

    class Texts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: list[StrictStr] = Field(description=f"raw texts, at most {limits.max_texts}, each at most {limits.max_tokens} tokens")
        model: StrictStr | None = Field(None, description="a served model's name (GET /models); default: the first of the task")

    class TranslateRequest(Texts):
        beam_size: int | None = Field(None, ge=1, le=MAX_BEAM, description="1 = greedy; default: the run's translation.beam_size")
        n_best: int = Field(1, ge=1, le=MAX_BEAM, description="hypotheses per text, at most beam_size")

    class ForecastRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[list[float]] = Field(description="rows of the model's variables, oldest first, at least forecasting.seq_len")
        model: StrictStr | None = None

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse({"error": e.message, **e.extra}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        errors = jsonable_encoder(e.errors(), exclude={"input", "ctx", "url"})
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse({"error": "malformed JSON body", "detail": errors}, status_code=400)
        first = errors[0] if errors else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": f"invalid request: {where or 'body'}: {first.get('msg', 'invalid')}", "detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, e: Exception):  # a bug, not the client's fault; the server goes on
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__})"}, status_code=500)

    def pick(task: str, name: str | None) -> Served:
        if name is None:
            found = next((s for s in served.values() if s.task == task), None)
            if found is None:
                raise ApiError(400, f"no {task} model is served here", models=sorted(served))
            return found
        if name not in served:
            raise ApiError(400, f"unknown model {name!r}", models=sorted(served))
        if served[name].task != task:
            raise ApiError(400, f"model {name!r} is a {served[name].task} model: POST /{ENDPOINTS[served[name].task]}")
        return served[name]

    def check(texts: list[str]) -> None:
        if len(texts) > limits.max_texts:
            raise ApiError(413, f"{len(texts)} texts: at most {limits.max_texts} per request", limit="max_texts", max=limits.max_texts)
        for i, text in enumerate(texts):
            if len(text.split()) > limits.max_tokens:
                raise ApiError(413, f"texts[{i}]: {len(text.split())} tokens: at most {limits.max_tokens} per text", limit="max_tokens",
                               max=limits.max_tokens, index=i)

    async def decode(model: Served, options: tuple, items: list) -> list:
        if not items:
            return []
        try:
            return await asyncio.wait_for(batcher.submit((model.name, *options), items), limits.timeout_s)
        except QueueFull as e:
            raise ApiError(503, f"busy: {e}; retry later") from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"request cancelled after {limits.timeout_s:g} s", limit="timeout_s", max=limits.timeout_s) from None
        except S2SError as e:
            raise ApiError(422, str(e)) from None

    async def stream_decode(model: Served, beam: int, texts: list[str]) -> list[dict]:
        """Beam search with continuous batching: each sentence joins the model's running search."""
        import queue

        from s2s.serve.stream import StreamingTranslator

        key = (model.name, beam)
        if key not in streams:
            streams[key] = StreamingTranslator(model.api, beam, limits.max_batch, limits.queue_size, threads)
        futures = []
        try:
            for ids in model.api.source_ids(texts):
                futures.append(asyncio.wrap_future(streams[key].submit(ids)))
            found = await asyncio.wait_for(asyncio.gather(*futures), limits.timeout_s)
        except queue.Full:
            for f in futures:
                f.cancel()
            raise ApiError(503, f"busy: {limits.queue_size} sentences are waiting; retry later") from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"request cancelled after {limits.timeout_s:g} s", limit="timeout_s", max=limits.timeout_s) from None
        return [{"text": model.api.sp_tgt.decode(ids)} for ids in found]

    @app.post("/translate", summary="translate texts")
    async def translate(request: TranslateRequest):
        model = pick("translation", request.model)
        check(request.texts)
        beam = request.beam_size or model.api.search.beam_size
        if request.n_best > beam:
            raise ApiError(422, f"n_best {request.n_best} is more than the beam keeps ({beam})")
        if limits.continuous and beam > 1 and request.n_best == 1 and request.texts:
            found = await stream_decode(model, beam, request.texts)
        else:
            found = await decode(model, (beam, request.n_best), request.texts)
        out = {"model": model.name, "translations": [f["text"] for f in found]}
        if request.n_best > 1:
            out["n_best"] = [f["n_best"] for f in found]
        return out

    @app.post("/tag", summary="tag named entities")
    async def tag(request: Texts):
        model = pick("tagging", request.model)
        check(request.texts)
        found = await decode(model, (), [request.texts]) if request.texts else [[]]
        return {"model": model.name, "records": found[0]}

    @app.post("/classify", summary="classify texts")
    async def classify(request: Texts):
        model = pick("classification", request.model)
        check(request.texts)
        return {"model": model.name, "predictions": await decode(model, (), request.texts)}

    @app.post("/forecast", summary="forecast the rows after a history")
    async def forecast(request: ForecastRequest):
        model = pick("forecasting", request.model)
        found = await decode(model, (), [request.history])
        return {"model": model.name, **found[0]}

    @app.get("/health", summary="liveness, models and queue")
    async def health():
        out = {"status": "ok", "models": len(served), "waiting": batcher.pending, "batches": batcher.batches}
        if streams:  # continuous batching: how full each running beam search has been
            out["streams"] = [{"model": name, "beam_size": beam, "steps": s.steps, "waiting": s.queue.qsize(),
                               "mean_in_flight": round(s.sentence_steps / max(1, s.steps), 2)} for (name, beam), s in streams.items()]
        return out

    @app.get("/models", summary="the served models: task, config summary, dev scores")
    async def models():
        return {"models": [{"name": s.name, "task": s.task, "endpoint": "/" + ENDPOINTS[s.task], "path": s.path, **s.summary}
                           for s in served.values()]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE.read_text(encoding="utf-8")

    return BodyLimit(app, limits.max_body_bytes, limits.timeout_s)
