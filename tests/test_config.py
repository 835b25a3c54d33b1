"""Config: YAML in and out, typed --set overrides, and errors that name the key, file and line."""
from __future__ import annotations

import dataclasses

import pytest

from s2s import config as config_lib
from s2s.config import Config
from s2s.errors import S2SError


def _write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_load_sets_the_given_keys_and_keeps_defaults(tmp_path):
    path = _write(tmp_path, "task: translation\nmodel:\n  cell: gru\n  hidden_size: 8\ntrain:\n  lr: 3e-4\n  amp: false\n")
    config = config_lib.load(path)
    assert config.model.cell == "gru" and config.model.hidden_size == 8
    # PyYAML reads `3e-4` (no dot) as a string; the float field must still get a float.
    assert config.train.lr == pytest.approx(3e-4) and isinstance(config.train.lr, float)
    assert config.train.amp is False
    assert config.model.emb_dim == Config().model.emb_dim  # untouched keys keep their defaults
    assert config.decode == Config().decode


def test_empty_yaml_gives_the_defaults(tmp_path):
    assert config_lib.load(_write(tmp_path, "")) == Config()


def test_int_is_accepted_for_a_float_key(tmp_path):
    config = config_lib.load(_write(tmp_path, "train:\n  lr: 1\n"))
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_unknown_key_names_the_key_and_suggests_the_right_one(tmp_path):
    path = _write(tmp_path, "model:\n  hiden_size: 8\n")
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    message = str(e.value)
    assert str(path) in message
    assert "'model.hiden_size'" in message
    assert "did you mean 'model.hidden_size'" in message


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
        ("model:\n  tie_embeddings: 3\n", "model.tie_embeddings"),
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


@pytest.mark.parametrize("key, value", [("model.cell", "foo"), ("task", "parsing"), ("train.scheduler", "cosine")])
def test_bad_choice_lists_the_valid_ones(tmp_path, key, value):
    section, _, name = key.rpartition(".")
    text = f"{section}:\n  {name}: {value}\n" if section else f"{name}: {value}\n"
    with pytest.raises(S2SError) as e:
        config_lib.load(_write(tmp_path, text))
    message = str(e.value)
    assert f"'{key}' must be one of" in message and repr(value) in message
    for choice in config_lib.CHOICES[key]:
        assert choice in message


def test_bad_choice_from_set_override_fails():
    with pytest.raises(S2SError, match="'model.cell' must be one of lstm, gru, rnn"):
        config_lib.apply_overrides(Config(), ["model.cell=foo"])


@pytest.mark.parametrize("key", sorted(config_lib.AT_LEAST))
def test_decoding_sizes_below_one_are_refused(tmp_path, key):
    section, _, name = key.partition(".")
    with pytest.raises(S2SError, match=f"'{key}' must be at least 1, got 0"):
        config_lib.load(_write(tmp_path, f"{section}:\n  {name}: 0\n"))
    with pytest.raises(S2SError, match=f"'{key}' must be at least 1, got -2"):
        config_lib.apply_overrides(Config(), [f"{key}=-2"])
    assert getattr(config_lib.apply_overrides(Config(), [f"{key}=1"]).decode, name) == 1


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, "model:\n  cell: lstm\n emb_dim: 8\n")  # line 3 is mis-indented
    with pytest.raises(S2SError) as e:
        config_lib.load(path)
    assert str(e.value).startswith(f"{path}:3: invalid YAML")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(S2SError, match="nope.yaml: cannot read config"):
        config_lib.load(tmp_path / "nope.yaml")


def test_set_overrides_are_typed_by_the_field():
    config = config_lib.apply_overrides(
        Config(), ["train.lr=3e-4", "train.epochs=3", "train.amp=false", "model.cell=gru", "data.src_lang=no", "task=tagging"]
    )
    assert config.train.lr == pytest.approx(3e-4) and isinstance(config.train.lr, float)
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.amp is False
    assert config.model.cell == "gru"
    assert config.data.src_lang == "no"  # a string field keeps the text as it is (YAML would read `no` as False)
    assert config.task == "tagging"


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
    config = config_lib.apply_overrides(Config(), ["train.lr=3e-4", "model.cell=gru", "data.src_lang=no", "vocab.joint=true"])
    path = tmp_path / "config.yaml"
    config_lib.save(config, path)
    assert config_lib.load(path) == config
    assert config_lib.from_dict(config_lib.to_dict(config)) == config


def test_every_key_has_a_default_and_is_listed():
    keys = config_lib.valid_keys()
    assert len(keys) == len(set(keys))
    for section in dataclasses.fields(Config):
        if section.name != "task":
            for f in dataclasses.fields(getattr(Config(), section.name)):
                assert f"{section.name}.{f.name}" in keys
    for key in config_lib.CHOICES:
        assert key in keys


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.lr = 1.0  # type: ignore[misc]
