"""The data schedule, the methods against forgetting and the per-task metrics (no Ray)."""

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from fedray.config import load_config
from fedray.config.ownership import ScheduleConfig
from fedray.config.schema import TrainConfig
from fedray.data.arrow import features_table, to_numpy, tokens_table
from fedray.lifecycle.continual import build_schedule, schedule_problems
from fedray.lifecycle.continual.methods import EwcState, ewc, replay, task_anchor
from fedray.lifecycle.continual.metrics import summarise, task_matrix
from fedray.lifecycle.continual.schedule import rotation_matrix
from fedray.models.flat import get_flat, param_spec
from fedray.models.tasks import Classification
from fedray.strategy.terms import LocalRound
from fedray.types import Context


def labelled(n=40, features=64, seed=0):
    rng = np.random.default_rng(seed)
    return features_table(rng.random((n, features), dtype=np.float32), np.arange(n) % 10)


def schedule(name, tasks, rounds_per_task=3, stagger=0, owner_names=()):
    return build_schedule(ScheduleConfig(name, tasks, rounds_per_task, stagger), owner_names)


# ---- schedules -----------------------------------------------------------------------


def test_class_incremental_views_hold_only_their_classes():
    s = schedule("classes", [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    table = labelled()
    for t, classes in enumerate(([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])):
        _, y = to_numpy(s.view(table, t))
        assert sorted(set(y.tolist())) == classes and len(y) == 20


def test_rounds_map_to_tasks_with_per_client_drift():
    s = schedule("classes", [[0], [1], [2]], rounds_per_task=4, stagger=1)
    assert [s.task_of(r) for r in range(1, 15)] == [0] * 4 + [1] * 4 + [2] * 6  # the last task continues
    assert [s.task_of(r, client_id=2) for r in range(1, 12)] == [0] * 6 + [1] * 4 + [2]  # 2 rounds late
    assert s.task_of(5, client_id=4) == s.task_of(5)  # 4 x 1 mod 4 = 0: no delay


def test_rotation_by_90_degrees_is_exact_and_0_is_identity():
    table = labelled()
    x, _ = to_numpy(table)
    turned, _ = to_numpy(schedule("rotation", [0, 90]).view(table, 1))
    expected = np.rot90(x.reshape(-1, 8, 8), k=1, axes=(1, 2)).reshape(-1, 64)
    np.testing.assert_allclose(turned, expected, atol=1e-5)
    assert schedule("rotation", [0, 90]).view(table, 0) is table
    m = rotation_matrix(64, 45)
    assert m.shape == (64, 64) and (m >= 0).all() and m.sum(axis=1).max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="square images"):
        rotation_matrix(10, 30)


def test_owner_prefixes_pick_plays():
    names = ("hamlet/HAMLET", "hamlet/OPHELIA", "macbeth/MACBETH")
    table = tokens_table(np.zeros((6, 4), np.int32), np.array([0, 1, 2, 0, 2, 1]))
    s = schedule("owners", [["hamlet"], ["macbeth"]], owner_names=names)
    assert s.view(table, 0).column("owner").to_pylist() == [0, 1, 0, 1]
    assert s.view(table, 1).column("owner").to_pylist() == [2, 2]
    with pytest.raises(ValueError, match=r"tasks\[1\] = \['othello'\] matches no owner"):
        schedule("owners", [["hamlet"], ["othello"]], owner_names=names)


def test_empty_and_unlearnable_tasks_are_config_errors():
    with pytest.raises(Exception, match=r"data.schedule.tasks\[1\] is empty"):
        load_config(None, ["data.schedule.name=classes", "data.schedule.tasks=[[0, 1], []]"])
    with pytest.raises(Exception, match="data.schedule.tasks must list at least one task"):
        load_config(None, ["data.schedule.name=classes"])
    table = labelled()
    problems = schedule_problems(ScheduleConfig("classes", [[0, 1], [42]]), table, table)
    assert problems == ["data.schedule.tasks[1] = [42] selects 0 training and 0 test examples; every task needs both"]
    text = tokens_table(np.zeros((2, 4), np.int32), np.array([0, 1]))
    assert "needs a labelled dataset" in schedule_problems(ScheduleConfig("classes", [[0]]), text, text)[0]
    assert "must list integer class labels" in schedule_problems(ScheduleConfig("classes", [["a"]]), table, table)[0]


# ---- methods -------------------------------------------------------------------------


def local_round(model, data, task=0, server_round=1, client=3):
    spec = param_spec(model)
    return LocalRound(model, spec, get_flat(model, spec), {}, Context(server_round, client, 7, task=task),
                      TrainConfig(batch_size=8, lr=0.1), Classification(), data=data)


def data_of(classes, n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor([classes[i % len(classes)] for i in range(n)])
    return torch.rand(n, 4, generator=gen), y


def test_replay_keeps_a_per_task_share_and_replays_only_past_tasks():
    model = torch.nn.Linear(4, 4)
    term = replay(buffer_size=10, weight=2.0)
    state = term.init_client(None)
    first = local_round(model, data_of([0, 1]), task=0)
    assert term.objective(first, state) is None  # nothing from the past yet
    _, state = term.finish(first, state)
    assert state.tasks == (0,) and state.num_rows == 10
    _, again = term.finish(first, state)
    assert all(np.array_equal(a, b) for a, b in zip(state.rows[0], again.rows[0]))  # seeded by the context
    second = local_round(model, data_of([2, 3]), task=1, server_round=4)
    loss = term.objective(second, state)
    assert set(state.rows[0][1].tolist()) <= {0, 1} and torch.isfinite(loss(model, None))
    _, state = term.finish(second, state)
    assert state.tasks == (0, 1) and [len(r[1]) for r in state.rows] == [5, 5]  # the buffer is shared
    assert set(state.rows[1][1].tolist()) <= {2, 3}


def test_ewc_anchors_at_a_task_change_and_penalises_moving_important_weights():
    model = torch.nn.Linear(4, 4)
    term = ewc(lam=1e3, fisher_batches=2)
    state = term.init_client(None)
    first = local_round(model, data_of([0, 1]), task=0)
    assert term.objective(first, state) is None
    _, state = term.finish(first._replace(delta=np.zeros(20, np.float32)), state)
    assert state.task == 0 and state.fisher.shape == (20,) and (state.fisher >= 0).all() and state.fisher.any()
    second = local_round(model, data_of([2, 3]), task=1, server_round=4)
    penalty = term.objective(second, state)
    assert penalty(model, None).item() == 0.0  # at the anchor
    with torch.no_grad():
        model.weight += 0.1
    stiffness = np.minimum(1e3 * state.fisher, 1 / 0.1)[:16]  # capped at 1 / lr
    assert penalty(model, None).item() == pytest.approx(0.5 * (stiffness * 0.01).sum(), rel=1e-4)
    _, later = term.finish(second._replace(delta=np.zeros(20, np.float32)), state)
    np.testing.assert_array_equal(later.importance, state.fisher)
    np.testing.assert_array_equal(later.anchor, second.params)
    assert isinstance(later, EwcState) and later.task == 1


def test_task_anchor_pulls_the_new_model_back_from_the_first_round_of_a_task():
    t = task_anchor(strength=0.25)
    params, update = np.ones(3, np.float32), np.full(3, 0.5, np.float32)
    state = t.init(params)
    out, state = t.apply(update, state, params, Context(2, None, 0, task=0))
    np.testing.assert_array_equal(out, update)
    out, state = t.apply(update, state, params, Context(3, None, 0, task=1))  # anchor = params
    np.testing.assert_allclose(out, update - 0.25 * update)
    moved = params + 1
    out, _ = t.apply(update, state, moved, Context(4, None, 0, task=1))
    np.testing.assert_allclose(out, update - 0.25 * (moved + update - params))


# ---- metrics -------------------------------------------------------------------------


def test_average_accuracy_and_forgetting_by_hand():
    history = [{"task_acc_0": 0.5}, {"task_acc_0": 0.9}, {"task_acc_0": float("nan")}]
    now = {"task_acc_0": 0.6, "task_acc_1": 0.8, "task_acc_2": 0.0}
    assert summarise(now, 1, history) == {"avg_acc": pytest.approx(0.7), "forgetting": pytest.approx(0.3)}
    assert math.isnan(summarise(now, 0, history)["forgetting"])


def test_task_matrix_takes_the_last_evaluated_round_of_each_task():
    rows = [{"task": 0.0, "task_acc_0": 0.5, "task_acc_1": 0.0}, {"task": 0.0, "task_acc_0": 0.9, "task_acc_1": 0.1},
            {"task": float("nan"), "task_acc_0": float("nan"), "task_acc_1": float("nan")},
            {"task": 1.0, "task_acc_0": 0.4, "task_acc_1": 0.8}]
    np.testing.assert_array_equal(task_matrix(rows), [[0.9, 0.1], [0.4, 0.8]])
    assert task_matrix([{"eval_accuracy": 0.5}]) is None
