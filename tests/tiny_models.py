"""Narrow configurations of every registry model, for fast CPU tests."""

TINY = {
    "aligncr": dict(features=8, growth=4, convs_per_block=2, blocks=2, num_heads=2, war_blocks=1, head_channels=16,
                    deformable_groups=2),
    "dsen2cr": dict(features=8, blocks=2),
    "glfcr": dict(features=8, growth=4, layers_per_block=2, blocks=2, num_heads=2, head_channels=16),
    "mcgan": dict(base_channels=4),
    "spagan": dict(channels=8),
    "saroptcgan": dict(base_channels=4),
}
TINY["aligncr_wo_sar"] = TINY["aligncr_wo_align"] = TINY["aligncr"]
