"""`s2s serve`: trained runs over HTTP (FastAPI + uvicorn, the optional extra ".[serve]").

    batcher.py   texts of concurrent requests decoded together, off the event loop
    models.py    the runs served: loading, /models' summary, one batch's decoding per task
    app.py       routes, request limits and JSON errors
    page.html    the web page at /
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path

from s2s.errors import S2SError
from s2s.serve.app import Limits, build_app

__all__ = ["Limits", "build_app", "serve"]

log = logging.getLogger(__name__)


def serve(runs: list[str | Path], host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None, threads: int = 1) -> None:
    """Load `runs` and serve them until TERM or Ctrl-C, which let the requests in flight finish first."""
    try:
        import fastapi  # noqa: F401  (build_app's)
        import uvicorn
    except ImportError:
        raise S2SError('s2s serve needs FastAPI and uvicorn: pip install -e ".[serve]"') from None
    import torch

    from s2s.serve.models import load_models

    torch.set_num_threads(threads)
    app = build_app(load_models(runs), limits, threads)
    # uvicorn's own TERM/INT handling: stop accepting, finish the requests in flight (at most the request
    # timeout), run the app's shutdown, return; the CLI then exits 0.
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=(limits or Limits()).timeout_s + 5,
                            access_log=False)
    # uvicorn raises the signal it caught again once it is done; with the default TERM handler that would kill
    # the process with status 143 after a clean shutdown, so the handlers ignore that second one.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
