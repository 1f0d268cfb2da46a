"""The whole benchmark in one command: train (or load) every method, evaluate each on the same split
with the image, NDVI and semantic metrics, measure complexity, and write every table and figure.

A benchmark configuration (``configs/benchmark.yaml``)::

    out: runs/benchmark                  # default output folder (--out overrides)
    data: {root, split: test, crop: null, synth: null}   # synth: {train, test, seed, ...} makes synthetic data if absent
    overrides: [...]                     # applied to every training configuration (e.g. data.root=...)
    seeds: [0, 1, 2]                     # optional: train every method once per seed (mean ± std in every table)
    methods:                             # in table order
      - {name: Cloudy, kind: cloudy}     # the cloudy input itself; kind mean: the constant mean fill
      - {name: Align-CR, config: configs/aligncr.yaml, overrides: [...], checkpoint: null, seeds: null}
    segmentation: {config: configs/segmentation.yaml, overrides: [...], checkpoint: null}
    complexity: {size: 160, repeats: 3, device: cpu}
    evaluation: {batch_size: 4, device: auto, figure_count: 4, sar_mode: nearest}

On SEN12MS-CR (``configs/benchmark_sen12mscr.yaml``) the data section names the dataset and its options, and a
``published`` section lists numbers to show beside ours (not run here); there is no segmentation section (no
land cover, so no semantic or NDVI step)::

    data: {dataset: sen12mscr, root, split: test, crop: null, layout: null, reference_compatible: false,
           cloud_masks: s2cloudless, mask_cache: null, bands: all,
           synth: {size, rois_per_season, patches_per_roi, seed, ...}}   # m3rcr.data.synthetic.sen12mscr
    published:
      - {method: DSen2-CR (ISPRS 2020), MAE: 0.0313, SAM: 9.472, PSNR: 27.76, SSIM: 0.874, source: ...}

Its data options reach every training (as overrides after ``data.root``) and every evaluation; each trained
method is scored with the preprocessing and bands its checkpoint records (DSen2-CR: ``resnet``), on reflectance,
so that the rows compare.

The output folder::

    OUT/runs/<method>/seed<k>/ ...    training runs, one per seed (resumed if interrupted)
    OUT/eval/<method>/seed<k>/ ...    m3rcr evaluate folders, with per-image metrics.csv and predictions/*.tif
                                      (OUT/eval/<method>/ for the cloudy floor and methods given as a checkpoint)
    OUT/semantic/ ...                 the semantic evaluation
    OUT/complexity/<method>.json
    OUT/report/                       report.md, results.json, every table (.md, .csv) and figure
    OUT/benchmark_state.json          finished steps: an interrupted benchmark resumes without redoing them

Without ``seeds`` a method is trained once, with the seed of its training configuration. Each step
prints its time and an estimate of the time left (from the steps of the same kind already timed).
"""

from m3rcr.benchmark.config import (
    STATE_FILE,
    benchmark_inputs,
    fingerprint,
    load_benchmark_config,
    prepare_out,
    semantic_source,
    slug,
    step_name,
)
from m3rcr.benchmark.runner import Benchmark

__all__ = ["STATE_FILE", "Benchmark", "benchmark_inputs", "fingerprint", "load_benchmark_config", "prepare_out",
           "semantic_source", "slug", "step_name"]
