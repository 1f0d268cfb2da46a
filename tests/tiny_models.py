"""Narrow configurations of every registry model, for fast CPU tests.

Models with a long skip are built with ``residual_init=False``: their default initialisation is the
identity, which would make tests of the network's function (shapes, batches, devices) vacuous.
"""

TINY = {
    "aligncr": dict(features=8, growth=4, convs_per_block=2, blocks=2, num_heads=2, war_blocks=1, head_channels=16,
                    deformable_groups=2, residual_init=False),
    "dsen2cr": dict(features=8, blocks=2, residual_init=False),
    "glfcr": dict(features=8, growth=4, layers_per_block=2, blocks=2, num_heads=2, head_channels=16,
                  residual_init=False),
    "mcgan": dict(base_channels=4),
    "spagan": dict(channels=8),
    "saroptcgan": dict(base_channels=4),
}
TINY["aligncr_wo_sar"] = TINY["aligncr_wo_align"] = TINY["aligncr"]
