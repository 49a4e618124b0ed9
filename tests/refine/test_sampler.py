"""The neighbour moves of the refinement's sampler."""

from __future__ import annotations

from planner.refine import RefineProblem, Space, neighbours, refine
from planner.refine.space import SEARCHED_FIELDS


def test_neighbours_change_one_parameter(problem: RefineProblem) -> None:
    space = Space(problem)
    params = space.seed_params(0)
    seed = problem.seeds[0].layout
    found = neighbours(space, params)
    assert found
    for name, target, layout in found:
        assert layout != seed
        assert target[name] != params[name]
        # the other parameters the seed had keep their values unless the change moved them
        # out of their domain (an integer range that shrank)
        kept = {k: v for k, v in params.items() if k in target and k != name}
        assert all(target[k] == v for k, v in kept.items() if not k.startswith("recompute_num"))
        if name != "base":
            assert {k for k in layout if layout[k] != seed[k]} <= set(SEARCHED_FIELDS)


def test_neighbour_trials_are_recorded(problem: RefineProblem, storage: str) -> None:
    result = refine(problem, trials=16, storage=storage, study_name="moves")
    by_number = {t.number: t for t in result.trials}
    moves = [t for t in result.trials if (t.proposed_by or "").startswith("neighbour of")]
    assert moves, [t.proposed_by for t in result.trials]
    for trial in moves:
        origin, name = trial.proposed_by.removeprefix("neighbour of ").split(": ")
        parent = by_number[int(origin)]
        assert parent.status == "feasible" and parent.number < trial.number
        assert trial.params[name] != parent.params[name]
    seeds = [t for t in result.trials if t.seed_rank is not None]
    assert {t.proposed_by for t in seeds} == {"enqueued"}


def test_every_neighbour_value_is_in_its_domain(problem: RefineProblem) -> None:
    """Two moves from every seed: each parameter value lies in its domain (Optuna would
    reject it otherwise)."""
    space = Space(problem)
    frontier = [space.seed_params(rank) for rank in range(len(problem.seeds))]
    for _ in range(2):
        following = []
        for params in frontier:
            for _name, target, _layout in neighbours(space, params):

                def check(choice, _base_value, target=target):
                    value = target[choice.name]
                    if choice.low is not None:
                        assert choice.low <= value <= choice.high
                    else:
                        assert value in choice.choices, (choice.name, value)
                    return value

                space.assign(target["base"], check)
                following.append(target)
        frontier = following[:60]
