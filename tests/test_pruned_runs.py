"""Every mask method end to end on the bundled digits: train, resume, evaluate, export, TFLite.

The masks themselves (scores, budgets) are tested in test_pruning_scores.py; tfmot's
magnitude runs in tests/tfmot (a process of its own).
"""

import dataclasses
import os

from ai_edge_litert import interpreter as litert_interpreter
import numpy as np
import pytest
import tensorflow as tf

from ssc_tf import convert_tflite
from ssc_tf import evaluate
from ssc_tf import export
from ssc_tf import flagfile
from ssc_tf import model_dir as model_dir_lib
from ssc_tf import pruning
from ssc_tf import train
from ssc_tf.models import masked
from ssc_tf.pruning import budget
from ssc_tf.pruning import scores


def _config(sparsity, epochs):
    return dataclasses.replace(
        flagfile.load("quickstart"), sparsity=sparsity, epochs=epochs, batch_size=8,
        lr_boundaries=(), learning_rate=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sparsity", pruning.MASK_METHODS)
def test_a_pruned_run_keeps_its_mask_through_resume_evaluate_export_and_tflite(
        sparsity, tmp_path, monkeypatch):
    # The scores' own settings are tested in test_pruning_scores.py; here, fewer is enough.
    monkeypatch.setattr(scores, "SYNFLOW_ROUNDS", 3)
    monkeypatch.setattr(scores, "GRASP_SAMPLES_PER_CLASS", 1)
    model_dir = str(tmp_path / "run")
    config = _config(sparsity, epochs=1)
    model = train.train(config, model_dir=model_dir, steps_per_epoch=1, verbose=0)
    layer_masks = masked.masks(model)
    assert sum(int(m.sum()) for m in layer_masks.values()) == budget.target(config)
    # Pruned weights stay where the mask put them, whatever the optimizer did to them.
    baked = masked.bake(model)
    for name, mask in layer_masks.items():
        assert np.all(baked.get_layer(name).get_weights()[0][~mask] == 0)

    # Resuming restores the mask from the checkpoint instead of scoring again.
    resumed = train.train(_config(sparsity, epochs=2), model_dir=model_dir, steps_per_epoch=1,
                          verbose=0)
    for name, mask in masked.masks(resumed).items():
        np.testing.assert_array_equal(mask, layer_masks[name])
    assert model_dir_lib.latest_checkpoint(model_dir).endswith("epoch-2")

    result = evaluate.evaluate(model_dir)
    assert result["live_params"] == budget.target(config) + 3 * 3 * 3 * 32 + 128 * 10
    assert result["epoch"] == 2

    info = export.export(model_dir, str(tmp_path / "serving" / "digits"))
    assert info["live_params"] == result["live_params"]
    saved = tf.train.list_variables(os.path.join(info["path"], "variables", "variables"))
    assert saved and not any("mask" in name for name, _ in saved)

    output = str(tmp_path / "model.tflite")
    convert_tflite.convert(model_dir, output)
    interpreter = litert_interpreter.Interpreter(model_path=output)
    interpreter.allocate_tensors()
    (inputs,) = interpreter.get_input_details()
    assert tuple(inputs["shape"]) == (1, 32, 32, 3)
