"""torchtitan's vocabulary: the versions targeted, the models it defines, and the field tables.

``V02_FIELDS`` lists every ``--section.key`` the settings may hold (v0.2.2's JobConfig
names); ``CURRENT_MOVED`` says where 0.3.0 keeps the ones it moved. The tests check both
tables against the installed torchtitan where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Settings = dict[str, dict[str, object]]
Version = Literal["current", "0.2"]

CURRENT_VERSION = "0.3.0"
TOML_VERSION = "0.2.2"
RECIPE_MODULE = "autopar_torchtitan"
RECIPE_FILE = f"{RECIPE_MODULE}.py"
TOML_FILE = "torchtitan.toml"
LAUNCH_FILE = "run_torchtitan.sh"
DEFAULT_STEPS = 1000
"""Run length written when the plan has no token budget; --training.steps N overrides it."""
DATASET = "c4"  # torchtitan's shipped recipes train on c4; JobConfig's default is c4_test
COMPILE_COMPONENTS = ["model", "loss"]  # torchtitan's default compile components


@dataclass(frozen=True)
class TorchtitanModel:
    """A catalogue model that torchtitan defines, and where its 0.3.0 recipe lives."""

    module: str  # torchtitan.models.<module>; also the 0.2.x ``model.name``
    flavor: str
    base_recipe: str  # 0.3.0 config_registry function whose dataset/optimizer we keep
    hf_repo: str  # assets downloaded to ./assets/hf/<repo name> by scripts/download_hf_assets.py
    num_layers: int
    hidden_size: int

    @property
    def hf_assets_path(self) -> str:
        return f"./assets/hf/{self.hf_repo.split('/')[-1]}"


# Flavors from torchtitan 0.3.0 models/*/__init__.py (the same names exist in 0.2.2);
# shapes checked against the catalogue and, where installed, torchtitan in the tests.
TORCHTITAN_MODELS: dict[str, TorchtitanModel] = {
    "llama-3.1-8b": TorchtitanModel(
        "llama3", "8B", "llama3_8b", "meta-llama/Llama-3.1-8B", 32, 4096
    ),
    "llama-3.1-70b": TorchtitanModel(
        "llama3", "70B", "llama3_70b", "meta-llama/Llama-3.1-70B", 80, 8192
    ),
    "llama-3.1-405b": TorchtitanModel(
        "llama3", "405B", "llama3_405b", "meta-llama/Llama-3.1-405B", 126, 16384
    ),
    # 0.3.0 ships no qwen3_8b / qwen3_235b_a22b recipe: the nearest dense / MoE one is the base
    "qwen3-8b": TorchtitanModel("qwen3", "8B", "qwen3_14b", "Qwen/Qwen3-8B", 36, 4096),
    "qwen3-32b": TorchtitanModel("qwen3", "32B", "qwen3_32b", "Qwen/Qwen3-32B", 64, 5120),
    "qwen3-30b-a3b": TorchtitanModel(
        "qwen3", "30B-A3B", "qwen3_30b_a3b", "Qwen/Qwen3-30B-A3B", 48, 2048
    ),
    "qwen3-235b-a22b": TorchtitanModel(
        "qwen3", "235B-A22B", "qwen3_30b_a3b", "Qwen/Qwen3-235B-A22B", 94, 4096
    ),
    "deepseek-v3": TorchtitanModel(
        "deepseek_v3", "671B", "deepseek_v3_671b", "deepseek-ai/DeepSeek-V3", 61, 7168
    ),
}

# Every key torchtitan_settings may write, by section: all are fields of v0.2.2's JobConfig
# (config/job_config.py) except those in V02_ABSENT, which only 0.3.0 has.
V02_FIELDS: dict[str, frozenset[str]] = {
    "model": frozenset({"name", "flavor", "hf_assets_path", "converters"}),
    "training": frozenset({
        "local_batch_size", "global_batch_size", "seq_len", "steps", "dataset",
        "mixed_precision_param",
    }),
    "parallelism": frozenset({
        "data_parallel_replicate_degree", "data_parallel_shard_degree",
        "tensor_parallel_degree", "enable_async_tensor_parallel",
        "context_parallel_degree", "context_parallel_rotate_method",
        "expert_parallel_degree", "expert_tensor_parallel_degree",
        "pipeline_parallel_degree", "pipeline_parallel_schedule",
        "pipeline_parallel_microbatch_size", "pipeline_parallel_layers_per_stage",
        "pipeline_parallel_first_stage_less_layers", "pipeline_parallel_last_stage_less_layers",
    }),
    "activation_checkpoint": frozenset({"mode", "selective_ac_option"}),
    "compile": frozenset({"enable", "components"}),
    "quantize.linear.float8": frozenset({"recipe_name", "filter_fqns"}),
    "quantize.grouped_mm.float8": frozenset({"fqns"}),
}  # fmt: skip
V02_ABSENT = frozenset({("parallelism", "enable_sequence_parallel")})

# The keys whose 0.3.0 home is not ``<section>.<key>`` on Trainer.Config: another attribute
# path, or a "(...)" note where it is no plain field and the recipe writes it by hand (or
# not at all). The tests resolve every path on torchtitan 0.3.x's Trainer.Config.
CURRENT_MOVED: dict[tuple[str, str], str] = {
    ("model", "name"): "model_spec.name",
    ("model", "flavor"): "model_spec.flavor",
    ("model", "hf_assets_path"): "hf_assets_path",
    ("model", "converters"): "(model_registry(flavor, converters=[...]))",
    ("training", "dataset"): "dataloader.dataset",  # kept from the base recipe
    ("parallelism", "enable_async_tensor_parallel"): "compile.enable_async_tensor_parallel",
    ("parallelism", "context_parallel_rotate_method"): "(none: CP all-gathers K/V)",
    ("parallelism", "expert_tensor_parallel_degree"): "(none: EP implies etp 1)",
    ("activation_checkpoint", "mode"): "(activation_checkpoint: None | SelectiveAC | FullAC)",
    ("activation_checkpoint", "selective_ac_option"): "(SelectiveAC is op-level only)",
    ("quantize.linear.float8", "recipe_name"): "(Float8LinearConverter.Config.recipe_name)",
    ("quantize.linear.float8", "filter_fqns"): "(Float8LinearConverter.Config.filter_fqns)",
    ("quantize.grouped_mm.float8", "fqns"): "(Float8GroupedExpertsConverter.Config)",
}


def current_home(section: str, key: str) -> str:
    """Where torchtitan 0.3.0 keeps the setting ``section.key`` (see ``CURRENT_MOVED``)."""
    return CURRENT_MOVED.get((section, key), f"{section}.{key}")


CURRENT_MODULE_NAMES = {"output": "lm_head"}  # 0.3.0 renamed the output projection
SINGLE_STAGE_SCHEDULES = frozenset({"1f1b", "gpipe"})  # torch.distributed.pipelining
