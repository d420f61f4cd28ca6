"""The paper's published top-1 of the runs that `ssc_tf.compare` reproduces.

Data only, no TensorFlow: `TOP1` maps (packaged config name, `--sparsity` method) to the
top-1 accuracy, in percent, that the paper reports for that row; `top1` looks one up.

The numbers are the SSC rows of the supplement's ResNet-32 tables for CIFAR-10 and CIFAR-100
(the 10 / 5 / 2 % tickets) and of its sensitivity study (CIFAR-100 ResNet-32, rows a-f);
docs/supplement.md lists them beside each config's (g, p). The paper gives no per-row top-1
for its VGG-19, Tiny-ImageNet or ImageNet rows, nor for the baselines on ssc_tf's configs, so
those have none here.

Example:

>>> top1("cifar10_resnet32_10pct", "ssc")
93.3
>>> top1("cifar10_resnet32_10pct", "snip") is None
True
"""

SOURCE = (
    "Verma et al., \"Structured Sparse Convolutions\", WACV 2023, supplementary material, "
    "ResNet-32 tables (CIFAR-10, CIFAR-100) and sensitivity study"
)

TOP1 = {
    ("cifar10_resnet32_10pct", "ssc"): 93.3,
    ("cifar10_resnet32_5pct", "ssc"): 91.7,
    ("cifar10_resnet32_2pct", "ssc"): 88.4,
    ("cifar100_resnet32_10pct", "ssc"): 71.1,
    ("cifar100_resnet32_5pct", "ssc"): 67.3,
    ("cifar100_resnet32_2pct", "ssc"): 63.0,
    ("cifar100_resnet32_ablation_a", "ssc"): 69.95,
    ("cifar100_resnet32_ablation_b", "ssc"): 69.97,
    ("cifar100_resnet32_ablation_c", "ssc"): 70.31,
    ("cifar100_resnet32_ablation_d", "ssc"): 69.85,
    ("cifar100_resnet32_ablation_e", "ssc"): 70.69,
    ("cifar100_resnet32_ablation_f", "ssc"): 69.45,
}


def top1(config, method):
    """The published top-1 (percent) of `config` trained with `method`, or None.

    Args:
        config: str, a packaged config's name (`ssc_tf.flagfile.names()`).
        method: str, one of `ssc_tf.pruning.METHODS`.
    """
    return TOP1.get((config, method))
