#!/usr/bin/env bash
# CoNLL-2003 English NER end to end: word vectors -> train a tagger (or an ensemble; each model selected
# on valid.txt) -> tag test.txt with it -> entity F1.
#
#   bash recipes/ner.sh [--data DIR] [--out DIR] [--members N] [--jobs J] [--text FILE]... [--no-vectors]
#                       [--pretrained [--pretrained-run DIR]] [--smoke]
#
#   --data DIR    folder with train.txt, valid.txt, test.txt in the original 4-column IOB1 format
#                 (default: ../shared/data/conll2003 relative to the repository root)
#   --out DIR     output folder (default runs/conll2003, or runs/conll2003-smoke with --smoke): the vectors,
#                 one run directory per member (DIR/member1 ...) and its log (DIR/member1.log);
#                 interrupted members are resumed, finished ones kept
#   --members N   models trained with seeds 1234, 1235, ... and tagged as one ensemble (default 1, --smoke 2)
#   --jobs J      members trained at once (default 2); the machine's cores are shared among them
#   --text FILE   unlabelled text for the word vectors, one text per line or .jsonl with a "text" field
#                 (repeatable; default: the IMDB reviews in ../shared/data/imdb); train.txt's tokens are always added
#   --no-vectors  no word vectors: the embeddings start at random
#   --pretrained  first pretrain the embedding, char-CNN, word shapes and encoder as a bidirectional language model
#                 on ../reuters/reuters.txt (beside --data) and train.txt's tokens (configs/reuters-pretrain.yaml,
#                 `s2s pretrain`); every member then starts from it (encoder.init; pretrained words win over vectors)
#   --pretrained-run DIR  the pretraining run directory (default OUT/pretrain): an interrupted one is resumed,
#                 a finished one reused as it is
#   --smoke       the same pipeline on 400 sentences with a tiny model (under a minute on 2 CPU cores);
#                 its vectors come from train.txt alone
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$(dirname "$root")/shared/data/conll2003" out="" smoke=0 vectors=1 texts=() members="" jobs=2 pretrained=0 pre=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a folder}"; shift 2 ;;
    --members) members="${2:?--members needs a number}"; shift 2 ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
    --text) texts+=(--text "${2:?--text needs a file}"); shift 2 ;;
    --no-vectors) vectors=0; shift ;;
    --pretrained) pretrained=1; shift ;;
    --pretrained-run) pretrained=1; pre="${2:?--pretrained-run needs a folder}"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# --dim must equal the config's encoder.emb_dim.
if [ "$smoke" = 1 ]; then
  config="$root/configs/ner-smoke.yaml"; out="${out:-runs/conll2003-smoke}" dim=32 texts=() members="${members:-2}"
  pre_config="$root/configs/reuters-pretrain-smoke.yaml"
  rm -rf "$out"  # a smoke run always starts from scratch
else
  config="$root/configs/conll2003.yaml"; out="${out:-runs/conll2003}" dim=100 members="${members:-1}"
  pre_config="$root/configs/reuters-pretrain.yaml"
  if [ "$vectors" = 1 ] && [ ${#texts[@]} = 0 ]; then
    imdb="$(dirname "$root")/shared/data/imdb"
    texts=(--text "$imdb/train.jsonl" --text "$imdb/test.jsonl")
  fi
fi
for n in "$members" "$jobs"; do
  case "$n" in
    ''|*[!0-9]*|0*) echo "error: --members and --jobs take positive whole numbers (got '$members', '$jobs')" >&2; exit 2 ;;
  esac
done
for split in train valid test; do
  [ -f "$data/$split.txt" ] || { echo "error: --data $data: no $split.txt there" >&2; exit 2; }
done

# Each member trains on its share of the cores (a lone member on all of them).
parallel=$(( jobs < members ? jobs : members ))
threads=$(( $(nproc) / parallel ))
[ "$threads" -ge 1 ] || threads=1

with_vectors=()
mkdir -p "$out"

if [ "$vectors" = 1 ]; then
  with_vectors=(--set "vocab.word_vectors=$out/vectors.vec")
  if [ -f "$out/vectors.vec" ]; then
    echo "== word vectors: $out/vectors.vec (kept from before)"
  else
    echo "== word vectors (skip-gram on unlabelled text + train.txt -> $out/vectors.vec)"
    s2s vectors "${texts[@]}" --conll "$data/train.txt" --dim "$dim" --out "$out/vectors.vec"
  fi
fi

if [ "$pretrained" = 1 ]; then
  pre="${pre:-$out/pretrain}"
  corpora="$(cd "$data/.." && pwd)"
  [ -f "$corpora/reuters/reuters.txt" ] || { echo "error: --pretrained: no reuters/reuters.txt beside --data $data" >&2; exit 2; }
  pre_resume=()
  [ -f "$pre/last.pt" ] && pre_resume=(--resume)
  echo "== pretrain the embedding, char-CNN and encoder as a bidirectional language model ($pre_config -> $pre)"
  s2s pretrain "$pre_config" --set "data.dir=$corpora" --set "pretraining.conll=$(basename "$data")/train.txt" --out "$pre" "${pre_resume[@]}"
  with_vectors+=(--set "encoder.init=$pre")
fi

train_member() {  # member number; its output goes to its log
  local dir="$out/member$1" resume=()
  [ -f "$dir/last.pt" ] && resume=(--resume)
  s2s train "$config" --set data.format=conll --set "data.dir=$data" "${with_vectors[@]}" --set "train.seed=$((1233 + $1))" --set "train.threads=$threads" \
    --out "$dir" "${resume[@]}" > "$dir.log" 2>&1
}

echo "== train $members member(s), $parallel at a time, $threads thread(s) each ($config -> $out/member1 ...; logs in $out/member*.log)"
failed=0 runs=() pids=()
for i in $(seq 1 "$members"); do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  echo "   member $i: seed $((1233 + i))"
  train_member "$i" &
  runs+=("$out/member$i") pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done  # each member's own exit status, however early it ended
if [ "$failed" = 1 ]; then
  echo "error: a member's training failed; its log says why (tail $out/member*.log)" >&2
  tail -n 3 "$out"/member*.log >&2
  exit 1
fi
for run in "${runs[@]}"; do
  echo "   $run: best dev F1 $(python -c 'import json, sys; print(round(max((json.loads(l).get("best") or 0) for l in open(sys.argv[1])), 2))' "$run/metrics.jsonl")"
done

what="the model"; [ "${#runs[@]}" -gt 1 ] && what="the ensemble of ${#runs[@]}"
echo "== tag and score test.txt with $what (entity F1, exact span and type)"
s2s evaluate --model "${runs[@]}" --conll "$data/test.txt" --hyp-prefix "$out/test"
