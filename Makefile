# Two entry points: `make demo` (install, then run the main job) and `make test` (install with the
# test extras, then run the whole suite). Both create or update .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
M3RCR  := $(VENV)/bin/m3rcr
DEMO   ?= outputs/demo
SAMPLES ?= ../shared/data/m3rcr-samples
PIP_FLAGS ?= --quiet --disable-pip-version-check
# the demo's pretrained model (make demo-model reproduces it) and where make demo-model trains
DEMO_MODEL ?= models/demo
DEMO_MODEL_WORK ?= outputs/demo_model

.PHONY: demo demo-model test install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project metadata changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[s2cloudless]" > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(PY) -c "import m3rcr, torch, rasterio, lightning"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install $(PIP_FLAGS) -e ".[test]" > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(PY) -c "import m3rcr, torch, rasterio, lightning, pytest, skimage"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	rm -rf $(DEMO)/runs $(DEMO)/eval $(DEMO)/report $(DEMO)/scene $(DEMO)/samples $(DEMO)/real
	$(M3RCR) synth $(DEMO)/data --train 24 --test 8 --seed 0 --overwrite
	$(M3RCR) info --data $(DEMO)/data --split test --check
	$(M3RCR) show --data $(DEMO)/data --split test --index 0 1 2 3 --out $(DEMO)/samples
	$(M3RCR) show --data $(DEMO)/data --split test --index 0 --sar-mode geo --crop 160 --out $(DEMO)/samples/test_0_crop160_geo.png
	@if [ -d "$(SAMPLES)" ]; then \
	  $(M3RCR) show --data $(SAMPLES) --split train --all --out $(DEMO)/real && \
	  $(M3RCR) show --data $(SAMPLES) --split test --all --out $(DEMO)/real; \
	fi
	$(M3RCR) train --config configs/demo.yaml data.root=$(DEMO)/data --out $(DEMO)/runs/aligncr_small run.progress_bar=false
	$(M3RCR) evaluate --checkpoint $(DEMO)/runs/aligncr_small/checkpoints/best.ckpt --name "Align-CR (2 min)" \
	  --data $(DEMO)/data --split test --out $(DEMO)/eval/aligncr_small --save-predictions --device cpu --quiet
	$(M3RCR) evaluate --checkpoint $(DEMO_MODEL)/aligncr_demo.ckpt --name "Align-CR (pretrained)" \
	  --data $(DEMO)/data --split test --out $(DEMO)/eval/aligncr_pretrained --save-predictions --device cpu --quiet
	$(M3RCR) evaluate --method cloudy --name Cloudy --data $(DEMO)/data --split test --out $(DEMO)/eval/cloudy --quiet
	$(M3RCR) compare $(DEMO)/eval/cloudy $(DEMO)/eval/aligncr_small $(DEMO)/eval/aligncr_pretrained --out $(DEMO)/report
	$(M3RCR) synth-scene $(DEMO)/scene --height 1200 --width 1600 --sar-crs EPSG:4326 --seed 1 --overwrite
	$(M3RCR) predict --cloudy $(DEMO)/scene/cloudy.tif --sar $(DEMO)/scene/sar.tif --mask $(DEMO)/scene/cloudmask.tif \
	  --checkpoint $(DEMO_MODEL)/aligncr_demo.ckpt --out $(DEMO)/scene/cloud_removed.tif \
	  --preview $(DEMO)/scene/before_after.png --device cpu --quiet --overwrite
	@cat $(DEMO)/report/tables.md
	$(M3RCR) score-scene --result $(DEMO)/scene/cloud_removed.tif --cloudy $(DEMO)/scene/cloudy.tif \
	  --reference $(DEMO)/scene/cloudfree.tif --mask $(DEMO)/scene/cloudmask.tif --json $(DEMO)/scene/measures.json --strict
	@echo "demo outputs in $(DEMO)/ (report: $(DEMO)/report/, scene: $(DEMO)/scene/)"

# Retrain the demo's pretrained model from scratch (about 1.5 hours on 2 CPU cores; configs/demo_model.yaml,
# then a warm restart of the learning rate) and replace the copy in
# $(DEMO_MODEL): checkpoint, configuration, environment, training log and curves.
demo-model: install
	$(M3RCR) synth $(DEMO_MODEL_WORK)/data --train 240 --test 16 --seed 100 --overwrite
	rm -rf $(DEMO_MODEL_WORK)/run
	$(M3RCR) train --config configs/demo_model.yaml data.root=$(DEMO_MODEL_WORK)/data --out $(DEMO_MODEL_WORK)/run
	$(M3RCR) train --resume $(DEMO_MODEL_WORK)/run trainer.max_epochs=92 schedule.constant_epochs=62 schedule.step_epochs=6
	mkdir -p $(DEMO_MODEL)
	cp $(DEMO_MODEL_WORK)/run/checkpoints/best.ckpt $(DEMO_MODEL)/aligncr_demo.ckpt
	cp $(DEMO_MODEL_WORK)/run/config.yaml $(DEMO_MODEL_WORK)/run/environment.json $(DEMO_MODEL_WORK)/run/training_curves.png $(DEMO_MODEL)/
	cp $(DEMO_MODEL_WORK)/run/logs/csv/metrics.csv $(DEMO_MODEL)/training_log.csv

test: install-test
	$(PY) -m pytest -n 2 -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
