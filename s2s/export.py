"""`s2s export`: a trained run as safetensors weights or ONNX graphs, for inference without pickle or without torch.

    safetensors   OUT/model.safetensors (the weights, no pickle), OUT/config.yaml and the run's tokenizer or
                  vocabulary files: a run directory that Translator/Tagger/Classifier.load read as they read best.pt
    onnx          OUT/*.onnx, OUT/onnx.json (what s2s.onnx_runtime needs to know: task, files, search and text
                  settings) and the tokenizer or vocabulary files: run by s2s.onnx_runtime with onnxruntime, numpy
                  and sentencepiece only

The ONNX graphs: translation as an encoder graph (source ids -> attention memory and the first decoder state)
and a decoder-step graph (previous token, state, memory -> next-token log-probabilities, new state), with
greedy and beam search over them in numpy; classification whole (token ids -> class probabilities).
They are made by torch's TorchScript-based exporter at opset ONNX_OPSET: the torch.export-based one could
not trace the encoder (its CPU inference path exported an Expand fixed to the traced shapes, its packed path
does not trace at all, torch 2.13).
"""
from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from s2s import checkpoint
from s2s.errors import S2SError
from s2s.search import VOCAB_CHUNK

log = logging.getLogger(__name__)

ONNX_OPSET = 17
SAFETENSORS = checkpoint.SAFETENSORS
ONNX_META = "onnx.json"
FORMATS = ("safetensors", "onnx")


def _copy_files(run_dir: Path, out: Path, names: list[str]) -> None:
    for name in names:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)


def _task_files(task: str, run_dir: Path) -> list[str]:
    """The tokenizer or vocabulary files a run of `task` needs beside its weights."""
    if task == "translation":
        return sorted(p.name for p in run_dir.glob("spm.*.model"))
    from s2s import tasks

    if task in ("tagging", "classification"):
        return [tasks.get(task).VOCAB_FILE]
    return [tasks.get(task).SCALER_FILE]  # forecasting: the training rows' statistics


def export(model: str | Path, fmt: str, out: str | Path) -> dict:
    """Write run `model` (a run directory or checkpoint) to folder `out` in format `fmt`; returns a summary."""
    if fmt not in FORMATS:
        raise S2SError(f"export: unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    path = checkpoint.find(model)
    run_dir = path.parent
    task = checkpoint.run_task(model)
    out = Path(out)
    if out.resolve() == run_dir.resolve():
        raise S2SError(f"export: --out {out} is the run directory itself; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    _copy_files(run_dir, out, _task_files(task, run_dir))
    if fmt == "safetensors":
        return export_safetensors(path, task, out)
    return export_onnx(run_dir if path.name == checkpoint.BEST else path, task, out)


def export_safetensors(path: Path, task: str, out: Path) -> dict:
    from safetensors.torch import save_file

    payload = checkpoint.load(path)
    # safetensors refuses tensors that share memory (tied embeddings): each is saved as its own copy, and
    # load_state_dict writes both names into the one tied parameter again.
    weights = {k: v.detach().cpu().clone().contiguous() for k, v in payload["model"].items()}
    save_file(weights, str(out / SAFETENSORS), metadata={"task": task, "format": "s2s", "version": str(payload.get("version", ""))})
    from s2s import config as config_lib

    config_lib.save(config_lib.read(payload["config"], where=str(path)), out / checkpoint.CONFIG)
    return {"format": "safetensors", "task": task, "out": str(out), "files": sorted(p.name for p in out.iterdir())}


class _Encode(nn.Module):
    """Translation's encoder graph: src (B, S), src_lengths (B,) -> the attention memory and the first decoder state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor):
        memory = self.model.encode(src, src_lengths)
        state = self.model.init_state(memory)
        return memory.keys, memory.states, memory.mask, state.h, state.c, state.att


class _Step(nn.Module):
    """Translation's decoder-step graph: one step of Seq2Seq.step, with the log-softmax that search takes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, prev, h, c, att, keys, states, mask):
        from s2s.nn.decoder import DecoderState, Memory

        final = states[:, 0]  # unused by a step; Memory wants one
        logits, state, weights = self.model.step(prev, DecoderState(h, c, att), Memory(keys, states, mask, final))
        logp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        # Each chunk of VOCAB_CHUNK tokens' best log-probability, which beam search's top-k starts from
        # (s2s.search.best_extensions): a reduction onnxruntime does faster than numpy.
        V = logp.size(1)
        full = V - V % VOCAB_CHUNK
        bounds = [logp[:, :full].reshape(logp.size(0), -1, VOCAB_CHUNK).amax(-1)] if full else []
        if full < V:
            bounds.append(logp[:, full:].amax(-1, keepdim=True))
        return logp, torch.cat(bounds, dim=1), state.h, state.c, state.att, weights


class _Emissions(nn.Module):
    """Tagging's graph: a batch's runs of text (as s2s.tasks.tagging.make_batch lays them out) -> tag scores per
    sentence token (S, L, K); the CRF's Viterbi and marginals run in numpy beside it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, words, chars, cases, lengths, word_keys, positions, sentence_lengths):
        from types import SimpleNamespace

        batch = SimpleNamespace(words=words, chars=chars, cases=cases, lengths=lengths, word_keys=word_keys, positions=positions,
                                sentence_lengths=sentence_lengths)
        return self.model.emissions(batch)[0].float()


class _Classify(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        return self.model.logits(tokens, lengths).float().softmax(-1)


def _iand(g, self, other):
    return g.op("And", self, other)


def _eye(g, n, *rest):
    """torch.eye(n, dtype=...): onnxruntime has no boolean EyeLike, which the exporter writes for a boolean eye (the
    tagger's same-word pooling), so the identity is made in float and cast."""
    from torch.onnx import symbolic_helper

    side = g.op("Unsqueeze", n, g.op("Constant", value_t=torch.tensor([0])))
    eye = g.op("EyeLike", g.op("ConstantOfShape", g.op("Concat", side, side, axis_i=0), value_t=torch.tensor([0.0])))
    dtype = symbolic_helper._maybe_get_const(rest[0], "i") if rest else None
    return g.op("Cast", eye, to_i=9) if dtype == 11 else eye  # torch.bool is scalar type 11, ONNX BOOL is 9


def _onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    # The tagger's same-word pooling uses an in-place `&=`, which the exporter has no symbolic for: it is an And.
    torch.onnx.register_custom_op_symbolic("aten::__iand_", _iand, ONNX_OPSET)
    torch.onnx.register_custom_op_symbolic("aten::eye", _eye, ONNX_OPSET)
    from s2s.nn import fast

    module.eval()
    # Traced through nn.Linear, not the packed oneDNN products that decoding on some CPUs takes (s2s.nn.fast):
    # the exporter has no symbolic for those, and onnxruntime has its own kernels.
    packed = getattr(fast, "PACKED_FP32", None)
    try:
        fast.PACKED_FP32 = False
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and batch-size notes
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                              opset_version=ONNX_OPSET, dynamo=False)
    finally:
        fast.PACKED_FP32 = packed


def export_onnx(model: Path, task: str, out: Path) -> dict:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise S2SError('export --format onnx needs onnx: pip install -e ".[onnx]"') from None
    meta = {"task": task, "opset": ONNX_OPSET}
    if task == "translation":
        from s2s.data.sentencepiece import model_paths
        from s2s.tasks.translation import Translator

        t = Translator.load(model, device="cpu")
        m = t.model.eval()
        src, lengths = torch.tensor([[4, 5, 6, 7], [8, 9, 10, 0]]), torch.tensor([4, 3])
        _onnx(_Encode(m), (src, lengths), out / "encoder.onnx", ["src", "src_lengths"], ["keys", "states", "mask", "h", "c", "att"],
              {"src": {0: "B", 1: "S"}, "src_lengths": {0: "B"}, "keys": {0: "B", 1: "S"}, "states": {0: "B", 1: "S"},
               "mask": {0: "B", 1: "S"}, "h": {1: "B"}, "c": {1: "B"}, "att": {0: "B"}})
        with torch.no_grad():
            keys, states, mask, h, c, att = _Encode(m)(src, lengths)
        # Traced with two decoder rows per memory row (beam search's beams share their sentence's memory), so
        # that the step's reshape keeps the beam count free.
        rows = torch.arange(2).repeat_interleave(2)
        _onnx(_Step(m), (torch.tensor([2, 2, 5, 6]), h[:, rows], c[:, rows], att[rows], keys, states, mask), out / "decoder_step.onnx",
              ["prev", "h", "c", "att", "keys", "states", "mask"], ["logp", "chunk_max", "h_out", "c_out", "att_out", "weights"],
              {"prev": {0: "N"}, "h": {1: "N"}, "c": {1: "N"}, "att": {0: "N"}, "keys": {0: "B", 1: "S"}, "states": {0: "B", 1: "S"},
               "mask": {0: "B", 1: "S"}, "logp": {0: "N"}, "chunk_max": {0: "N"}, "h_out": {1: "N"}, "c_out": {1: "N"}, "att_out": {0: "N"},
               "weights": {0: "N", 1: "S"}})
        s = t.search
        meta |= {"graphs": {"encoder": "encoder.onnx", "step": "decoder_step.onnx"},
                 "tokenizers": [p.name for p in model_paths(out, t.config.vocab.joint)], "beam_size": s.beam_size, "length_penalty": s.length_penalty,
                 "max_len_a": s.max_len_a, "max_len_b": s.max_len_b, "max_src_len": s.max_src_len,
                 "batch_size": t.decode.batch_size, "vocab_chunk": VOCAB_CHUNK}
    elif task == "classification":
        from s2s.tasks.classification import VOCAB_FILE, Classifier

        c = Classifier.load(model, device="cpu")
        tokens, lengths = torch.tensor([[4, 5, 6, 7], [8, 9, 0, 0]]), torch.tensor([4, 2])
        _onnx(_Classify(c.model), (tokens, lengths), out / "classifier.onnx", ["tokens", "lengths"], ["probs"],
              {"tokens": {0: "B", 1: "T"}, "lengths": {0: "B"}, "probs": {0: "B"}})
        meta |= {"graphs": {"classifier": "classifier.onnx"}, "vocab": VOCAB_FILE, "lowercase": c.lowercase,
                 "max_text_tokens": c.budget, "truncate": c.mode, "batch_size": c.batch_size}
    elif task == "tagging":
        from s2s.tasks.tagging import BATCH_TOKENS, VOCAB_FILE, Tagger, make_batch

        t = Tagger.load(model, device="cpu")
        m = t.model.eval()
        b = make_batch(t.vocab, [["Alan", "Shearer", "visited", "Paris", "."], ["He", "left", "."], ["EU"]], [2, 1])
        names = ["words", "chars", "cases", "lengths", "word_keys", "positions", "sentence_lengths"]
        _onnx(_Emissions(m), tuple(getattr(b, n) for n in names), out / "tagger.onnx", names, ["emissions"],
              {"words": {0: "R", 1: "T"}, "chars": {0: "R", 1: "T", 2: "C"}, "cases": {0: "R", 1: "T"}, "lengths": {0: "R"},
               "word_keys": {0: "R", 1: "T"}, "positions": {0: "S", 1: "L"}, "sentence_lengths": {0: "S"},
               "emissions": {0: "S", 1: "L"}})
        if m.crf is not None:
            trans, start, end = (x.detach().tolist() for x in m.crf.scores())
        else:  # Viterbi over log-softmax scores with only the scheme's allowed transitions
            trans, start, end = (getattr(m, n).tolist() for n in ("trans_penalty", "start_penalty", "end_penalty"))
        meta |= {"graphs": {"tagger": "tagger.onnx"}, "vocab": VOCAB_FILE, "crf": m.crf is not None, "trans": trans, "start": start,
                 "end": end, "scheme": t.scheme, "context_tokens": t.context_tokens, "batch_size": t.decode.batch_size,
                 "batch_tokens": BATCH_TOKENS}
    else:
        raise S2SError(f"export --format onnx: {task} runs are not exported to ONNX yet (translation, tagging and classification are); "
                       "--format safetensors exports any run")
    (out / ONNX_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    log.info("exported %s to %s (ONNX opset %d)", task, out, ONNX_OPSET)
    return {"format": "onnx", "task": task, "opset": ONNX_OPSET, "out": str(out), "files": sorted(p.name for p in out.iterdir())}
