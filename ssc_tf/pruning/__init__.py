"""The paper's baselines on ssc_tf's own pipeline: a network pruned to SSC's weight budget.

`--sparsity` (`ssc_tf.config`) names how a run is sparse; `METHODS` lists its values:

- `ssc` (the default): the SSC pattern of `--g` / `--p` (docs/pattern.md);
- `dense`: the dense twin;
- `narrow`: the dense twin made narrower, every width scaled by one multiplier so that it
  keeps about the same number of weights (`ssc_tf.pruning.budget.width_multiplier`): a
  network that is genuinely smaller and faster, the baseline a practitioner would try first;
- `random`, `snip`, `grasp`, `synflow` (`MASK_METHODS`): a mask computed on the dense twin at
  initialization and then held fixed (`ssc_tf.pruning.scores`);
- `magnitude`: tfmot's gradual magnitude pruning during training
  (`ssc_tf.pruning.magnitude`, run in its own `tf_keras` process).

Every pruned run keeps the weights that the config's SSC pattern keeps, with the same rule:
the first convolution and the classifier stay dense, the other convolutions share the rest
(`ssc_tf.pruning.budget`); the narrow network keeps about that many in all. Masked layers
hold dense weights times a fixed 0/1 mask (`ssc_tf.models.masked`): they do all the dense work,
which is what SSC avoids; the narrow network does less, being genuinely smaller.

This module starts no TensorFlow.
"""

SSC = "ssc"
DENSE = "dense"
NARROW = "narrow"
RANDOM = "random"
SNIP = "snip"
GRASP = "grasp"
SYNFLOW = "synflow"
MAGNITUDE = "magnitude"

# Masks computed once, at initialization, on the dense twin.
MASK_METHODS = (RANDOM, SNIP, GRASP, SYNFLOW)
# Every `--sparsity`, in the order tables list them.
METHODS = (SSC, DENSE, NARROW) + MASK_METHODS + (MAGNITUDE,)
# The methods that train the dense twin's weights under a mask.
PRUNED_METHODS = MASK_METHODS + (MAGNITUDE,)
# The methods whose weight count follows the SSC pattern's, or --kept_fraction.
BUDGET_METHODS = (NARROW,) + PRUNED_METHODS
