"""The runs a server holds: each loaded once, with what /models says of it and how a batch of its texts is decoded."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2s import checkpoint
from s2s.errors import S2SError

log = logging.getLogger(__name__)

ENDPOINTS = {"translation": "translate", "tagging": "tag", "classification": "classify", "forecasting": "forecast"}


@dataclass
class Served:
    name: str  # what requests name it by (the run directory's name)
    task: str
    path: str
    api: Any  # Translator | Tagger | Classifier | Forecaster
    summary: dict  # config summary and dev scores, for /models

    def run(self, options: tuple, items: list) -> list:
        """Decode one batch of this model's items (texts, or histories for a forecaster) with `options`, the
        request settings that the batch's requests share; one result per item."""
        if self.task == "translation":
            beam_size, n_best = options
            if n_best > 1:
                found = self.api.translate_nbest(items, n_best, beam_size)
                return [{"text": nb.hypotheses[0].text if nb.hypotheses else "",
                         "n_best": [{"text": h.text, "score": round(h.score, 6), "logprob": round(h.logprob, 6)} for h in nb.hypotheses]}
                        for nb in found]
            return [{"text": self.api.sp_tgt.decode(ids)} for ids in self.api.translate_ids(items, beam_size)]
        if self.task == "tagging":
            # Each request's texts are one document, as lines of `s2s tag` are; an empty text between two
            # requests' texts ends the document, so that a tagger reading context never reads another request's.
            texts, own = [], []
            for group in items:
                own.extend(range(len(texts), len(texts) + len(group)))
                texts.extend(group + [""])
            records = self.api.tag(texts)
            found = [json.loads(records[i].to_json()) for i in own]
            out, start = [], 0
            for group in items:
                out.append(found[start : start + len(group)])
                start += len(group)
            return out
        if self.task == "classification":
            return [None if p is None else {"label": p.label, "prob": round(p.prob, 6), "probs": {k: round(v, 6) for k, v in p.probs.items()}}
                    for p in self.api.predict(items)]
        return [{"columns": list(self.api.columns), "forecast": self.api.predict(history).tolist()} for history in items]


def _scores(run_dir: Path, task: str) -> dict:
    """The dev scores of the validation that chose best.pt, from metrics.jsonl (empty when there is none)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    best: dict = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        dev = {k[4:]: v for k, v in record.items() if k.startswith("dev_")}
        if dev and "best" in record and any(v == record["best"] for v in dev.values()):
            best = dev | {"step": record.get("step")}
    return best


def _summary(config, task: str) -> dict:
    e = config.encoder
    out = {"encoder": {"cell": e.cell, "emb_dim": e.emb_dim, "hidden_size": e.hidden_size, "num_layers": e.num_layers,
                       "bidirectional": e.bidirectional}}
    if task == "translation":
        t = config.translation
        out["translation"] = {"dec_hidden_size": t.dec_hidden_size, "beam_size": t.beam_size, "length_penalty": t.length_penalty}
    elif task == "tagging":
        out["tagging"] = {"crf": config.tagging.crf, "context_tokens": config.tagging.context_tokens}
    elif task == "classification":
        out["classification"] = {"pooling": config.classification.pooling}
    elif task == "forecasting":
        f = config.forecasting
        out["forecasting"] = {"seq_len": f.seq_len, "horizon": f.horizon, "model": f.model}
    return out


def load_models(runs: list[str | Path]) -> dict[str, Served]:
    """Each run loaded once on the CPU, by name (its directory's name; a repeated name gets -2, -3, ...)."""
    from s2s import tasks

    classes = {"translation": "Translator", "tagging": "Tagger", "classification": "Classifier", "forecasting": "Forecaster"}
    served: dict[str, Served] = {}
    for run in runs:
        task = checkpoint.run_task(run)
        if task not in classes:
            raise S2SError(f"{run}: s2s serve does not serve {task} runs")
        api = getattr(tasks.get(task), classes[task]).load(run, device="cpu")
        run_dir = checkpoint.run_dir_of(run)
        name = run_dir.resolve().name
        base, n = name, 1
        while name in served:
            n += 1
            name = f"{base}-{n}"
        config = api.config if hasattr(api, "config") else checkpoint.load_trained(run, task)[0]
        served[name] = Served(name, task, str(run_dir), api, {**_summary(config, task), "scores": _scores(run_dir, task)})
        log.info("serving %s (%s) from %s at POST /%s", name, task, run_dir, ENDPOINTS[task])
    return served
