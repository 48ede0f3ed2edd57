import dataclasses
import logging
from pathlib import Path

import pytest
import yaml

from wavecl.cli import main
from wavecl.config import SECTIONS, Config, apply_overrides, field_help, load_config, packaged_configs, parse_override

REPO = Path(__file__).parents[1]
CONFIGS = sorted(packaged_configs().values())

# An excerpt of the original repository's configs/a2d_sentences.yaml ({desc, value} entries,
# PyYAML-unfriendly exponents, nested DeformTransformer and VOC values).
REFERENCE_A2D = """
lr:
  desc: main model learning rate
  value: 5e-5
lr_backbone:
  value: 5e-6
text_encoder_lr:
  value: 5e-6
weight_decay:
  value: 1e-4
clip_max_norm:
  value: 0.1
enable_amp:
  value: false
seed:
  value: 42
with_box_refine:
  value: True
DeformTransformer:
  desc: "the parameter of the MultiFormer"
  value:
    enc_layers: 3
    dec_layers: 3
    dim_feedforward: 2048
    d_model: 256
    dropout: 0.1
    nheads: 8
    num_queries: 20
    num_feature_levels: 4
    dec_n_points: 4
    enc_n_points: 4
    two_stage: False
freeze_text_encoder:
  value: true
text_encoder_type:
  value: 'roberta/roberta-base'
num_classes:
  value: 1
VOC:
  value:
    input_dim: 256
    window_size: 0
    num_frame_queries: 20
    num_frames: 8
    num_queries: 20
    nheads: 8
    dim_feedforward: 2048
    enc_layers: 3
    dec_layers: 3
set_cost_dice:
  value: 5
class_loss_coef:
  value: 2
dice_loss_coef:
  value: 5
eos_coef:
  value: 0.1
dataset_name:
  value: a2d_sentences
train_short_size:
  value: 320
train_max_size:
  value: 576
dataset_coco_gt_format_path:
  value: 'data/a2d_sentences/a2d_sentences_test_annotations_in_coco_format.json'
checkpoint_path:
  value: "runs/a2d_sentences/a2d/checkpoints/best.pth.tar"
"""


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    assert isinstance(config.train.lr, float)
    saved = tmp_path / "resolved.yaml"
    saved.write_text(config.to_yaml())
    assert load_config(saved) == config


def test_published_a2d_hyper_parameters():
    config = load_config("a2d_sentences")
    assert (config.train.lr, config.train.lr_backbone, config.train.batch_size) == (5e-5, 5e-6, 2)
    assert (config.train.epochs, config.train.lr_drop, config.train.lr_gamma) == (40, [15], 0.2)


def test_exponent_without_decimal_point_is_a_float(tmp_path):
    assert yaml.safe_load("lr: 5e-5") == {"lr": "5e-5"}  # why the cast is needed
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 5e-5\n  lr_drop: 15\n")
    config = load_config(path)
    assert config.train.lr == pytest.approx(5e-5) and isinstance(config.train.lr, float)
    assert config.train.lr_drop == [15]


def test_reference_desc_value_file_loads(tmp_path):
    path = tmp_path / "a2d_sentences.yaml"
    path.write_text(REFERENCE_A2D)
    config = load_config(path)
    assert config.train.lr == pytest.approx(5e-5)
    assert config.train.weight_decay == pytest.approx(1e-4)
    assert config.train.lr_gamma == 0.2  # hard-coded for A2D in the reference
    assert config.model.text_encoder == "roberta/roberta-base"
    assert (config.model.enc_layers, config.model.num_queries, config.model.voc_dec_layers) == (3, 20, 3)
    assert config.loss.cost_dice == 5 and config.loss.cls == 2
    assert config.data.coco_gt_path.endswith("a2d_sentences_test_annotations_in_coco_format.json")


@pytest.mark.parametrize(
    ("key", "value", "instead"),
    [
        ("aux_loss", "false", "losses of every decoder layer"),
        ("with_box_refine", "False", "refines the boxes"),
        ("random_color", "true", "no colour augmentation"),
        ("resize_and_crop_augmentations", "false", "always resizes frames"),
    ],
)
def test_unimplemented_original_switch_is_named_in_a_warning(tmp_path, caplog, key, value, instead):
    path = tmp_path / "original.yaml"
    implemented = {"aux_loss": "true", "with_box_refine": "true", "random_color": "false"}
    path.write_text(f"lr:\n  value: 1e-4\n{key}:\n  value: {implemented.get(key, 'true')}\n")
    with caplog.at_level(logging.WARNING, logger="wavecl.original"):
        load_config(path)
    assert not caplog.records  # the value wavecl implements says nothing
    path.write_text(f"lr:\n  value: 1e-4\n{key}:\n  value: {value}\n")
    with caplog.at_level(logging.WARNING, logger="wavecl.original"):
        config = load_config(path)
    (record,) = caplog.records
    message = record.getMessage()
    assert str(path) in message and f"{key}: {value.lower()} is" in message
    assert "not implemented" in message and instead in message
    assert config.train.lr == pytest.approx(1e-4)


def test_original_enable_amp_maps_to_train_amp(tmp_path):
    path = tmp_path / "original.yaml"
    for value, amp in [("true", "fp16"), ("false", "off")]:
        path.write_text(f"seed:\n  value: 1\nenable_amp:\n  value: {value}\n")
        assert load_config(path).train.amp == amp
    path.write_text("seed:\n  value: 1\nenable_amp:\n  value: sometimes\n")
    with pytest.raises(ValueError, match=r"original.yaml: enable_amp: expected true or false, got 'sometimes'"):
        load_config(path)


def test_errors_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*train\.lr"):
        load_config(path)
    path.write_text("model:\n  no_such_field: 1\n")
    with pytest.raises(ValueError, match="no_such_field"):
        load_config(path)
    path.write_text("data:\n  flip_mode: sideways\n")
    with pytest.raises(ValueError, match="flip_mode"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_only_explicit_overrides_apply():
    config = Config()
    key, value = parse_override("train.lr=1e-4")
    updated = apply_overrides(config, {key: value})
    assert updated.train.lr == pytest.approx(1e-4)
    assert updated.train.epochs == config.train.epochs
    with pytest.raises(ValueError, match="train.nope"):
        apply_overrides(config, {"train.nope": 1})


def test_a_misspelt_field_gets_a_suggestion(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  max_step_per_epoch: 3\n")
    with pytest.raises(
        ValueError, match=r"unknown field\(s\) \['max_step_per_epoch'\] \(did you mean 'max_steps_per_epoch'\?\)"
    ):
        load_config(path)
    path.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ValueError, match=r"\(did you mean 'train'\?\)"):
        load_config(path)
    with pytest.raises(ValueError, match=r"'data.windw_size' \(did you mean 'data.window_size'\?\)"):
        apply_overrides(Config(), {"data.windw_size": 4})
    with pytest.raises(ValueError) as error:
        apply_overrides(Config(), {"train.zzzz": 4})
    assert "did you mean" not in str(error.value)
    with pytest.raises(SystemExit):
        main(["info", "-c", "tiny", "--set", "train.max_step_per_epoch=3"])
    assert "did you mean 'train.max_steps_per_epoch'?" in capsys.readouterr().err


def test_config_show_lists_every_field_with_type_default_value_and_meaning(capsys):
    main(["config", "show", "-c", "demo", "--set", "train.lr=1e-3", "--dataset", "coco"])
    lines = capsys.readouterr().out.splitlines()
    entries = {}
    for line, meaning in zip(lines, lines[1:]):
        if " = " in line and not line.startswith(" "):
            entries[line.split(" = ")[0]] = (line, meaning)
    expected = [f"{name}.{field.name}" for name, cls in SECTIONS.items() for field in dataclasses.fields(cls)]
    assert sorted(entries) == sorted(expected)
    for name, (line, meaning) in entries.items():
        assert meaning.startswith("    ") and len(meaning.strip()) > 10, f"{name} has no meaning"
        assert "[" in line and "; default: " in line
    assert entries["train.lr"][0] == "train.lr = 0.001  [float; default: 5e-05]  (changed)"
    assert entries["data.dataset_name"][0].startswith("data.dataset_name = coco  [Literal[")
    assert entries["data.window_size"][0] == "data.window_size = 4  [int; default: 8]  (changed)"
    assert entries["loss.dice"][0] == "loss.dice = 5.0  [float; default: 5.0]"


def test_every_field_has_a_docstring():
    for cls in SECTIONS.values():
        meanings = field_help(cls)
        assert sorted(meanings) == sorted(field.name for field in dataclasses.fields(cls)), cls.__name__


def test_a_packaged_config_is_named_from_any_folder_and_a_path_still_loads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs folder here
    tiny_file = Path(__file__).parents[1] / "wavecl" / "configs" / "tiny.yaml"
    assert load_config("tiny") == load_config(tiny_file)
    (tmp_path / "tiny.yaml").write_text("train:\n  lr: 0.5\n")  # a file of the same name is a path only
    assert load_config("tiny.yaml").train.lr == 0.5 and load_config("./tiny.yaml").train.lr == 0.5
    assert load_config("tiny").train.lr == yaml.safe_load(tiny_file.read_text())["train"]["lr"]
    with pytest.raises(FileNotFoundError, match=r"no packaged config named 'tinny' \(did you mean 'tiny'\?\).*demo"):
        load_config("tinny")
    with pytest.raises(FileNotFoundError, match=r"configs/demo\.yaml \(the packaged recipe is named 'demo': -c demo\)"):
        load_config("configs/demo.yaml")


def test_config_list_names_each_packaged_recipe_with_its_first_comment_line(capsys):
    main(["config", "list"])
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    folder = Path(__file__).parents[1] / "wavecl" / "configs"
    expected = {}
    for path in sorted(folder.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, f"{path.name} has no one-line description"
        expected[path.stem] = first[2:]
    assert {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in lines} == expected


def test_the_checkouts_configs_folder_is_the_packaged_one():
    """``configs/<name>.yaml`` of the original repository (and of the shared side-by-side timer) reads the
    packaged recipe in a checkout: the folder is a link, not a copy that could drift."""
    assert (REPO / "configs").is_symlink()
    assert (REPO / "configs").resolve() == (REPO / "wavecl" / "configs").resolve()
    assert load_config(REPO / "configs" / "a2d_sentences.yaml") == load_config("a2d_sentences")
