"""Two precisions: `precision` for training's matmuls, `measure_precision` for the
measurements', each reaching its own dots in the lowered programs.

The programs are lowered for 'cuda' (shapes only, as tests/test_lowering.py does) with the
two precisions different, and every dot_general and convolution is found in one of the
named scopes trainstate.TRAINING and trainstate.MEASURING (tests/hlo.matmuls) and must carry that
scope's precision; both scopes must hold some. A GPU user trains in TF32
(precision='high' or 'default') and still measures radii, ||W(0)||, the Gram matrix and
the sharpness in float32.
"""

from __future__ import annotations

import collections
import functools

import hlo
import jax
import jax.numpy as jnp
import pytest

from overparam import chunks, measurements, model, programs, train, trainstate
from overparam import config as config_lib
from overparam import plan as plan_lib


@functools.cache
def _texts(static: train.Static, size: int = 2) -> tuple[str, str]:
    program = chunks.jit_program(static, donate=True)
    keys, scalars, data = programs.abstract_arguments(static, size)
    init = program.init.trace(keys, data)
    chunk = program.chunk.trace(init.out_info, scalars, data, jax.ShapeDtypeStruct((), jnp.int32))
    return tuple(t.lower(lowering_platforms=("cuda",)).as_text(debug_info=True)
                 for t in (init, chunk))


STATICS = {
    # the mlp with everything on: SGD (the record's full-batch forward), test points,
    # centered output, the output layer trained, Gram and sharpness records
    "mlp": dict(width=80, depth=2, n=8, d=4, batch_size=4, loss="squared", optimizer="sgd",
                param="ntk", chunk_records=2, gram_every=1, sharpness_every=2, n_test=3,
                center_output=True, train_output=True, linear_twin=True, track_features=True,
                track_alignment=True),
    # a flax module (its J J^T Gram), convolutions (operator norms), mup's multipliers
    "cnn": dict(width=4, depth=2, n=4, d=16, batch_size=4, loss="squared", optimizer="gd",
                param="mup", arch="cnn", chunk_records=2, gram_every=2, sharpness_every=1,
                linear_twin=True, track_features=True),
    # the infinite-width trajectory (kernel GD with H^inf: the mlp, GD, squared loss)
    "kernel": dict(width=80, depth=1, n=8, d=4, batch_size=8, loss="squared", optimizer="gd",
                   param="ntk", chunk_records=2, gram_every=2, infinite_width=True),
}


@pytest.mark.slow
@pytest.mark.parametrize("fixed_loops", [False, True])
@pytest.mark.parametrize("train_precision,measure_precision", [("default", "highest"),
                                                               ("highest", "high")])
@pytest.mark.parametrize("kind", STATICS)
def test_each_precision_reaches_its_matmuls(kind, train_precision, measure_precision,
                                            fixed_loops):
    static = train.Static(**STATICS[kind], precision=train_precision,
                          measure_precision=measure_precision, fixed_loops=fixed_loops)
    want = {trainstate.TRAINING: model.PRECISIONS[train_precision].name,
            trainstate.MEASURING: model.PRECISIONS[measure_precision].name}
    for program, text in zip(("init", "chunk"), _texts(static)):
        found = hlo.matmuls(text, (trainstate.TRAINING, trainstate.MEASURING))
        counts = collections.Counter(found)
        assert all(scope is not None for _, scope in found), (program, counts)
        wrong = {(p, s): n for (p, s), n in counts.items() if p != want[s]}
        assert not wrong, (program, wrong)
        assert {s for _, s in found} == {trainstate.TRAINING, trainstate.MEASURING}, (
            program, counts)


def test_the_scope_check_sees_a_matmul_in_the_wrong_precision(monkeypatch):
    """A measurement whose dots are at the training precision (the spectral norm handed
    the wrong precision) is found (the check can fail)."""
    static = train.Static(**{**STATICS["mlp"], "width": 81}, precision="default",
                          measure_precision="highest")  # a shape traced for this test only
    spectral_norm = measurements.metrics.spectral_norm
    monkeypatch.setattr(measurements.metrics, "spectral_norm",
                        lambda D, V, precision, **kw: spectral_norm(
                            D, V, precision=jax.lax.Precision.DEFAULT, **kw))
    _, chunk = _texts(static)
    found = hlo.matmuls(chunk, (trainstate.TRAINING, trainstate.MEASURING))
    assert ("DEFAULT", trainstate.MEASURING) in found


def test_measure_precision_and_power_iters_are_not_part_of_a_runs_identity():
    """They change what is recorded, not what is trained: run_ids stay; precision (the
    training's) is part of it."""
    base = dict(widths=(8,), num_seeds=2, n=(8,), d=4)
    ids = lambda **kw: [r.run_id for r in config_lib.expand(config_lib.validate({**base,
                                                                                 **kw}))]
    assert ids() == ids(measure_precision="default") == ids(power_iters=3)
    assert ids() != ids(precision="high")
    assert {"measure_precision", "power_iters"} <= set(config_lib.NOT_IDENTITY)


@pytest.mark.parametrize("field,value", [("measure_precision", "float16"),
                                         ("power_iters", 0)])
def test_bad_values_are_one_line_naming_the_field(field, value):
    with pytest.raises(config_lib.ConfigError, match=f"^config.{field}: "):
        config_lib.validate({field: value})


def test_the_planner_hands_both_precisions_to_the_program():
    sweep = config_lib.validate(dict(widths=(8,), num_seeds=1, n=(8,), d=4, precision="high",
                                     measure_precision="highest", power_iters=5))
    (batch,) = plan_lib.make_plan(sweep, budget_mb=64).batches
    assert (batch.static.precision, batch.static.measure_precision) == ("high", "highest")
    assert batch.static.power_iters == 5 and not batch.static.fixed_loops
