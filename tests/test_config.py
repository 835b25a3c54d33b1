"""Config: YAML in and out, typed --set overrides, key ownership by task, per-task defaults, every value rule,
`s2s config TASK`, and reading s2s 0.1 configs; errors name the key, file and line."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from s2s import config as config_lib
from s2s.config import Config
from s2s.errors import S2SError


def _write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _fields() -> dict[str, dataclasses.Field]:
    """Every key of the schema ('section.name') and its dataclass field (default, help, tasks, value rules)."""
    config = Config()
    return {f"{section.name}.{f.name}": f
            for section in dataclasses.fields(Config) if section.name != "task"
            for f in dataclasses.fields(getattr(config, section.name))}


FIELDS = _fields()
TASKS = tuple(config_lib.TASKS)


def _choices(key: str) -> tuple[str, ...]:
    return TASKS if key == "task" else FIELDS[key].metadata["choices"]


def _flat(raw: dict) -> set[str]:
    """The dotted keys of a nested config dict."""
    return {"task"} | {f"{s}.{k}" for s, values in raw.items() if isinstance(values, dict) for k in values}


# --- YAML, types and overrides --------------------------------------------------------------------------------


def test_yaml_load_sets_the_given_keys_and_keeps_defaults(tmp_path):
    path = _write(tmp_path, "task: translation\nencoder:\n  cell: gru\n  hidden_size: 8\ntrain:\n  lr: 3e-4\n  amp: false\n")
    config = config_lib.load(path)
    assert config.encoder.cell == "gru" and config.encoder.hidden_size == 8
    # PyYAML reads `3e-4` (no dot) as a string; the float field must still get a float.
    assert config.train.lr == pytest.approx(3e-4) and isinstance(config.train.lr, float)
    assert config.train.amp is False
    assert config.encoder.emb_dim == Config().encoder.emb_dim  # untouched keys keep their defaults
    assert config.decode == Config().decode


def test_empty_yaml_gives_the_defaults(tmp_path):
    assert config_lib.load(_write(tmp_path, "")) == Config()


def test_int_is_accepted_for_a_float_key(tmp_path):
    config = config_lib.load(_write(tmp_path, "train:\n  lr: 1\n"))
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_unknown_key_names_the_key_and_suggests_the_right_one(tmp_path):
    path = _write(tmp_path, "encoder:\n  hiden_size: 8\n")
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    message = str(e.value)
    assert str(path) in message
    assert "'encoder.hiden_size'" in message
    assert "did you mean 'encoder.hidden_size'" in message


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(S2SError, match=r"unknown key 'trian'.*did you mean 'train"):
        config_lib.load(_write(tmp_path, "trian:\n  lr: 0.1\n"))


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  epochs: ten\n", "train.epochs"),
        ("train:\n  epochs: 2.5\n", "train.epochs"),  # a float is not an int
        ("train:\n  epochs: true\n", "train.epochs"),  # nor is a bool
        ("train:\n  lr: [1, 2]\n", "train.lr"),
        ("translation:\n  tie_embeddings: 3\n", "translation.tie_embeddings"),
        ("data:\n  dir: 3\n", "data.dir"),
    ],
)
def test_wrong_type_names_the_key_and_the_type(tmp_path, text, key):
    with pytest.raises(S2SError, match=rf"key '{key}' must be (int|float|bool|str), got"):
        config_lib.load(_write(tmp_path, text))


def test_section_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(S2SError, match="section 'train' must be a mapping"):
        config_lib.load(_write(tmp_path, "train: 3\n"))


def test_top_level_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(S2SError, match="expected a mapping"):
        config_lib.load(_write(tmp_path, "- a\n- b\n"))


@pytest.mark.parametrize("key, value", [("encoder.cell", "foo"), ("task", "parsing"), ("train.scheduler", "cosine")])
def test_bad_choice_lists_the_valid_ones(tmp_path, key, value):
    section, _, name = key.rpartition(".")
    text = f"{section}:\n  {name}: {value}\n" if section else f"{name}: {value}\n"
    with pytest.raises(S2SError) as e:
        config_lib.load(_write(tmp_path, text))
    message = str(e.value)
    assert f"'{key}' must be one of" in message and repr(value) in message
    for choice in _choices(key):
        assert choice in message


def test_bad_choice_from_set_override_fails():
    with pytest.raises(S2SError, match="'encoder.cell' must be one of lstm, gru, rnn"):
        config_lib.apply_overrides(Config(), ["encoder.cell=foo"])


# The decoding sizes where 0 crashed decoding in s2s 0.1 (a batch size of 0: range() step 0).
@pytest.mark.parametrize("key", ["decode.batch_size", "translation.beam_size", "translation.max_src_len", "translation.valid_beam_size"])
def test_decoding_sizes_below_one_are_refused(tmp_path, key):
    section, _, name = key.partition(".")
    with pytest.raises(S2SError, match=f"'{key}' must be at least 1, got 0"):
        config_lib.load(_write(tmp_path, f"{section}:\n  {name}: 0\n"))
    with pytest.raises(S2SError, match=f"'{key}' must be at least 1, got -2"):
        config_lib.apply_overrides(Config(), [f"{key}=-2"])
    assert getattr(getattr(config_lib.apply_overrides(Config(), [f"{key}=1"]), section), name) == 1


RULED = sorted(k for k, f in FIELDS.items() if any(f.metadata[r] is not None for r in ("at_least", "below", "at_most")))


@pytest.mark.parametrize("key", RULED)
def test_every_value_rule_refuses_values_beyond_it_and_keeps_its_bound(key):
    meta, (section, name) = FIELDS[key].metadata, key.split(".")
    number = type(FIELDS[key].default)

    def config(value):
        return config_lib.from_dict({"task": meta["tasks"][0], section: {name: number(value)}}, where="c.yaml")

    if meta["at_least"] is not None:
        with pytest.raises(S2SError, match=rf"^c\.yaml: key '{key}' must be at least {meta['at_least']}, got"):
            config(meta["at_least"] - 1)
        assert getattr(getattr(config(meta["at_least"]), section), name) == meta["at_least"]
    if meta["below"] is not None:
        with pytest.raises(S2SError, match=rf"^c\.yaml: key '{key}' must be below {meta['below']:g}, got"):
            config(meta["below"])
    if meta["at_most"] is not None:
        with pytest.raises(S2SError, match=rf"^c\.yaml: key '{key}' must be at most {meta['at_most']:g}, got"):
            config(meta["at_most"] + 1)
        assert getattr(getattr(config(meta["at_most"]), section), name) == meta["at_most"]


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, "encoder:\n  cell: lstm\n emb_dim: 8\n")  # line 3 is mis-indented
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    assert str(e.value).startswith(f"{path}:3: invalid YAML")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(S2SError, match="nope.yaml: no such file"):
        config_lib.load(tmp_path / "nope.yaml")


def test_set_overrides_are_typed_by_the_field():
    config = config_lib.apply_overrides(
        Config(), ["train.lr=3e-4", "train.epochs=3", "train.amp=false", "encoder.cell=gru", "data.src_lang=no", "task=translation"]
    )
    assert config.train.lr == pytest.approx(3e-4) and isinstance(config.train.lr, float)
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.amp is False
    assert config.encoder.cell == "gru"
    assert config.data.src_lang == "no"  # a string field keeps the text as it is (YAML would read `no` as False)
    assert config.task == "translation"


def test_set_cannot_change_the_task():
    # Another task has other keys and defaults: it starts from its own config, not from this one's.
    message = r"--set task=tagging: the task is the config file's \(translation\); start from `s2s config tagging`"
    with pytest.raises(S2SError, match=message):
        config_lib.apply_overrides(Config(), ["task=tagging"])


def test_set_override_applies_on_top_of_the_yaml(tmp_path):
    path = _write(tmp_path, "train:\n  lr: 0.1\n  epochs: 7\n")
    config = config_lib.load(path, ["train.lr=3e-4"])
    assert config.train.lr == pytest.approx(3e-4) and config.train.epochs == 7


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("train.lr", "expected key=value"),
        ("train.lrr=0.1", r"unknown key 'train.lrr'; did you mean 'train.lr'"),
        ("lr=0.1", "unknown key 'lr'"),
        ("train.epochs=abc", "key 'train.epochs' must be int, got 'abc'"),
        ("train.amp=maybe", "key 'train.amp' must be bool"),
    ],
)
def test_bad_set_override_fails_clearly(override, pattern):
    with pytest.raises(S2SError, match=pattern):
        config_lib.apply_overrides(Config(), [override])


def test_save_load_round_trip(tmp_path):
    config = config_lib.apply_overrides(Config(), ["train.lr=3e-4", "encoder.cell=gru", "data.src_lang=no", "vocab.joint=true"])
    path = tmp_path / "config.yaml"
    config_lib.save(config, path)
    assert config_lib.load(path) == config
    # to_dict holds every task's keys, which a translation config refuses; task_dict holds its own.
    assert config_lib.from_dict(config_lib.task_dict(config)) == config


@pytest.mark.parametrize("task", TASKS)
def test_save_writes_only_the_keys_of_the_task(tmp_path, task):
    config = config_lib.from_dict({"task": task})
    config_lib.save(config, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text(encoding="utf-8"))
    assert _flat(saved) == set(config_lib.valid_keys(task))
    assert config_lib.load(tmp_path / "config.yaml") == config


def test_every_key_has_a_default_and_is_listed():
    keys = config_lib.valid_keys()
    assert len(keys) == len(set(keys))
    for section in dataclasses.fields(Config):
        if section.name != "task":
            for f in dataclasses.fields(getattr(Config(), section.name)):
                assert f"{section.name}.{f.name}" in keys
    for key, f in FIELDS.items():
        assert f.metadata["help"].strip(), key
        assert f.metadata["tasks"] and set(f.metadata["tasks"]) <= set(TASKS), key
        assert f.default in f.metadata["choices"] or not f.metadata["choices"], key
    for task in TASKS:
        assert set(config_lib.valid_keys(task)) <= set(keys)
        config_lib.from_dict({"task": task})  # each task's defaults pass every rule


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.lr = 1.0  # type: ignore[misc]


# --- keys by task ---------------------------------------------------------------------------------------------


def test_owner_names_the_tasks_of_a_key():
    assert config_lib.owner("data.scheme") == ("tagging",)
    assert config_lib.owner("tagging.crf") == ("tagging",)
    assert config_lib.owner("data.label_field") == ("classification",)
    assert config_lib.owner("encoder.cell") == TASKS
    for task in TASKS:
        assert all(task in config_lib.owner(k) for k in config_lib.valid_keys(task) if k != "task")


@pytest.mark.parametrize(
    "task, key, value, owners",
    [
        ("translation", "tagging.crf", "false", "tagging"),  # a key of another task's section
        ("translation", "data.label_field", "y", "classification"),  # a shared section's key owned by one task
        ("classification", "vocab.word_vectors", "v.txt", "tagging"),
        ("translation", "data.max_dev", "3", "tagging and classification"),
        ("tagging", "translation.beam_size", "4", "translation"),
        ("classification", "decode.workers", "2", "translation and tagging"),
    ],
)
def test_a_key_of_another_task_names_the_task_it_belongs_to(tmp_path, task, key, value, owners):
    section, name = key.split(".")
    path = _write(tmp_path, f"task: {task}\n{section}:\n  {name}: {value}\n")
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    assert str(e.value) == f"{path}: key '{key}' belongs to task {owners}, not {task}"
    with pytest.raises(S2SError) as e:
        config_lib.apply_overrides(config_lib.from_dict({"task": task}), [f"{key}={value}"])
    assert str(e.value) == f"--set: key '{key}' belongs to task {owners}, not {task}"
    with pytest.raises(S2SError) as e:
        config_lib.load(_write(tmp_path, f"task: {task}\n", "plain.yaml"), [f"{key}={value}"])
    assert str(e.value) == f"--set: key '{key}' belongs to task {owners}, not {task}"


def test_each_task_has_its_own_defaults(tmp_path):
    tagging = config_lib.load(_write(tmp_path, "task: tagging\n"))
    assert (tagging.data.format, tagging.data.dev, tagging.data.test, tagging.data.max_len) == ("conll", "valid", "test", 250)
    classification = config_lib.from_dict({"task": "classification"})
    assert (classification.data.format, classification.data.dev, classification.data.test) == ("jsonl", "dev", "test")
    data = config_lib.from_dict({"task": "translation"}).data
    assert (data.format, data.dev, data.test, data.max_len) == ("text", "val", "test2016", 100)
    assert config_lib.defaults("tagging")["data"]["format"] == "conll"
    # A value given in the file wins over the task's default.
    assert config_lib.load(_write(tmp_path, "task: tagging\ndata:\n  max_len: 100\n")).data.max_len == 100


@pytest.mark.parametrize("task, fmt", [("tagging", "text"), ("tagging", "jsonl"), ("classification", "conll"), ("translation", "csv")])
def test_a_data_format_the_task_does_not_read_is_refused(tmp_path, task, fmt):
    path = _write(tmp_path, f"task: {task}\ndata:\n  format: {fmt}\n")
    valid = " | ".join(config_lib.FORMATS[task])
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    assert str(e.value) == f"{path}: task {task} reads data.format {valid}, got '{fmt}'"
    with pytest.raises(S2SError, match=f"^--set: task {task} reads data.format"):
        config_lib.apply_overrides(config_lib.from_dict({"task": task}), [f"data.format={fmt}"])


def test_a_model_section_points_to_s2s_upgrade(tmp_path):
    path = _write(tmp_path, "task: tagging\nmodel:\n  crf: false\n")
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    message = str(e.value)
    assert message == f"{path}: key 'model.crf' is 'tagging.crf' since s2s 0.2; `s2s upgrade FILE` rewrites a config of s2s 0.1"


def test_an_even_conv_kernel_is_refused():
    with pytest.raises(S2SError, match="'encoder.conv_kernel' must be odd"):
        config_lib.from_dict({"task": "classification", "encoder": {"conv_filters": 4, "conv_kernel": 4}})
    config_lib.from_dict({"task": "classification", "encoder": {"conv_filters": 0, "conv_kernel": 4}})  # no convolution, no rule


def test_lm_vocab_of_one_is_refused():
    with pytest.raises(S2SError, match="'tagging.lm_vocab' must be 0 \\(off\\) or at least 2, got 1"):
        config_lib.from_dict({"task": "tagging", "tagging": {"lm_vocab": 1}})


# --- s2s config TASK ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_s2s_config_prints_the_commented_defaults_of_one_task(tmp_path, capsys, task):
    from s2s.cli import main

    assert main(["config", task]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    parsed = yaml.safe_load(out)
    assert parsed == config_lib.defaults(task)
    assert _flat(parsed) == set(config_lib.valid_keys(task))  # that task's keys, every one, and no other
    config = config_lib.load(_write(tmp_path, out, f"{task}.yaml"))  # accepted as printed
    assert config == config_lib.from_dict({"task": task}) and config_lib.task_dict(config) == config_lib.defaults(task)
    section = None
    for line in out.splitlines():
        if line.startswith("#") or line == f"task: {task}":
            continue
        if not line.startswith(" "):
            section = line.removesuffix(":")
            assert section in parsed, line
            continue
        name = line.split(":")[0].strip()
        value, sep, comment = line.partition("  # ")
        assert sep and comment == FIELDS[f"{section}.{name}"].metadata["help"], line


def test_s2s_config_refuses_an_unknown_task(capsys):
    from s2s.cli import main

    with pytest.raises(SystemExit) as e:
        main(["config", "parsing"])
    assert e.value.code == 2 and "invalid choice: 'parsing'" in capsys.readouterr().err
    with pytest.raises(S2SError, match="unknown task 'parsing'"):
        config_lib.describe("parsing")


# --- s2s 0.1 configs ------------------------------------------------------------------------------------------

# What s2s 0.1 saved in a run's config.yaml and checkpoints: every key of every task, in one `model` section
# (the 0.1 defaults; tests set the task and the keys they look at).
OLD_CONFIG = {
    "task": "translation",
    "data": {"format": "text", "dir": "", "hub": "", "src_lang": "de", "tgt_lang": "en", "train": "train", "dev": "val",
             "test": "test2016", "max_train_pairs": 0, "max_len": 100, "max_dev": 0, "scheme": "iob1", "text_field": "text",
             "label_field": "label", "dev_size": 0, "dev_seed": 1234, "max_text_tokens": 400, "truncate": "head_tail"},
    "vocab": {"joint": False, "src_size": 8000, "tgt_size": 8000, "model_type": "unigram", "character_coverage": 1.0,
              "lowercase": True, "min_freq": 1, "max_words": 0, "word_vectors": ""},
    "model": {"cell": "lstm", "emb_dim": 256, "hidden_size": 256, "num_layers": 1, "bidirectional": True, "dropout": 0.3,
              "dec_hidden_size": 512, "dec_layers": 1, "attn_size": 256, "tie_embeddings": True, "char_emb_dim": 30,
              "char_filters": 50, "char_kernel": 3, "case_dim": 8, "context_tokens": 0, "same_word_pooling": False, "lm_vocab": 0,
              "lm_weight": 0.1, "crf": True, "tag_scheme": "bioes", "conv_filters": 0, "conv_kernel": 5, "conv_pool": 2,
              "pooling": "max+mean", "head_hidden": 0},
    "train": {"seed": 1234, "device": "auto", "threads": 0, "epochs": 30, "max_steps": 0, "max_tokens": 2000, "lr": 0.001,
              "clip": 5.0, "label_smoothing": 0.1, "scheduler": "plateau", "lr_decay": 0.5, "patience": 1, "min_lr": 1e-05,
              "early_stopping": 5, "valid_every": 0, "log_every": 100, "amp": True, "cpu_amp": False, "unk_replace": 0.0,
              "trim_batches": True, "word_dropout": 0.0, "ema": 0.0},
    "decode": {"beam_size": 5, "batch_size": 64, "length_penalty": 1.0, "max_len_a": 1.5, "max_len_b": 10, "max_src_len": 250,
               "valid_beam_size": 1, "amp": False, "workers": 0},
}
# Keys 0.2 added, which a 0.1 config cannot hold: they keep their defaults.
NEW_IN_0_2 = {"data.strict_tags", "train.save_every", "vocab.max_sentences", "train.tensorboard",
              "encoder.init", "encoder.layer_lr_decay", "encoder.unfreeze"}  # the last three: issue 21 (pretraining)


def _old(task: str, **sections: dict) -> dict:
    raw = copy.deepcopy(OLD_CONFIG)
    raw["task"] = task
    raw["data"]["format"] = {"translation": "text", "tagging": "conll", "classification": "jsonl"}[task]  # 0.1 refused others
    for name, values in sections.items():
        raw[name].update(values)
    return raw


@pytest.mark.parametrize("task", ("translation", "tagging", "classification"))  # the tasks of s2s 0.1
def test_upgrade_dict_keeps_every_key_the_task_used_and_drops_the_others(task):
    upgraded = config_lib.upgrade_dict(_old(task))
    assert "model" not in upgraded and upgraded["task"] == task
    assert _flat(upgraded) <= set(config_lib.valid_keys(task))
    assert set(config_lib.valid_keys(task)) - _flat(upgraded) <= NEW_IN_0_2
    assert not any(upgraded.get(other) for other in TASKS if other != task)  # no key in another task's section
    assert config_lib.from_dict(upgraded).task == task


def test_upgrade_dict_moves_the_keys_of_a_tagging_config():
    old = _old("tagging", data={"max_train_pairs": 400, "scheme": "iob2"}, model={"crf": False, "hidden_size": 32, "char_filters": 16,
                                                                                   "pooling": "attention", "dec_hidden_size": 7},
               vocab={"word_vectors": "v.txt", "src_size": 99}, decode={"beam_size": 9, "workers": 2})
    upgraded = config_lib.upgrade_dict(old)
    assert upgraded["tagging"]["crf"] is False and upgraded["tagging"]["char_filters"] == 16
    assert upgraded["encoder"]["hidden_size"] == 32
    assert upgraded["data"]["max_train"] == 400 and "max_train_pairs" not in upgraded["data"]
    assert upgraded["data"]["scheme"] == "iob2" and upgraded["vocab"]["word_vectors"] == "v.txt"
    assert upgraded["decode"] == {"batch_size": 64, "workers": 2}  # beam_size and amp are translation's
    assert "src_size" not in upgraded["vocab"] and "label_field" not in upgraded["data"] and "label_smoothing" not in upgraded["train"]
    assert "pooling" not in upgraded["tagging"] and "dec_hidden_size" not in upgraded["tagging"]
    config = config_lib.read(old, "old.yaml")
    assert config == config_lib.from_dict(upgraded)
    assert (config.tagging.crf, config.encoder.hidden_size, config.data.max_train, config.decode.workers) == (False, 32, 400, 2)


def test_upgrade_dict_moves_the_keys_of_a_translation_config():
    old = _old("translation", data={"max_train_pairs": 300}, model={"hidden_size": 32, "dec_hidden_size": 64, "attn_size": 16,
                                                                    "tie_embeddings": False, "crf": False, "pooling": "mean"},
               decode={"beam_size": 3, "length_penalty": 0.6, "max_len_a": 1.2, "max_len_b": 5, "max_src_len": 99,
                       "valid_beam_size": 2, "batch_size": 16, "amp": True})
    upgraded = config_lib.upgrade_dict(old)
    assert upgraded["translation"] == {"dec_hidden_size": 64, "dec_layers": 1, "attn_size": 16, "tie_embeddings": False, "beam_size": 3,
                                       "length_penalty": 0.6, "max_len_a": 1.2, "max_len_b": 5, "max_src_len": 99, "valid_beam_size": 2}
    assert upgraded["decode"] == {"batch_size": 16, "amp": True, "workers": 0}
    assert upgraded["encoder"]["hidden_size"] == 32 and upgraded["data"]["max_train"] == 300
    assert "scheme" not in upgraded["data"] and "word_vectors" not in upgraded["vocab"] and "unk_replace" not in upgraded["train"]
    config = config_lib.read(old, "old.yaml")
    assert (config.translation.beam_size, config.translation.attn_size, config.decode.batch_size, config.data.max_train) == (3, 16, 16, 300)


def test_upgrade_dict_moves_the_keys_of_a_classification_config():
    old = _old("classification", model={"attn_size": 12, "pooling": "attention+max", "head_hidden": 5, "conv_filters": 4, "crf": False},
               data={"max_train_pairs": 50, "label_field": "y"})
    upgraded = config_lib.upgrade_dict(old)
    assert upgraded["classification"] == {"pooling": "attention+max", "head_hidden": 5, "attn_size": 12}
    assert upgraded["encoder"]["conv_filters"] == 4 and upgraded["data"]["label_field"] == "y" and upgraded["data"]["max_train"] == 50
    assert not upgraded.get("translation") and "workers" not in upgraded["decode"] and "scheme" not in upgraded["data"]
    assert config_lib.read(old, "old.yaml").classification.attn_size == 12


def test_read_takes_both_layouts_and_names_where_a_problem_is(tmp_path):
    config = config_lib.from_dict({"task": "tagging", "tagging": {"crf": False}})
    assert config_lib.read(config_lib.task_dict(config), "new") == config
    with pytest.raises(S2SError, match=r"^old\.pt: key 'encoder\.cell' must be one of"):
        config_lib.read(_old("tagging", model={"cell": "transformer"}), "old.pt")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_old("tagging", model={"crf": False})), encoding="utf-8")
    assert config_lib.load_run_config(path) == config_lib.from_dict({"task": "tagging", "data": {"max_len": 100, "dev": "val",
                                                                                                   "test": "test2016"},
                                                                     "tagging": {"crf": False}})
    with pytest.raises(S2SError, match="`s2s upgrade"):
        config_lib.load(path)  # a config to train from is read in this layout only


def test_a_0_1_config_without_a_model_section_is_still_recognised(tmp_path, capsys):
    from s2s.cli import main

    path = _write(tmp_path, "task: translation\ndata:\n  max_train_pairs: 400\ndecode:\n  beam_size: 3\n")
    assert config_lib.is_legacy(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert main(["upgrade", str(path)]) == 0 and capsys.readouterr().out == f"{path}: rewritten in the s2s 0.2 layout\n"
    config = config_lib.load(path)
    assert (config.translation.beam_size, config.data.max_train) == (3, 400)
