"""The handles that put values into the cost model's cache keys (``planner.cost.keys``),
and ``stage_times`` cached on its frozen input."""

from __future__ import annotations

from planner import ParallelConfig, load_gpu, load_model
from planner.cost import stage_work
from planner.cost.frameworks import implementation, state_layout
from planner.cost.keys import Same, intern
from planner.cost.rates import rates_for
from planner.cost.stage_work import stage_times


def test_interned_handles_are_one_per_value() -> None:
    a, b = tuple([1.0, "x"]), tuple([1.0, "x"])
    assert a is not b
    assert intern(a) is intern(b)
    assert intern(a) != intern((2.0, "x"))


def test_same_compares_the_object_not_its_value() -> None:
    model = load_model("llama-3.1-8b")
    copy = model.model_copy()
    assert copy == model
    assert Same(model) == Same(model) and hash(Same(model)) == hash(Same(model))
    assert Same(copy) != Same(model)


def test_stage_times_of_an_equal_model_copy_are_computed_again_and_equal() -> None:
    model = load_model("llama-3.1-8b")
    rates = rates_for(load_gpu("h100-sxm"), "bf16")
    impl = implementation(framework="megatron", layout=state_layout("bf16"), precision="bf16")
    layout = ParallelConfig(tp=2, recompute="full", recompute_method="uniform",
                            recompute_num_layers=1)  # fmt: skip
    kwargs = {"first": True, "last": False, "layout": layout, "seq_len": 4096, "impl": impl}
    times = stage_times(model, list(range(4)), rates=rates, **kwargs)
    before = stage_work._stage_times.cache_info()
    assert stage_times(model, list(range(4)), rates=rates, **kwargs) is times
    again = stage_times(model.model_copy(), list(range(4)), rates=rates, **kwargs)
    after = stage_work._stage_times.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses + 1
    assert again == times and again is not times
    selective = layout.model_copy(update={"recompute": "selective", "recompute_method": None,
                                          "recompute_num_layers": None})  # fmt: skip
    assert (
        stage_times(model, list(range(4)), rates=rates, **{**kwargs, "layout": selective}) != times
    )
