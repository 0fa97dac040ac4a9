"""Training config: defaults, overrides, shipped configs, errors naming the key, LR schedule values."""
from __future__ import annotations

import pytest
import yaml

from faceflow.runtime.flow import flow

from faceflow.errors import ConfigError
from faceflow.train.config import (DEFAULTS, apply_overrides, load_config, parse_override, resolve_dataset,
                                   shipped_config_names, total_steps, validate_config)
from faceflow.train.schedule import build_scheduler, learning_rate


def _config(**values):
    return {**DEFAULTS, "max_steps": 10, **values}


@pytest.mark.parametrize("key,value", [
    ("network", "r7"), ("loss", "arc"), ("fc_mode", "mp"), ("batch_size", 0), ("batch_size", "64"),
    ("lr", -0.1), ("momentum", float("nan")), ("sample_rate", 1.5), ("graph", "yes"), ("fp16", 1),
    ("lr_schedule", "cosine"), ("checkpoint_every", 0), ("clip_grad_norm", -1.0), ("num_classes", 1),
    ("device", "tpu"), ("dropout", 1.0), ("warmup_steps", -1), ("bogus_key", 3),
    ("partial_fc_momentum", "lazy"), ("partial_fc_fused_sampler", "yes"), ("batch_size", 1),
    ("shuffle_buffer", 0), ("optimizer", "adam"),
])
def test_bad_value_error_names_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        validate_config(_config(**{key: value}))
    assert str(err.value).startswith(f"{key}:"), str(err.value)
    assert "\n" not in str(err.value)


def test_schedule_consistency_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^scales:"):
        validate_config(_config(lr_steps=[5, 8], scales=[0.1]))
    with pytest.raises(ConfigError, match=r"^lr_steps:"):
        validate_config(_config(lr_steps=[8, 5], scales=[0.1, 0.01]))
    with pytest.raises(ConfigError, match=r"^max_steps:"):
        validate_config(_config(epochs=2))
    with pytest.raises(ConfigError, match=r"^margins\.m4:"):
        validate_config(_config(margins={"m4": 1.0}))
    with pytest.raises(ConfigError, match=r"^sample_rate:"):
        validate_config(_config(sample_rate=0.1, fc_mode="model_parallel"))
    with pytest.raises(ConfigError, match=r"^val_benchmarks:"):
        validate_config(_config(validate_every=10))


def test_overrides_are_yaml_values_with_nested_keys():
    assert parse_override("lr=1e-3") == (["lr"], 1e-3)
    assert parse_override("graph=true") == (["graph"], True)
    assert parse_override("lr_steps=[3, 5]") == (["lr_steps"], [3, 5])
    config = apply_overrides({"margins": None, "val_benchmarks": {}},
                             ["margins.m3=0.35", "val_benchmarks.lfw=/x/lfw.bin"])
    assert config == {"margins": {"m3": 0.35}, "val_benchmarks": {"lfw": "/x/lfw.bin"}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lr")


def test_load_config_file_and_unknown_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"network": "r18", "max_steps": 5}))
    config = load_config(str(path), ["batch_size=8", "lr=0.2"])
    assert (config["network"], config["batch_size"], config["lr"], config["momentum"]) == ("r18", 8, 0.2, 0.9)
    path.write_text(yaml.safe_dump({"max_steps": 5, "learning_rate": 0.1}))
    with pytest.raises(ConfigError, match=r"^learning_rate: unknown config key"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "missing.yaml"))


def test_shipped_configs_load_with_reference_values():
    names = shipped_config_names()
    assert {"demo", "emore_r100_arcface", "emore_mbf_arcface", "glint360k_r100_cosface_pfc"} <= set(names)
    for name in set(names) - {"demo"}:  # the seed's SGD recipe; the CPU demo uses AdamW
        config = load_config(name)
        assert config["optimizer"] == "sgd" and config["momentum"] == 0.9 and config["weight_decay"] == 5e-4
    demo = load_config("demo")
    assert (demo["optimizer"], demo["weight_decay"]) == ("adamw", 0.05)
    r100 = load_config("emore_r100_arcface")
    assert (r100["lr"], r100["batch_size"], r100["num_classes"]) == (0.1, 64, 85742)
    glint = load_config("glint360k_r100_cosface_pfc")
    assert (glint["fc_mode"], glint["sample_rate"], glint["loss"]) == ("partial_fc", 0.1, "cosface")


def test_dataset_counts_fill_in_and_epochs_to_steps(tmp_path):
    (tmp_path / "meta.json").write_text('{"classes": 7, "records": 70}')
    config = resolve_dataset(_config(train_data=str(tmp_path), max_steps=None, epochs=2))
    assert (config["num_classes"], config["num_images"]) == (7, 70)
    assert total_steps({**config, "batch_size": 16}, world_size=2) == 5  # ceil(2 * 70 / 32)
    with pytest.raises(ConfigError, match=r"^num_classes:"):
        resolve_dataset(_config(train_data=str(tmp_path), num_classes=3))
    with pytest.raises(ConfigError, match=r"^train_data:"):
        resolve_dataset(_config(train_data=str(tmp_path / "none")))


@pytest.mark.parametrize("schedule", [
    {"lr_schedule": "multistep", "warmup_steps": 3, "lr_steps": [5, 8], "scales": [0.1, 0.01]},
    {"lr_schedule": "multistep", "warmup_steps": 0, "lr_steps": [4], "scales": [0.5]},
    {"lr_schedule": "poly", "warmup_steps": 2, "power": 2.0},
])
def test_lr_schedule_values(schedule):
    config = _config(lr=0.1, **schedule)
    total = 12
    expected = []
    for step in range(total):
        if step < config["warmup_steps"]:
            expected.append(0.1 * (step + 1) / (config["warmup_steps"] + 1))
        elif config["lr_schedule"] == "poly":
            expected.append(0.1 * (1 - (step - 2) / (total - 2)) ** 2)
        else:
            factor = [s for b, s in zip(config["lr_steps"], config["scales"]) if step >= b]
            expected.append(0.1 * (factor[-1] if factor else 1.0))
    assert [learning_rate(config, s, total) for s in range(total)] == pytest.approx(expected)
    param = flow.nn.Parameter(flow.zeros(2))
    optimizer = flow.optim.SGD([param], lr=0.1)
    scheduler = build_scheduler(optimizer, config, total)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert seen == pytest.approx(expected)


def test_warmup_must_end_before_first_lr_step():
    config = _config(warmup_steps=5, lr_steps=[5], scales=[0.1])
    optimizer = flow.optim.SGD([flow.nn.Parameter(flow.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match=r"^lr_steps:"):
        build_scheduler(optimizer, config, 10)
