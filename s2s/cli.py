"""The `s2s` command: train, translate, score, tag, classify, forecast, evaluate, vectors, config, upgrade. Each handler parses,
calls the library, prints."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import signal
import sys
from collections import Counter
from pathlib import Path

from s2s.data.io import flush_stdout, write_stdout
from s2s.data.stream import PROGRESS_EVERY
from s2s.errors import S2SError

log = logging.getLogger(__name__)

EPILOG = "Configs are YAML; `s2s config TASK` prints every key of a task. Errors print one line and exit 2; Ctrl-C exits 130."
WORKERS_HELP = ("batches decoded at once, sharing the torch threads (default: the config's decode.workers; 0 = one batch "
                "per thread on a CPU, which beats one batch on all threads for these small recurrent steps)")


def _where(path: str | None) -> str:
    return path if path and path != "-" else "<stdin>"


def _write_lines(path: str | Path | None, lines: list[str]) -> None:
    from s2s.data.io import write_lines

    write_lines(path, lines)


def cmd_train(args: argparse.Namespace) -> None:
    from s2s import config as config_lib
    from s2s import distributed
    from s2s.train import train

    config = config_lib.load(args.config, args.set)
    run_dir = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    # `kill`, a scheduler's TERM and an INT sent to a background job (which starts with INT ignored) stop
    # training as Ctrl-C does: last.pt is saved where it stopped and the error says how to resume.
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        progress = train(config, run_dir, resume=args.resume)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if distributed.is_main():  # under torchrun: one summary, not one per process
        write_stdout(json.dumps({"run_dir": str(run_dir), "best": progress["best"], "best_step": progress["best_step"],
                                 "steps": progress["step"], "seconds": progress["seconds"]}) + "\n")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from s2s import config as config_lib

    task = config_lib.load(args.config, args.set).task
    if task != "pretraining":
        raise S2SError(f"pretrain: {args.config} is a {task} config; `s2s pretrain` takes task: pretraining "
                       "(`s2s config pretraining` prints one; configs/imdb-pretrain.yaml is an example)")
    cmd_train(args)


def cmd_translate(args: argparse.Namespace) -> None:
    from s2s.device import cpu_workers
    from s2s.tasks.translation import Translator

    if args.format != "json" and (args.n_best is not None or args.attention):
        raise S2SError(f"translate: {'--n-best' if args.n_best is not None else '--attention'} is written only in JSON: add --format json")
    if args.n_best is not None and args.n_best < 1:
        raise S2SError(f"--n-best must be at least 1, got {args.n_best}")
    translator = Translator.load(args.model, device=args.device, amp=args.amp, workers=args.workers)
    n_best, beam_size = args.n_best or 1, args.beam_size or translator.search.beam_size
    if n_best > beam_size:
        raise S2SError(f"translate: --n-best {n_best} is more than the beam keeps ({beam_size}): use --beam-size >= {n_best}")
    in_flight = (args.batch_size or translator.decode.batch_size) * cpu_workers(translator.device, translator.decode.workers)
    with _streamed(args, "translate", args.output, args.raw_output, in_flight=in_flight) as (chunks, out, raw):
        for first, sentences in chunks:
            if args.format == "json":
                lists = translator.translate_nbest(sentences, n_best, beam_size, args.attention, args.batch_size, first_line=first)
                out.write([nb.to_json() for nb in lists])
                if raw is not None:
                    raw.write([" ".join(nb.hypotheses[0].pieces) if nb.hypotheses else "" for nb in lists])
                continue
            ids = translator.translate_ids(sentences, args.beam_size, args.batch_size, first_line=first)
            out.write([translator.sp_tgt.decode(x) for x in ids])
            if raw is not None:
                raw.write([translator.pieces(x) for x in ids])


def cmd_score(args: argparse.Namespace) -> None:
    from s2s.data.parallel import read_parallel
    from s2s.tasks.translation import Translator

    sources, targets = read_parallel(args.src, args.tgt)  # misaligned files fail with both line counts
    translator = Translator.load(args.model, device=args.device, amp=args.amp)
    scores = translator.score(sources, targets, args.batch_size, pieces=args.pieces)
    if args.format == "json":
        lines = [s.to_json() if s is not None else json.dumps({"logprob": None, "per_token": None, "tokens": 0}) for s in scores]
    else:
        lines = [s.to_tsv() if s is not None else "\t\t0" for s in scores]
    _write_lines(args.output, lines)


def cmd_tag(args: argparse.Namespace) -> None:
    from s2s.data.conll import parse_conll
    from s2s.device import cpu_workers
    from s2s.tasks.tagging import Tagger, entity_colours, entity_types, html_page, tagged_conll

    if (args.n_best or args.marginals) and args.format != "json":
        raise S2SError(f"tag: {'--n-best' if args.n_best else '--marginals'} needs --format json (got --format {args.format})")
    if args.n_best is not None and args.n_best < 1:
        raise S2SError(f"--n-best must be at least 1, got {args.n_best}")
    tagger = Tagger.load(args.model, device=args.device, workers=args.workers)
    conll, where, width = args.input_format == "conll", _where(args.input), 0
    more = {"n_best": args.n_best or 0, "marginals": args.marginals}
    in_flight = (args.batch_size or tagger.decode.batch_size) * cpu_workers(tagger.device, tagger.decode.workers)
    colours = entity_colours(entity_types(tagger.vocab.tags))
    with _streamed(args, "tag", args.output, cut=_tag_cut(tagger.context_tokens, conll), in_flight=in_flight) as (chunks, out):
        if args.format == "html":
            out.write(html_page(colours)[0])
        for first, lines in chunks:
            if not conll:
                records = tagger.tag(lines, args.batch_size, first_line=first, **more)
            else:
                sentences = parse_conll(lines, where=where, tagged=False, first_line=first, width=width)
                # The column count the first token line fixed, which the token lines of later chunks must keep.
                width = width or next((len(c) for c in map(str.split, lines) if c and c[0] != "-DOCSTART-"), 0)
                records = tagger.tag_conll(sentences, args.batch_size, **more)
                if args.format == "conll":  # the input's lines, each token line with its predicted tag
                    in_chunk = [dataclasses.replace(s, line=s.line - first + 1) for s in sentences]
                    out.write(tagged_conll(lines, in_chunk, records, args.tag_scheme))
                    continue
            match args.format:
                case "json":
                    out.write([r.to_json() for r in records])
                case "inline":
                    out.write([r.to_inline() for r in records])
                case "html":
                    out.write([r.to_html(colours) for r in records])
                case _:
                    out.write([line for r in records for line in r.to_conll(args.tag_scheme)])
        if args.format == "html":
            out.write(html_page(colours)[1])


def _tag_cut(context_tokens: int, conll: bool):
    """How many lines of a chunk `s2s tag` tags now (see s2s.data.stream.chunks), so that tagging chunk by chunk
    gives what tagging all at once does: whole runs of sentences (what the tagger reads as one text, see runs_of;
    a chunk's last run may go on after it) and, in CoNLL input, a chunk ending at a blank line."""
    from s2s.data.tokenize import tokenize
    from s2s.tasks.tagging import runs_of

    if not conll and not context_tokens:
        return None  # every sentence is read alone

    def cut(lines: list[str], at_end: bool) -> int:
        if not conll:
            lengths = [len(tokenize(line)[0]) for line in lines]
            runs = runs_of(lengths, list(itertools.accumulate(not n for n in lengths)), context_tokens)
            return runs[-1][0] if runs else len(lines)
        rows = [line.split() for line in lines]
        token = [bool(cols) and cols[0] != "-DOCSTART-" for cols in rows]
        starts, lengths, docs, doc = [], [], [], 0  # each sentence's first line, tokens and document
        for i, cols in enumerate(rows):
            if not token[i]:
                doc += bool(cols)  # a -DOCSTART- line
            elif i and token[i - 1]:
                lengths[-1] += 1
            else:
                starts.append(i)
                lengths.append(1)
                docs.append(doc)
        for end in [starts[run[0]] for run in reversed(runs_of(lengths, docs, context_tokens))] or [len(lines)]:
            for j in range(end - 1, -1, -1):  # back over the -DOCSTART- and blank lines before the run
                if token[j]:
                    break
                if not rows[j]:
                    return j + 1
        return 0

    return cut


def cmd_classify(args: argparse.Namespace) -> None:
    from s2s.data.labelled import texts_from_jsonl
    from s2s.tasks.classification import Classifier

    classifier = Classifier.load(args.model, device=args.device)
    input_format, where = args.input_format, _where(args.input)
    if input_format == "auto" and args.input and args.input.lower().endswith(".jsonl"):
        input_format = "jsonl"
    with _streamed(args, "classify", args.output, in_flight=args.batch_size or classifier.batch_size) as (chunks, out):
        for first, lines in chunks:
            # Decided by the first non-blank line (blank lines give empty output lines either way).
            if input_format == "auto" and any(line.strip() for line in lines):
                input_format = "jsonl" if _looks_like_jsonl(lines, classifier.text_field) else "text"
                if input_format == "jsonl":  # labelled JSONL piped in (`s2s classify < test.jsonl`) would
                    # otherwise be classified as raw JSON text, its label included
                    log.info("%s: read as JSONL: its first line is a JSON object with the text field %r "
                             "(--input-format text reads it as text)", where, classifier.text_field)
            texts = texts_from_jsonl(lines, where, classifier.text_field, first) if input_format == "jsonl" else lines
            predictions = classifier.predict(texts, args.batch_size)
            if args.format == "json":
                out.write([p.to_json() if p is not None else "" for p in predictions])
            else:
                out.write([p.to_tsv() if p is not None else "" for p in predictions])


@contextlib.contextmanager
def _streamed(args: argparse.Namespace, what: str, *outputs: str | None, cut=None, in_flight: int = 0):
    """The input of a prediction command (--input FILE or stdin) in chunks of (number of the first line, lines)
    with progress on stderr (see s2s.data.stream.chunks: cut, in_flight), and a LineWriter for each output: the
    first to stdout when None, the others only when given (else None)."""
    from s2s.data.stream import LineReader, LineWriter, Progress, chunks

    files = [Path(p) for p in (args.input, *outputs) if p not in (None, "-")]
    for i, path in enumerate(files):
        for other in files[:i]:
            if path.resolve() == other.resolve() or (path.exists() and other.exists() and path.samefile(other)):
                raise S2SError(f"{path}: the same file as {other}: output is written while the input is read, so each "
                               "output needs a file of its own")
    with LineReader(args.input) as reader, contextlib.ExitStack() as stack:
        writers = [stack.enter_context(LineWriter(p)) if p or i == 0 else None for i, p in enumerate(outputs)]
        # No bar when the output itself goes to the terminal: it shows how far the run is, and a bar would garble it.
        to_terminal = outputs[0] in (None, "-") and sys.stdout is not None and sys.stdout.isatty()
        progress = Progress(what, reader, bar=not to_terminal)
        yield stack.enter_context(contextlib.closing(chunks(reader, cut, progress, in_flight=in_flight))), *writers


def cmd_forecast(args: argparse.Namespace) -> None:
    from s2s.tasks.forecasting import Forecaster, forecast_lines

    forecaster = Forecaster.load(args.model, device=args.device)
    if args.input is None or args.input == "-":
        raise S2SError("forecast reads a CSV file: give --input FILE")
    _write_lines(args.output, forecast_lines(forecaster, forecaster.read(args.input)))


def _looks_like_jsonl(lines: list[str], text_field: str) -> bool:
    """Whether the first non-blank line is a JSON object holding `text_field` as a string."""
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        return False
    try:
        row = json.loads(first)
    except ValueError:
        return False
    return isinstance(row, dict) and isinstance(row.get(text_field), str)


def cmd_plot(args: argparse.Namespace) -> None:
    from s2s import plot

    plot.check_output(args.out)
    plot.require_matplotlib("s2s plot")  # before loading a model or reading data
    if args.what == "curves":
        runs = plot.plot_curves(args.out, args.run)
        summary = {"runs": len(runs), "points": sum(len(s) for c in runs for s in c.series.values())}
    elif args.what == "confusion":
        from s2s.tasks.classification import Classifier

        classifier = Classifier.load(args.model, device=args.device)
        scores, _ = classifier.evaluate_file(args.data, args.batch_size)
        plot.plot_confusion(args.out, scores["confusion"], classifier.vocab.labels.items,
                            f"{Path(args.data).name}: accuracy {scores['accuracy']:.2f}")
        summary = {"accuracy": scores["accuracy"], "examples": sum(map(sum, scores["confusion"]))}
    else:
        from s2s.tasks.translation import Translator

        translator = Translator.load(args.model, device=args.device)
        found = translator.translate_nbest([args.text], 1, args.beam_size, attention=True)[0]
        if not found.hypotheses:
            raise S2SError("plot attention: --text is empty: nothing to translate")
        best = found.hypotheses[0]
        plot.plot_attention(args.out, best.attention, found.source_pieces, best.pieces)
        summary = {"translation": best.text}
    write_stdout(json.dumps({"plot": args.out, **summary}, ensure_ascii=False) + "\n")


def cmd_vectors(args: argparse.Namespace) -> None:
    from s2s.data.word_vectors import read_corpus, train_word_vectors

    if not args.text and not args.conll:
        raise S2SError("vectors needs some text: --text FILE and/or --conll FILE")
    corpus = read_corpus(args.text, args.conll, lowercase=not args.cased)
    counts = Counter(w for text in corpus for w in text)
    if counts and max(counts.values()) < args.min_count:  # gensim would fail with "you must first build vocabulary"
        raise S2SError(f"vectors: no word occurs --min-count={args.min_count} times (the most frequent, "
                       f"{max(counts, key=counts.get)!r}, {max(counts.values())} times)")
    count = train_word_vectors(corpus, args.out, args.dim, args.window, args.min_count, args.epochs, args.threads, args.seed)
    write_stdout(json.dumps({"vectors": args.out, "words": count, "dim": args.dim, "texts": len(corpus),
                             "tokens": sum(map(len, corpus))}) + "\n")


# `s2s evaluate` options that some task takes (each task module's EVALUATE_FLAGS says which); the others are common.
TASK_FLAGS = {"src": "--src", "ref": "--ref", "beam_size": "--beam-size", "amp": "--amp", "workers": "--workers",
              "conll": "--conll", "scheme": "--scheme", "data": "--data", "plot": "--plot", "plot_windows": "--plot-windows"}


def cmd_evaluate(args: argparse.Namespace) -> None:
    from s2s import tasks
    from s2s.checkpoint import run_task

    task = run_task(args.model[0])
    module = tasks.get(task)
    for name, flag in TASK_FLAGS.items():
        if getattr(args, name) not in (None, False) and name not in module.EVALUATE_FLAGS:
            raise S2SError(f"evaluate: {flag} does not apply to {args.model[0]}, a {task} run "
                           f"(it takes {', '.join(TASK_FLAGS[n] for n in module.EVALUATE_FLAGS)} or --split)")
    for run in args.model[1:]:
        if run_task(run) != task:
            raise S2SError(f"evaluate: {run} is a {run_task(run)} run, {args.model[0]} a {task} run")
    args.hyp_prefix = _eval_prefix(args)
    scores, report, outputs = module.evaluate(args)
    try:
        write_stdout((json.dumps(scores) if args.json else "\n".join(report)) + "\n")
    except (S2SError, BrokenPipeError):
        _write_outputs(outputs)  # the predictions are kept however stdout fails (closed, a full disk)
        raise
    try:
        _write_outputs(outputs)
    except S2SError as e:  # e.g. a read-only run directory: the scores are out, only the files are missing
        raise S2SError(f"{e}; the scores above stand, but the predictions were not saved "
                       "(--hyp-prefix PATH writes them elsewhere)") from None


def _eval_prefix(args: argparse.Namespace) -> str | None:
    """Where `s2s evaluate` writes its predictions: --hyp-prefix, else RUN/eval/ and the split's name or the
    input file's name with a short hash of its absolute path, so that files of one name in two folders do
    not overwrite each other's predictions (None before the task has said what input it wants)."""
    if args.hyp_prefix:
        return args.hyp_prefix
    source = args.src or args.conll or args.data
    if args.split:
        name = args.split
    elif source:
        path = Path(source)
        name = f"{path.name}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
    else:
        return None
    if len(args.model) > 1:
        name += "-ensemble"
    from s2s.checkpoint import run_dir_of

    return str(run_dir_of(args.model[0]) / "eval" / name)


def _write_outputs(outputs: dict[str, list[str]]) -> None:
    for path, lines in outputs.items():
        _write_lines(path, lines)


def cmd_config(args: argparse.Namespace) -> None:
    from s2s.config import describe

    write_stdout(describe(args.task))


def cmd_upgrade(args: argparse.Namespace) -> None:
    from s2s import config as config_lib
    from s2s.checkpoint import upgrade

    for target in args.run:
        path = Path(target)
        if path.is_file():  # a config file
            rewritten = config_lib.upgrade_file(path)
            write_stdout(f"{path}: {'rewritten in' if rewritten else 'already in'} the s2s 0.2 layout\n")
            continue
        done = upgrade(path)
        write_stdout(f"{path}: {'rewrote ' + ', '.join(done) + ' in the s2s 0.2 layout' if done else 'already in the s2s 0.2 layout'}\n")


def cmd_serve(args: argparse.Namespace) -> None:
    from s2s.serve import Limits, serve

    limits = Limits(max_body_bytes=args.max_body_kb * 1024, max_texts=args.max_texts, max_tokens=args.max_tokens,
                    max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size, timeout_s=args.timeout,
                    continuous=args.batching == "continuous")
    serve(args.model, args.host, args.port, limits, threads=args.threads)


def cmd_export(args: argparse.Namespace) -> None:
    from s2s.export import export

    write_stdout(json.dumps(export(args.model, args.format, args.out)) + "\n")


def _predict_command(sub, name: str, help: str, description: str, model_help: str, inputs: str, outputs: str,
                     ensemble: bool = False, streamed: bool = True) -> argparse.ArgumentParser:
    """A subcommand that reads input with a trained run and writes one record per input (`streamed`: chunk by chunk)."""
    if streamed:
        description += (" The input is read in chunks (stdin as it arrives) and each chunk's output is written as soon as it is "
                        "done: output starts at once, and what is written stays if the run is stopped. Progress goes to stderr: "
                        f"a bar on a terminal, else a log line every {PROGRESS_EVERY:.0f} s; none with -q.")
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("--model", required=True, nargs="+" if ensemble else None, metavar="RUN_DIR", help=model_help)
    p.add_argument("--input", metavar="FILE", help=f"{inputs} (default: stdin)")
    p.add_argument("--output", metavar="FILE", help=f"{outputs} (default: stdout)")
    return p


def _format_options(p: argparse.ArgumentParser, inputs: dict[str, str], outputs: dict[str, str]) -> None:
    """--input-format and --format, each with its choices (the first the default) and what they mean."""
    for flag, choices in (("--input-format", inputs), ("--format", outputs)):
        p.add_argument(flag, default=next(iter(choices)), choices=list(choices),
                       help="; ".join(f"{name}: {meaning}" for name, meaning in choices.items()) + f" (default: {next(iter(choices))})")


def _run_options(p: argparse.ArgumentParser, batch_help: str) -> None:
    p.add_argument("--batch-size", type=int, metavar="N", help=f"{batch_help} (default: decode.batch_size)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto (CUDA when present)")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error (subcommands inherit the class)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _training_args(p: argparse.ArgumentParser, config_help: str) -> None:
    """The arguments `s2s train` and `s2s pretrain` share."""
    p.add_argument("config", help=config_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pt exactly where it stopped")


def build_parser() -> argparse.ArgumentParser:
    from s2s import __version__
    from s2s.tasks import TASKS

    parser = Parser(prog="s2s", description="Recurrent sequence models: train, translate, tag, classify, evaluate.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"s2s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train a model. The run directory receives the resolved config, SentencePiece models, "
        "best.pt / last.pt checkpoints and metrics.jsonl.",
        epilog="`s2s config TASK` prints every key of a task with its default and what it does.",
    )
    _training_args(p, "YAML config (see configs/)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "pretrain",
        help="pretrain the shared embedding + encoder as a bidirectional language model on unlabelled text",
        description="Train the shared embedding and encoder as a language model (forward direction: next word; backward: previous "
        "word) on unlabelled text, tokenised as the head it will start (pretraining.head). Same run directory, resume and "
        "metrics.jsonl (dev perplexity) as `s2s train`; a head starts from it with --set encoder.init=RUN_DIR.",
        epilog="`s2s config pretraining` prints every key; docs/pretraining.md walks through it.",
    )
    _training_args(p, "YAML config with task: pretraining (see configs/*pretrain*.yaml)")
    p.set_defaults(func=cmd_pretrain)

    p = _predict_command(sub, "translate", "translate raw sentences, one per line", "Translate raw sentences (one per line, stdin by "
                         "default) into detokenized text, one output line per input line, in input order. An empty line gives an empty "
                         "line; inputs longer than translation.max_src_len subword tokens are truncated with a warning.",
                         "a run directory made by `s2s train` with task: translation", "source sentences", "translations")
    p.add_argument("--raw-output", metavar="FILE", help="also write the raw subword output here, chunk by chunk with --output")
    p.add_argument("--beam-size", type=int, metavar="N", help="beam size, 1 = greedy (default: the config's translation.beam_size)")
    _run_options(p, "sentences per batch; beam search keeps N in flight, starting the next as others finish")
    p.add_argument("--amp", action="store_true", help="decode in bf16 mixed precision (CUDA, or a CPU with native bf16 such as "
                   "AMX): faster, outputs may differ slightly from fp32 (default: the config's decode.amp)")
    p.add_argument("--workers", type=int, metavar="N", help=WORKERS_HELP)
    p.add_argument("--format", default="text", choices=["text", "json"], help="text: the best translation; json: one object "
                   "per line, {source_pieces, hypotheses: [{text, pieces, logprob, score}]}, best first by score, the beam's "
                   "length-normalised log-probability (default: text)")
    p.add_argument("--n-best", type=int, metavar="N", help="--format json: the N best hypotheses, at most --beam-size; fewer "
                   "when the best ended before N others had (default: 1)")
    p.add_argument("--attention", action="store_true", help="--format json: add each hypothesis' attention (a row per target "
                   "piece, EOS's left out, over the source pieces) and alignment ('source-target' piece indices, each target "
                   "piece's most attended source piece, as fast_align writes)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("score", help="log-probability of given translations under a translation model (teacher forcing)",
                       description="Score each target line as a translation of its source line: the log-probability the model gives "
                       "its subword pieces and EOS (total, per token, and each token's), for filtering a corpus or reranking. "
                       "One output line per pair; a pair with an empty source gives null scores.")
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a run directory made by `s2s train` with task: translation")
    p.add_argument("--src", required=True, metavar="FILE", help="source sentences, one per line")
    p.add_argument("--tgt", required=True, metavar="FILE", help="their translations, line by line")
    p.add_argument("--pieces", action="store_true", help="--tgt holds subword pieces separated by spaces, as "
                   "`translate --raw-output` writes (default: raw text, encoded with the model's SentencePiece)")
    p.add_argument("--output", metavar="FILE", help="scores (default: stdout)")
    p.add_argument("--format", default="json", choices=["json", "tsv"], help="json: {logprob, per_token, tokens, pieces, "
                   "token_logprobs}; tsv: 'logprob<TAB>per_token<TAB>tokens' (default: json)")
    _run_options(p, "pairs per batch")
    p.add_argument("--amp", action="store_true", help="score in bf16 mixed precision (default: the config's decode.amp)")
    p.set_defaults(func=cmd_score)

    p = _predict_command(sub, "tag", "tag named entities in raw sentences or a CoNLL file",
                         "Tag sentences with a tagging model: one record per input sentence, in input order; "
                         "an empty input line gives an empty record. Raw text is tokenised by one rule that keeps "
                         "character offsets: abbreviations (U.S.) and numbers (3,000.5) stay whole, words keep inner "
                         "hyphens and apostrophes, every other non-space character is a token. A model trained with "
                         "tagging.context_tokens reads consecutive sentences of a document together: in text input an "
                         "empty line ends a document, in CoNLL input a -DOCSTART- line does.",
                         "a run directory made by `s2s train` with task: tagging; several (trained on the same data and "
                         "vectors, e.g. different train.seed) tag as one ensemble that averages their scores",
                         "sentences", "tagged records", ensemble=True)
    _format_options(p, {"text": "one raw sentence per line", "conll": "tokens in the first column, blank line between sentences"},
                    {"conll": "'token tag' lines and a blank line per sentence; from CoNLL input, the input's lines with "
                              "the predicted tag last (token [POS [chunk]] tag: a 4th input column, a gold tag, is "
                              "replaced), -DOCSTART- and blank lines kept",
                     "json": "one object per sentence with tokens and entities (text, type, token and character offsets, score)",
                     "inline": "[PER Alan Shearer] ...",
                     "html": "a web page, a paragraph per sentence: the text escaped, entities highlighted, one colour per type"})
    p.add_argument("--tag-scheme", default="iob2", choices=["iob1", "iob2", "bioes"], help="tags of --format conll (default: iob2)")
    p.add_argument("--n-best", type=int, metavar="K", help="--format json: add n_best, the K most probable tag sequences (IOB2) with "
                   "their probabilities and entities, best first (exact with a CRF: list Viterbi)")
    p.add_argument("--marginals", action="store_true", help="--format json: add marginals, each token's probability of each of the "
                   "model's tags (with a CRF: by forward-backward)")
    _run_options(p, "sentences per batch")
    p.add_argument("--workers", type=int, metavar="N", help=WORKERS_HELP.replace("decoded", "tagged"))
    p.set_defaults(func=cmd_tag)

    p = _predict_command(sub, "classify", "classify texts, one per line (or JSONL), with a label and its probability",
                         "Classify texts with a classification model: one output line per input line, in input order, with the predicted "
                         "label and its probability; an empty input line gives an empty output line. Texts are tokenised and truncated "
                         "as in training (data.max_text_tokens, data.truncate).", "a run directory made by `s2s train` with task: "
                         "classification", "texts", "predictions")
    _format_options(p, {"auto": "jsonl when --input ends in .jsonl or the first non-blank line is a JSON object with the "
                        "model's text field (said in a log line), else text", "text": "one raw text per line",
                        "jsonl": "one JSON object per line with the model's text field (data.text_field)"},
                    {"tsv": "'label<TAB>probability'", "json": '{"label", "prob", "probs": every label\'s probability}'})
    _run_options(p, "texts per batch")
    p.set_defaults(func=cmd_classify)

    p = _predict_command(sub, "forecast", "forecast the rows after a history CSV", "Forecast the next forecasting.horizon "
                         "rows after the last forecasting.seq_len rows of a CSV with the model's timestamp column and variables; "
                         "writes a CSV of the forecast rows, with timestamps one step (the history's last) apart, in original units.",
                         "a run directory made by `s2s train` with task: forecasting", "history CSV", "forecast CSV", streamed=False)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto (CUDA when present)")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("plot", help="draw training curves, a confusion matrix or an attention heatmap as PNG or SVG",
                       description="Draw a figure into a .png or .svg file (by its extension). Needs matplotlib: "
                       'pip install -e ".[plot]".')
    kinds = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    q = kinds.add_parser("curves", help="training loss, dev score and learning rate of runs, against step and wall time",
                         description="One figure from the runs' metrics.jsonl: training loss, dev score (the metric that "
                         "selects best.pt) and learning rate, against steps (left) and wall time (right), a line per run.")
    q.add_argument("run", nargs="+", metavar="RUN_DIR", help="run directories made by `s2s train`")
    q.add_argument("--out", required=True, metavar="FILE", help="the figure: FILE.png or FILE.svg")
    q.set_defaults(func=cmd_plot)
    q = kinds.add_parser("confusion", help="a classifier's confusion matrix on a labelled file",
                         description="Classify a labelled JSONL, TSV or CSV file and draw the confusion matrix (rows gold, "
                         "columns predicted), each cell with its count.")
    q.add_argument("--model", required=True, metavar="RUN_DIR", help="a classification run")
    q.add_argument("--data", required=True, metavar="FILE", help="labelled JSONL, TSV or CSV")
    q.add_argument("--out", required=True, metavar="FILE", help="the figure: FILE.png or FILE.svg")
    _run_options(q, "texts per batch")
    q.set_defaults(func=cmd_plot)
    q = kinds.add_parser("attention", help="a translation's attention weights over its source, as a heatmap",
                         description="Translate one sentence (beam search) and draw the best translation's attention: "
                         "a row per target piece, a column per source piece.")
    q.add_argument("--model", required=True, metavar="RUN_DIR", help="a translation run")
    q.add_argument("--text", required=True, help="the source sentence")
    q.add_argument("--out", required=True, metavar="FILE", help="the figure: FILE.png or FILE.svg")
    q.add_argument("--beam-size", type=int, metavar="N", help="default: the config's translation.beam_size")
    q.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto (CUDA when present)")
    q.set_defaults(func=cmd_plot)

    p = sub.add_parser("vectors", help="train word vectors on unlabelled text for a tagger's embeddings (vocab.word_vectors)",
                       description="Train skip-gram word vectors (gensim word2vec) on unlabelled text and write them in "
                       "word2vec text format. Text is tokenised and normalised as the tagger does (lowercased, digits "
                       "mapped to 0), so `vocab.word_vectors: OUT` in a tagging config finds the tagger's words. "
                       "Needs gensim: pip install 's2s[vectors]'. With --threads above 1 the vectors are not bit-reproducible.")
    p.add_argument("--text", action="append", default=[], metavar="FILE",
                   help="raw text, one text per line; a .jsonl file gives the 'text' field of each object (repeatable)")
    p.add_argument("--conll", action="append", default=[], metavar="FILE", help="the tokens of a CoNLL file (repeatable)")
    p.add_argument("--out", required=True, metavar="FILE", help="vectors file to write (word2vec text format)")
    p.add_argument("--dim", type=int, default=100, help="vector size; the tagger's encoder.emb_dim must match (default: 100)")
    p.add_argument("--window", type=int, default=5, help="context window (default: 5)")
    p.add_argument("--min-count", type=int, default=3, help="ignore words seen fewer times (default: 3)")
    p.add_argument("--epochs", type=int, default=5, help="passes over the text (default: 5)")
    p.add_argument("--threads", type=int, default=2, help="worker threads (default: 2)")
    p.add_argument("--seed", type=int, default=1234, help="random seed, 0 to 2**32 - 1 (default: 1234)")
    p.add_argument("--cased", action="store_true", help="keep case (for a tagger trained with vocab.lowercase: false)")
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("evaluate", help="score a trained run on labelled data: sacreBLEU, entity F1 or accuracy, by the run's task",
                       description="Score a run on labelled data; what it takes and reports follows the run's task. "
                       "Translation: --src FILE --ref FILE (or --split), detokenized sacreBLEU BLEU and chrF with their signatures; "
                       "hypotheses are kept next to the raw subword output. Tagging: --conll FILE (or --split), entity precision, "
                       "recall and F1 per type and micro-averaged on exact span and type (conlleval-equivalent); several --model "
                       "runs evaluate as one ensemble. Classification: --data FILE (labelled JSONL, TSV or CSV; or --split), "
                       "accuracy, macro-F1 and the confusion matrix. Forecasting: --split (or --data CSV), MSE and MAE on z-scored values over "
                       "every window, next to the repeat-last-value and a linear baseline; --plot FILE.png draws a few windows. An option of another task is an error.")
    p.add_argument("--model", required=True, nargs="+", metavar="RUN_DIR",
                   help="the run directory to evaluate (tagging: several runs evaluate as one ensemble)")
    p.add_argument("--split", choices=["dev", "test"], help="the run config's dev or test split, instead of a file")
    _run_options(p, "sentences or texts per batch")
    p.add_argument("--hyp-prefix", metavar="PATH", help="write the predictions to PATH.hyp and PATH.raw (translation), PATH.conll "
                   "(tagging), PATH.pred (classification) or PATH.tsv (forecasting) (default: RUN_DIR/eval/ and the split's name, or the input "
                   "file's name and a short hash of its absolute path)")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    g = p.add_argument_group("translation")
    g.add_argument("--src", metavar="FILE", help="source sentences")
    g.add_argument("--ref", metavar="FILE", help="reference translations, aligned with --src")
    g.add_argument("--beam-size", type=int, metavar="N", help="default: translation.beam_size")
    g.add_argument("--amp", action="store_true", help="decode in bf16 mixed precision (CUDA, or a CPU with native bf16 such as "
                   "AMX): faster, outputs may differ slightly from fp32 (default: the config's decode.amp)")
    g.add_argument("--workers", type=int, metavar="N", help="translation and tagging: " + WORKERS_HELP)
    g = p.add_argument_group("tagging")
    g.add_argument("--conll", metavar="FILE", help="a gold CoNLL file to tag and score")
    g.add_argument("--scheme", choices=["iob1", "iob2", "bioes"], help="tag scheme of --conll (default: the run config's data.scheme)")
    g = p.add_argument_group("classification")
    g.add_argument("--data", metavar="FILE", help="a labelled JSONL, TSV or CSV file to classify and score (forecasting: a CSV "
                   "series, every window scored)")
    g = p.add_argument_group("forecasting")
    g.add_argument("--plot", metavar="FILE.png", help="draw forecast against truth for a few windows (needs matplotlib: "
                   'pip install -e ".[plot]")')
    g.add_argument("--plot-windows", type=int, metavar="N", help="how many evenly spaced windows --plot draws (default: 4)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("config", help="print the complete default config of a task, commented",
                       description="Print every config key of a task with its default and what it does, as YAML that "
                       "`s2s train` accepts: s2s config tagging > ner.yaml; s2s train ner.yaml --set data.dir=DATA")
    p.add_argument("task", choices=list(TASKS))
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("upgrade", help="rewrite an s2s 0.1 run directory or config file in the 0.2 config layout",
                       description="s2s 0.1 kept the encoder's and every head's keys in one `model` section. Run directories "
                       "of 0.1 still load as they are; this rewrites their config.yaml and checkpoints (weights untouched), "
                       "or a config file, in the 0.2 layout.")
    p.add_argument("run", nargs="+", metavar="RUN_DIR_OR_CONFIG")
    p.set_defaults(func=cmd_upgrade)

    p = sub.add_parser("serve", help="serve trained runs over HTTP: /translate, /tag, /classify, a web page at /",
                       description="Load each run once and serve its task over HTTP (FastAPI + uvicorn: pip install -e \".[serve]\"): "
                       "POST /translate, /tag, /classify (JSON {\"texts\": [...]}), GET /health, /models, an OpenAPI page at /docs and "
                       "a web page at /. Texts of concurrent requests are decoded together in batches. TERM or Ctrl-C finish the "
                       "requests in flight, then exit 0.")
    p.add_argument("--model", required=True, action="append", metavar="RUN_DIR", help="a run directory (repeatable: one per task or more)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="default: 8000")
    p.add_argument("--threads", type=int, default=1, help="torch threads for decoding (default: 1)")
    p.add_argument("--max-batch", type=int, default=64, metavar="N", help="texts decoded together at most (default: 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="how long a batch waits for more texts (default: 5)")
    p.add_argument("--queue-size", type=int, default=1024, metavar="N", help="texts waiting at most; more are refused with 503 (default: 1024)")
    p.add_argument("--batching", default="continuous", choices=["continuous", "rounds"], help="beam search: continuous (sentences join "
                   "a running search as others end, each answered the step it ends) or rounds (the texts that arrived together, "
                   "answered when the round ends; greedy and n-best always decode in rounds) (default: continuous)")
    p.add_argument("--max-texts", type=int, default=64, metavar="N", help="texts per request at most (default: 64)")
    p.add_argument("--max-tokens", type=int, default=400, metavar="N", help="whitespace-separated tokens per text at most (default: 400)")
    p.add_argument("--max-body-kb", type=int, default=256, metavar="KB", help="request body size at most (default: 256)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds a request may take before it is cancelled (default: 30)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export a run as safetensors weights or ONNX graphs",
                       description="safetensors: the weights without pickle, with the config and tokenizer files; OUT loads as a run "
                       "directory (Translator.load(OUT), --model OUT). onnx: translation as an encoder and a decoder-step graph, "
                       "classification as one graph, run by s2s.onnx_runtime with onnxruntime, numpy and sentencepiece (no torch). "
                       'Needs pip install -e ".[onnx]".')
    p.add_argument("--model", required=True, metavar="RUN_DIR", help="a run directory made by `s2s train` (or a checkpoint in one)")
    p.add_argument("--format", required=True, choices=["safetensors", "onnx"])
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (created)")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("datasets", "urllib3", "httpx", "filelock", "fsspec", "gensim"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        for name, (low, high) in INT_RANGES.items():
            value = getattr(args, name, None)
            if value is not None and not low <= value <= high:
                flag = "--" + name.replace("_", "-")
                raise S2SError(f"{flag} must be at least {low}, got {value}" if value < low else f"{flag} must be at most {high}, got {value}")
        args.func(args)
        flush_stdout()  # what is still buffered: a failure shows here as one line, not at exit
    except S2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        return 1
    return 0


# Integer options and their ranges; the least value of each is checked before anything runs.
INT_RANGES = {"beam_size": (1, 1 << 31), "batch_size": (1, 1 << 31), "workers": (0, 1 << 31), "dim": (1, 1 << 31),
              "window": (1, 1 << 31), "min_count": (1, 1 << 31), "epochs": (1, 1 << 31), "threads": (1, 1 << 31),
              "seed": (0, (1 << 32) - 1)}


if __name__ == "__main__":
    sys.exit(main())
