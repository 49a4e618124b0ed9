"""torchtitan emitters: what only torchtitan has, and torchtitan's own checks of the output.

The contract every emitter keeps (golden files, determinism, round trip, refusals) is in
``test_contract.py``, run on both formats; the plans are
``torchtitan_cases.TORCHTITAN_CASES``. Here: what one version refuses the other expresses,
the batch semantics, the field tables and torchtitan's rules restated
(``planner.emit.torchtitan``, from ``distributed/parallel_dims.py``, ``trainer.py`` and
``distributed/pipeline_parallel.py``), the recipe's form and the launcher; and where
torchtitan 0.2.x is installed, its own ``ConfigManager`` (which rejects unknown TOML keys)
and ``ParallelDims``; where torchtitan 0.3.x is installed, the emitted recipe loaded
through its ``ConfigManager`` (``--module/--config``) with every field, the mesh and the
pipeline split checked. CI has no torch, so those two skip there.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from emitter_cases import built
from torchtitan_cases import TORCHTITAN_CASES, TORCHTITAN_REFUSALS, torchtitan_refusal_plan

from planner.catalog import catalog_model
from planner.emit.base import EmitError, EmitInput
from planner.emit.torchtitan import (
    RECIPE_FILE,
    RECIPE_MODULE,
    TOML_FILE,
    TORCHTITAN_MODELS,
    V02_ABSENT,
    V02_FIELDS,
    TorchtitanEmitter,
    TorchtitanTomlEmitter,
    current_home,
    parse_toml,
    recipe_function_name,
    render_recipe,
    render_toml,
    rule_violations,
    torchtitan_settings,
)
from planner.specs.layout import stage_layer_counts

FORMATS = {"current": TorchtitanEmitter(), "v0.2": TorchtitanTomlEmitter()}
ALL_KEYS = {(s, k) for s, keys in V02_FIELDS.items() for k in keys} | V02_ABSENT
NO_TORCHTITAN = "torchtitan is not installed (CI has no torch); the field tables and rules check"
PLANS_TO_CHECK = built(TORCHTITAN_CASES)
CASES = sorted(TORCHTITAN_CASES)


def case_plan(case: str) -> EmitInput:
    return PLANS_TO_CHECK[case]


# --- the two versions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [name for name, case in TORCHTITAN_REFUSALS.items() if len(case[2]) == 1]
)
def test_what_one_version_refuses_the_other_expresses(name: str) -> None:
    """The contract checks each refusal; this, that the gap is the version's alone."""
    (refusing,) = TORCHTITAN_REFUSALS[name][2]
    other = FORMATS["v0.2" if refusing == "current" else "current"]
    plan = torchtitan_refusal_plan(name)
    with pytest.raises(EmitError):
        FORMATS[refusing].emit(plan)
    assert other.emit(plan).files


def test_settings_order_does_not_change_the_files() -> None:
    plan = case_plan("llama-3.1-8b-tp2-cp2-fp8-async-tp")
    settings = torchtitan_settings(plan)
    shuffled = {s: dict(reversed(settings[s].items())) for s in reversed(list(settings))}
    assert render_toml(shuffled) == render_toml(settings)
    assert render_recipe(shuffled, plan) == render_recipe(settings, plan)


# --- what the settings say ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_batch_follows_torchtitan_semantics(case: str) -> None:
    """Trainer.__init__: accumulation = global // (local x dp); pipeline micro-batches =
    local // pipeline_parallel_microbatch_size. Megatron's micro-batches per step must match."""
    plan = case_plan(case)
    settings = torchtitan_settings(plan)
    train, par = settings["training"], settings["parallelism"]
    local = train["local_batch_size"]
    accumulation = train["global_batch_size"] // (local * plan.dp)
    if plan.layout.pp == 1:
        assert (local, accumulation) == (plan.layout.mbs, plan.grad_accumulation)
    else:
        assert par["pipeline_parallel_microbatch_size"] == plan.layout.mbs
        assert (accumulation, local // plan.layout.mbs) == (1, plan.grad_accumulation)


def test_toml_parser_reads_dotted_sections_and_refuses_loose_keys() -> None:
    settings = {"quantize.linear.float8": {"filter_fqns": ["output"]}, "compile": {"enable": True}}
    assert parse_toml(render_toml(settings)) == settings
    with pytest.raises(EmitError, match="outside any"):
        parse_toml("steps = 3\n[training]\nseq_len = 8\n")


@pytest.mark.parametrize("case", CASES)
def test_every_key_is_a_torchtitan_field(case: str) -> None:
    settings = torchtitan_settings(case_plan(case))
    for section, values in settings.items():
        for key in values:
            assert key in V02_FIELDS.get(section, ()) or (section, key) in V02_ABSENT


@pytest.mark.parametrize("case", CASES)
def test_emitted_settings_obey_torchtitans_rules(case: str) -> None:
    plan = case_plan(case)
    for version in ("current", "0.2"):
        settings = torchtitan_settings(plan)
        found = rule_violations(
            settings, version=version, world_size=plan.num_gpus, num_layers=plan.model.num_layers
        )
        assert found == []


def test_rule_checker_catches_broken_settings() -> None:
    plan = case_plan("llama-3.1-70b-64xh100-fsdp-pp4-vpp2")
    good = torchtitan_settings(plan)
    broken = {
        "tensor_parallel_degree": 4,  # product 32 != 64
        "pipeline_parallel_layers_per_stage": 20,  # 4 stages: 1 per rank for Interleaved1F1B
        "pipeline_parallel_microbatch_size": 3,  # 256 % 3
        "expert_parallel_degree": 3,
    }
    settings = {**good, "parallelism": {**good["parallelism"], **broken}}
    found = " | ".join(rule_violations(settings, version="0.2", world_size=64, num_layers=80))
    for phrase in ("!= world size 64", "needs >= 2 stages per rank", "microbatch_size 3",
                   "ep x etp = 3 x 1"):  # fmt: skip
        assert phrase in found


# --- the recipe and the launcher ---------------------------------------------------------------


def _call_keywords(tree: ast.AST, callee: str) -> set[str]:
    return {
        keyword.arg
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == callee
        for keyword in node.keywords
        if keyword.arg
    }


@pytest.mark.parametrize("case", CASES)
def test_recipe_is_a_config_function_using_current_field_names(case: str) -> None:
    plan = case_plan(case)
    tree = ast.parse(FORMATS["current"].emit(plan).as_dict()[RECIPE_FILE])
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert [f.name for f in functions] == [recipe_function_name(plan)]
    assert ast.unparse(functions[0].returns) == "Trainer.Config"
    homes = {current_home(section, key) for section, key in ALL_KEYS}
    assert {f"parallelism.{k}" for k in _call_keywords(tree, "ParallelismConfig")} <= homes
    assert {f"compile.{k}" for k in _call_keywords(tree, "CompileConfig")} <= homes
    training = _call_keywords(tree, "dataclasses.replace") - {"model_spec", "hf_assets_path"}
    training -= {"loss", "training", "parallelism", "activation_checkpoint", "compile"}
    assert {f"training.{k}" for k in training} <= homes | {"training.disable_cuda_graphs"}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert all(module.startswith("torchtitan.") for module in modules if module)


def _ruff() -> str | None:
    beside_python = Path(sys.executable).parent / "ruff"
    return str(beside_python) if beside_python.exists() else shutil.which("ruff")


@pytest.mark.parametrize("case", CASES)
def test_recipe_is_formatted_as_ruff_would(case: str) -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    text = FORMATS["current"].emit(case_plan(case)).as_dict()[RECIPE_FILE]
    formatted = subprocess.run(
        [ruff, "format", "--line-length", "100", "--stdin-filename", RECIPE_FILE, "-"],
        input=text, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert formatted.stdout == text


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_launcher_is_valid_bash_with_the_documented_environment(fmt: str) -> None:
    plan = case_plan("llama-3.1-70b-64xh100-fsdp-pp4-vpp2")
    script = FORMATS[fmt].emit(plan).as_dict()["run_torchtitan.sh"]
    for name in ("TORCHTITAN_PATH", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        assert f"#   {name}" in script and f'"${{{name}' in script
    assert 'MASTER_ADDR="${MASTER_ADDR:?' in script  # 8 nodes: no localhost default
    assert "--nproc_per_node 8" in script and 'NNODES="${NNODES:-8}"' in script
    assert "step time    3.250 s" in script and "MFU          0.500" in script
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_model_table_matches_the_catalogue() -> None:
    for name, entry in TORCHTITAN_MODELS.items():
        spec = catalog_model(name).spec
        assert (spec.num_layers, spec.hidden_size) == (entry.num_layers, entry.hidden_size)


# --- checked by torchtitan itself (skipped without it) -----------------------------------------


def _torchtitan(series: str) -> Any:
    torchtitan = pytest.importorskip("torchtitan", reason=NO_TORCHTITAN)
    if not torchtitan.__version__.startswith(series):
        pytest.skip(f"needs torchtitan {series}x, found {torchtitan.__version__}")
    return torchtitan


def _expected_layers_per_virtual_stage(plan: EmitInput) -> list[int]:
    chunks = plan.layout.vpp or 1
    per_rank = stage_layer_counts(plan.model, plan.layout)
    if chunks == 1:
        return per_rank
    return [per_rank[0] // chunks] * (plan.layout.pp * chunks)


def test_v02_field_table_matches_jobconfig() -> None:
    _torchtitan("0.2.")
    from torchtitan.config.job_config import JobConfig

    def fields_of(path: str) -> set[str]:
        node: Any = JobConfig()
        for part in path.split("."):
            node = getattr(node, part)
        return {field.name for field in dataclasses.fields(node)}

    for section, keys in V02_FIELDS.items():
        assert keys <= fields_of(section), section
    for section, key in V02_ABSENT:
        assert key not in fields_of(section)


@pytest.mark.parametrize("case", CASES)
def test_toml_is_accepted_by_torchtitan_02(case: str, tmp_path: Path) -> None:
    _torchtitan("0.2.")
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.parallel_dims import ParallelDims
    from torchtitan.distributed.pipeline_parallel import generate_llm_fqn_per_model_part

    plan = case_plan(case)
    path = tmp_path / TOML_FILE
    path.write_text(FORMATS["v0.2"].emit(plan).as_dict()[TOML_FILE])
    config = ConfigManager().parse_args(["--job.config_file", str(path)])
    for section, values in torchtitan_settings(plan).items():
        node: Any = config
        for part in section.split("."):
            node = getattr(node, part)
        for key, value in values.items():
            assert getattr(node, key) == value, f"{section}.{key}"
    par = config.parallelism  # ParallelDims.__post_init__ runs torchtitan's degree checks
    ParallelDims(
        dp_replicate=par.data_parallel_replicate_degree, dp_shard=par.data_parallel_shard_degree,
        cp=par.context_parallel_degree, tp=par.tensor_parallel_degree,
        pp=par.pipeline_parallel_degree, ep=par.expert_parallel_degree,
        etp=par.expert_tensor_parallel_degree, world_size=plan.num_gpus,
    )  # fmt: skip
    if plan.layout.pp > 1:
        expected = _expected_layers_per_virtual_stage(plan)
        parts = generate_llm_fqn_per_model_part(
            len(expected), plan.model.num_layers,
            par.pipeline_parallel_first_stage_less_layers,
            par.pipeline_parallel_last_stage_less_layers,
        )  # fmt: skip
        assert [sum(m.startswith("layers.") for m in part) for part in parts] == expected


def test_current_field_table_matches_torchtitan_03() -> None:
    _torchtitan("0.3.")
    from torchtitan.models.llama3.config_registry import llama3_8b

    config = llama3_8b()
    for home in {current_home(section, key) for section, key in ALL_KEYS}:
        if home.startswith("("):
            continue
        parent, _, field = f"config.{home}".rpartition(".")
        node: Any = config
        for part in parent.split(".")[1:]:
            node = getattr(node, part)
        assert field in {f.name for f in dataclasses.fields(node)}, home


def test_model_table_matches_torchtitan_03() -> None:
    _torchtitan("0.3.")
    for entry in TORCHTITAN_MODELS.values():
        registry = importlib.import_module(f"torchtitan.models.{entry.module}").model_registry
        model = registry(entry.flavor).model
        assert (len(model.layers), model.dim) == (entry.num_layers, entry.hidden_size)
        recipes = importlib.import_module(f"torchtitan.models.{entry.module}.config_registry")
        assert callable(getattr(recipes, entry.base_recipe))


@pytest.mark.parametrize("case", CASES)
def test_recipe_is_accepted_by_torchtitan_03(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _torchtitan("0.3.")
    plan = case_plan(case)
    if plan.precision == "fp8":
        pytest.skip("Float8LinearConverter refuses to build without torchao and an SM89+ GPU")
    from torchtitan.config import ConfigManager
    from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC
    from torchtitan.distributed.parallel_dims import ParallelDims
    from torchtitan.distributed.pipeline_parallel import (
        _generate_llm_fqn_per_model_part,
        _get_pipeline_metadata,
    )

    (tmp_path / RECIPE_FILE).write_text(FORMATS["current"].emit(plan).as_dict()[RECIPE_FILE])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, RECIPE_MODULE, raising=False)
    config = ConfigManager().parse_args(
        ["--module", RECIPE_MODULE, "--config", recipe_function_name(plan)]
    )
    settings = torchtitan_settings(plan)
    for section, values in settings.items():
        for key, value in values.items():
            home = current_home(section, key)
            if home.startswith("("):
                continue
            node: Any = config
            for part in home.split("."):
                node = getattr(node, part)
            assert node == value, home
    ac_class = {"none": type(None), "selective": SelectiveAC.Config, "full": FullAC.Config}
    assert type(config.activation_checkpoint) is ac_class[plan.layout.recompute]
    dims = ParallelDims.from_config(config.parallelism, plan.num_gpus)  # torchtitan's checks
    if plan.layout.pp > 1:
        stages, layers, first, last = _get_pipeline_metadata(
            dims, config.parallelism, config.model_spec.model
        )
        parts = _generate_llm_fqn_per_model_part(stages, layers, first, last)
        counts = [sum(m.startswith("layers.") for m in part) for part in parts]
        assert counts == _expected_layers_per_virtual_stage(plan)
