"""The launch configs in ``embedkit/recipes/launch/`` parse and name only options their tools know.

* accelerate configs (``*.yaml``): loaded by accelerate's own ``ClusterConfig.from_yaml_file`` (which rejects
  unknown top-level keys); every key under ``fsdp_config`` / ``deepspeed_config`` must be an option of
  ``accelerate launch`` (that is how accelerate passes them on), enum values are accelerate's constants, and a
  referenced DeepSpeed JSON exists.
* DeepSpeed JSON (``*.json``): checked against :data:`DEEPSPEED_SCHEMA`, a small schema written from DeepSpeed's
  configuration docs (https://www.deepspeed.ai/docs/config-json/; deepspeed itself is not installable here -- only an
  sdist whose build pulls a CUDA torch): known keys, value types, ``"auto"`` only where the HF integration fills it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

LAUNCH = Path(__file__).resolve().parents[1] / "embedkit" / "recipes" / "launch"
AUTO = "auto"
BOOL, INT, NUM, STR = (bool,), (int,), (int, float), (str,)

#: DeepSpeed config keys used by embedkit's configs (DeepSpeed docs "Configuration JSON"): key -> allowed types, or a
#: nested schema. ``"auto"`` marks keys the transformers integration fills from TrainingArguments.
DEEPSPEED_SCHEMA: dict = {
    "train_batch_size": (INT, AUTO),
    "train_micro_batch_size_per_gpu": (INT, AUTO),
    "gradient_accumulation_steps": (INT, AUTO),
    "gradient_clipping": (NUM, AUTO),
    "steps_per_print": (INT, None),
    "wall_clock_breakdown": (BOOL, None),
    "bf16": {"enabled": (BOOL, AUTO)},
    "fp16": {"enabled": (BOOL, AUTO), "auto_cast": (BOOL, None), "loss_scale": (NUM, None),
             "initial_scale_power": (INT, None), "loss_scale_window": (INT, None), "hysteresis": (INT, None),
             "min_loss_scale": (NUM, None)},
    "zero_optimization": {
        "stage": (INT, None), "allgather_partitions": (BOOL, None), "allgather_bucket_size": (NUM, None),
        "overlap_comm": (BOOL, None), "reduce_scatter": (BOOL, None), "reduce_bucket_size": (NUM, AUTO),
        "contiguous_gradients": (BOOL, None), "round_robin_gradients": (BOOL, None),
        "offload_optimizer": {"device": (STR, None), "pin_memory": (BOOL, None)},
        "offload_param": {"device": (STR, None), "pin_memory": (BOOL, None)},
        "sub_group_size": (NUM, None), "stage3_prefetch_bucket_size": (NUM, AUTO),
        "stage3_param_persistence_threshold": (NUM, AUTO), "stage3_max_live_parameters": (NUM, None),
        "stage3_max_reuse_distance": (NUM, None), "stage3_gather_16bit_weights_on_model_save": (BOOL, None),
    },
}


def check_deepspeed(cfg: dict, schema: dict = DEEPSPEED_SCHEMA, where: str = "") -> list[str]:
    """Problems of a DeepSpeed config against ``schema`` (empty list: valid)."""
    problems = []
    for key, value in cfg.items():
        path = f"{where}{key}"
        if key not in schema:
            problems.append(f"unknown key {path}")
            continue
        rule = schema[key]
        if isinstance(rule, dict):
            if not isinstance(value, dict):
                problems.append(f"{path} must be an object")
            else:
                problems += check_deepspeed(value, rule, path + ".")
            continue
        types, auto = rule
        if value == AUTO and auto == AUTO:
            continue
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            problems.append(f"{path}: {value!r} is not {'/'.join(t.__name__ for t in types)}")
    return problems


def _launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {a.dest for a in launch_command_parser()._actions}


YAMLS = sorted(LAUNCH.glob("*.yaml"))
JSONS = sorted(LAUNCH.glob("*.json"))


def test_every_engine_has_a_config() -> None:
    assert {p.name for p in YAMLS} == {"ddp.yaml", "fsdp.yaml", "zero2.yaml", "zero3.yaml"}
    assert {p.name for p in JSONS} == {"zero2.json", "zero3.json"}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_accelerate_config_is_valid(path: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType
    from accelerate.utils.constants import FSDP_AUTO_WRAP_POLICY, FSDP_STATE_DICT_TYPE

    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader: unknown keys raise
    raw = yaml.safe_load(path.read_text())
    options = _launch_options()
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = set(raw.get(section, {})) - options
        assert not unknown, f"{path.name}: {section} keys accelerate launch does not know: {sorted(unknown)}"
    want = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp.yaml": DistributedType.FSDP,
            "zero2.yaml": DistributedType.DEEPSPEED, "zero3.yaml": DistributedType.DEEPSPEED}[path.name]
    assert cfg.distributed_type == want
    if want == DistributedType.FSDP:
        f = cfg.fsdp_config
        assert f["fsdp_version"] == 2 and f["fsdp_reshard_after_forward"] is True  # FSDP2, full shard
        assert f["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and f["fsdp_auto_wrap_policy"] in FSDP_AUTO_WRAP_POLICY
        assert f["fsdp_transformer_layer_cls_to_wrap"]
        assert f["fsdp_activation_checkpointing"] is True
        assert f["fsdp_state_dict_type"] == "FULL_STATE_DICT" and f["fsdp_state_dict_type"] in FSDP_STATE_DICT_TYPE
    if want == DistributedType.DEEPSPEED:
        ds_file = LAUNCH / cfg.deepspeed_config["deepspeed_config_file"]
        assert ds_file.is_file()
        stage = json.loads(ds_file.read_text())["zero_optimization"]["stage"]
        assert stage == int(path.stem[-1])


@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.name)
def test_deepspeed_json_matches_the_schema(path: Path) -> None:
    cfg = json.loads(path.read_text())
    assert check_deepspeed(cfg) == []
    zero = cfg["zero_optimization"]
    assert zero["stage"] == int(path.stem[-1])
    if zero["stage"] == 3:  # saves must be whole: Trainer.save_model gathers 16-bit weights
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_schema_check_catches_mistakes() -> None:
    assert check_deepspeed({"zero_optimisation": {}}) == ["unknown key zero_optimisation"]
    assert check_deepspeed({"zero_optimization": {"stage": "3"}}) == ["zero_optimization.stage: '3' is not int"]
    assert check_deepspeed({"steps_per_print": "auto"}) == ["steps_per_print: 'auto' is not int"]
    assert check_deepspeed({"bf16": {"enabled": "auto"}, "zero_optimization": {"overlap_comm": 1}}) == [
        "zero_optimization.overlap_comm: 1 is not bool"]
