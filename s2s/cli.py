"""The `s2s` command: train, translate, tag, classify, evaluate, vectors, config, upgrade. Each handler parses,
calls the library, prints."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from s2s.errors import S2SError

EPILOG = "Configs are YAML; `s2s config TASK` prints every key of a task. Errors print one line and exit 2; Ctrl-C exits 130."
WORKERS_HELP = ("batches decoded at once, sharing the torch threads (default: the config's decode.workers; 0 = one batch "
                "per thread on a CPU, which beats one batch on all threads for these small recurrent steps)")


def _read_input(path: str | None) -> list[str]:
    from s2s.data.io import decode_lines, read_lines

    if path is None or path == "-":
        return decode_lines(sys.stdin.buffer.read(), "<stdin>")
    return read_lines(path)


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
        print(json.dumps({"run_dir": str(run_dir), "best": progress["best"], "best_step": progress["best_step"],
                          "steps": progress["step"], "seconds": progress["seconds"]}))


def cmd_translate(args: argparse.Namespace) -> None:
    from s2s.tasks.translation import Translator

    translator = Translator.load(args.model, device=args.device, amp=args.amp, workers=args.workers)
    sentences = _read_input(args.input)
    ids = translator.translate_ids(sentences, args.beam_size, args.batch_size)
    _write_lines(args.output, [translator.sp_tgt.decode(x) for x in ids])
    if args.raw_output:
        _write_lines(args.raw_output, [translator.pieces(x) for x in ids])


def cmd_tag(args: argparse.Namespace) -> None:
    from s2s.data.conll import parse_conll
    from s2s.tasks.tagging import Tagger

    tagger = Tagger.load(args.model, device=args.device, workers=args.workers)
    lines = _read_input(args.input)
    if args.input_format == "conll":
        where = args.input if args.input and args.input != "-" else "<stdin>"
        records = tagger.tag_conll(parse_conll(lines, where=where, tagged=False), args.batch_size)
    else:
        records = tagger.tag(lines, args.batch_size)
    match args.format:
        case "json":
            out = [r.to_json() for r in records]
        case "inline":
            out = [r.to_inline() for r in records]
        case _:
            out = [line for r in records for line in r.to_conll(args.tag_scheme)]
    _write_lines(args.output, out)


def cmd_classify(args: argparse.Namespace) -> None:
    from s2s.data.labelled import texts_from_jsonl
    from s2s.tasks.classification import Classifier

    classifier = Classifier.load(args.model, device=args.device)
    lines = _read_input(args.input)
    input_format = args.input_format
    if input_format == "auto":
        input_format = "jsonl" if args.input and args.input.lower().endswith(".jsonl") else "text"
    if input_format == "jsonl":
        where = args.input if args.input and args.input != "-" else "<stdin>"
        texts = texts_from_jsonl(lines, where, classifier.text_field)
    else:
        texts = lines
    predictions = classifier.predict(texts, args.batch_size)
    if args.format == "json":
        out = [p.to_json() if p is not None else "" for p in predictions]
    else:
        out = [p.to_tsv() if p is not None else "" for p in predictions]
    _write_lines(args.output, out)


def cmd_vectors(args: argparse.Namespace) -> None:
    from s2s.data.word_vectors import read_corpus, train_word_vectors

    if not args.text and not args.conll:
        raise S2SError("vectors needs some text: --text FILE and/or --conll FILE")
    corpus = read_corpus(args.text, args.conll, lowercase=not args.cased)
    count = train_word_vectors(corpus, args.out, args.dim, args.window, args.min_count, args.epochs, args.threads, args.seed)
    print(json.dumps({"vectors": args.out, "words": count, "dim": args.dim, "texts": len(corpus), "tokens": sum(map(len, corpus))}))


# `s2s evaluate` options that some task takes (each task module's EVALUATE_FLAGS says which); the others are common.
TASK_FLAGS = {"src": "--src", "ref": "--ref", "beam_size": "--beam-size", "amp": "--amp", "workers": "--workers",
              "conll": "--conll", "scheme": "--scheme", "data": "--data"}


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
    scores, report = module.evaluate(args)
    print(json.dumps(scores) if args.json else "\n".join(report))


def cmd_config(args: argparse.Namespace) -> None:
    from s2s.config import describe

    sys.stdout.write(describe(args.task))


def cmd_upgrade(args: argparse.Namespace) -> None:
    from s2s import config as config_lib
    from s2s.checkpoint import upgrade

    for target in args.run:
        path = Path(target)
        if path.is_file():  # a config file
            raw = config_lib.read_yaml(path)
            if config_lib.is_legacy(raw):
                config_lib.save(config_lib.read(raw, str(path)), path)
                print(f"{path}: rewritten in the s2s 0.2 layout")
            else:
                print(f"{path}: already in the s2s 0.2 layout")
            continue
        done = upgrade(path)
        print(f"{path}: {'rewrote ' + ', '.join(done) + ' in the s2s 0.2 layout' if done else 'already in the s2s 0.2 layout'}")


def _predict_command(sub, name: str, help: str, description: str, model_help: str, inputs: str, outputs: str,
                     ensemble: bool = False) -> argparse.ArgumentParser:
    """A subcommand that reads input with a trained run and writes one record per input."""
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


def build_parser() -> argparse.ArgumentParser:
    from s2s import __version__
    from s2s.tasks import TASKS

    parser = argparse.ArgumentParser(prog="s2s", description="Recurrent sequence models: train, translate, tag, classify, evaluate.", epilog=EPILOG)
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
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pt exactly where it stopped")
    p.set_defaults(func=cmd_train)

    p = _predict_command(sub, "translate", "translate raw sentences, one per line", "Translate raw sentences (one per line, stdin by "
                         "default) into detokenized text, one output line per input line, in input order. An empty line gives an empty "
                         "line; inputs longer than translation.max_src_len subword tokens are truncated with a warning.",
                         "a run directory made by `s2s train` with task: translation", "source sentences", "translations")
    p.add_argument("--raw-output", metavar="FILE", help="also write the raw subword output here")
    p.add_argument("--beam-size", type=int, metavar="N", help="beam size, 1 = greedy (default: the config's translation.beam_size)")
    _run_options(p, "sentences per batch; beam search keeps N in flight, starting the next as others finish")
    p.add_argument("--amp", action="store_true", help="decode in bf16 mixed precision (CUDA, or a CPU with native bf16 such as "
                   "AMX): faster, outputs may differ slightly from fp32 (default: the config's decode.amp)")
    p.add_argument("--workers", type=int, metavar="N", help=WORKERS_HELP)
    p.set_defaults(func=cmd_translate)

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
                    {"conll": "'token tag' lines and a blank line per sentence",
                     "json": "one object per sentence with tokens and entities (text, type, token and character offsets, score)",
                     "inline": "[PER Alan Shearer] ..."})
    p.add_argument("--tag-scheme", default="iob2", choices=["iob1", "iob2", "bioes"], help="tags of --format conll (default: iob2)")
    _run_options(p, "sentences per batch")
    p.add_argument("--workers", type=int, metavar="N", help=WORKERS_HELP.replace("decoded", "tagged"))
    p.set_defaults(func=cmd_tag)

    p = _predict_command(sub, "classify", "classify texts, one per line (or JSONL), with a label and its probability",
                         "Classify texts with a classification model: one output line per input line, in input order, with the predicted "
                         "label and its probability; an empty input line gives an empty output line. Texts are tokenised and truncated "
                         "as in training (data.max_text_tokens, data.truncate).", "a run directory made by `s2s train` with task: "
                         "classification", "texts", "predictions")
    _format_options(p, {"auto": "jsonl when --input ends in .jsonl, else text", "text": "one raw text per line",
                        "jsonl": "one JSON object per line with the model's text field (data.text_field)"},
                    {"tsv": "'label<TAB>probability'", "json": '{"label", "prob", "probs": every label\'s probability}'})
    _run_options(p, "texts per batch")
    p.set_defaults(func=cmd_classify)

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
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--cased", action="store_true", help="keep case (for a tagger trained with vocab.lowercase: false)")
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("evaluate", help="score a trained run on labelled data: sacreBLEU, entity F1 or accuracy, by the run's task",
                       description="Score a run on labelled data; what it takes and reports follows the run's task. "
                       "Translation: --src FILE --ref FILE (or --split), detokenized sacreBLEU BLEU and chrF with their signatures; "
                       "hypotheses are kept next to the raw subword output. Tagging: --conll FILE (or --split), entity precision, "
                       "recall and F1 per type and micro-averaged on exact span and type (conlleval-equivalent); several --model "
                       "runs evaluate as one ensemble. Classification: --data FILE (labelled JSONL, TSV or CSV; or --split), "
                       "accuracy, macro-F1 and the confusion matrix. An option of another task is an error.")
    p.add_argument("--model", required=True, nargs="+", metavar="RUN_DIR",
                   help="the run directory to evaluate (tagging: several runs evaluate as one ensemble)")
    p.add_argument("--split", choices=["dev", "test"], help="the run config's dev or test split, instead of a file")
    _run_options(p, "sentences or texts per batch")
    p.add_argument("--hyp-prefix", metavar="PATH", help="write the predictions to PATH.hyp and PATH.raw (translation), PATH.conll "
                   "(tagging) or PATH.pred (classification) (default: RUN_DIR/eval/<file or split name>)")
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
    g.add_argument("--data", metavar="FILE", help="a labelled JSONL, TSV or CSV file to classify and score")
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
        for value in (getattr(args, "beam_size", None), getattr(args, "batch_size", None)):
            if value is not None and value < 1:
                raise S2SError("--beam-size and --batch-size must be at least 1")
        args.func(args)
    except S2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
