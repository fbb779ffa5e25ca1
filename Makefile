# corl — make targets. `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= checkpoints/Janus-Pro-1B
DATA ?= data/x2x_rft_22k
LOGDIR ?= runs

.PHONY: install test test-compat wheelhouse install-offline lint warm demo demo-t2i demo-mm2t stage1 stage2 pilot tensorboard bench spice clean

$(BIN)/corl: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/corl

install: $(BIN)/corl  ## create .venv and install corl (editable) with its test extras

test: install  ## the whole test suite (CPU, a few minutes)
	$(BIN)/ruff check corl tests benchmarks scripts
	$(BIN)/python -m pytest -q

# The lowest supported transformers (what clusters ship), beside the pinned newest: a renamed keyword in
# transformers must never again silently break decoding (pyproject.toml states the range).
TRANSFORMERS_LOWEST ?= 5.17.0
COMPAT := .venv-compat
COMPAT_TESTS = tests/modules/test_decoding.py tests/modules/test_policy.py tests/modules/test_logprobs.py \
	tests/modules/test_lora.py tests/modules/test_packing.py tests/test_versions.py \
	tests/deepseek tests/test_cli.py::test_demo_config_trains_and_logs_to_tensorboard

$(COMPAT)/bin/corl: pyproject.toml
	$(PY) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install --quiet --upgrade pip
	$(COMPAT)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(COMPAT)/bin/pip install --quiet -e ".[test]" "transformers==$(TRANSFORMERS_LOWEST)"
	touch $@

test-compat: $(COMPAT)/bin/corl  ## decoding, log-prob consistency, DeepSeek's layout and a demo step on the lowest supported transformers
	$(COMPAT)/bin/python -m pytest -q $(COMPAT_TESTS)

lint: install
	$(BIN)/ruff check corl tests benchmarks scripts

# The demo's seed: the warm start, the data order and every random draw (make demo SEED=1).
SEED ?= 0
DEMO_ARGS = --seed_everything $(SEED) --model.seed $(SEED) --data.seed $(SEED)

warm: install  ## build (once; cached in ~/.cache/corl) the warm-started tiny Janus the demo trains
	$(BIN)/corl warm --seed $(SEED)

# The demo's held-out scores: each stage-2 chain scores its own models (and one of the two it starts from)
# as soon as they exist, and the last command gathers them into one table, in the paper's order.
EVAL_ARGS = -c configs/demo/s1.yaml --rewards scene accuracy format --model.seed $(SEED)
DEMO_SCORES = $(LOGDIR)/demo_scores

# Each phase of the demo announces itself: its number, what it does, and the time since `make demo` started
# (the install included). The sub-makes of stage 2 inherit the start.
ifndef DEMO_START
DEMO_START := $(shell date +%s)
export DEMO_START
endif
phase = @t=$$(( $$(date +%s) - $(DEMO_START) )); printf '\n== demo %s at %d:%02d: %s\n' "$(1)" $$((t / 60)) $$((t % 60)) "$(2)"

demo: install  ## the whole chain on the warm-started tiny Janus and procedural data, on the CPU, then the table
	$(call phase,1/4,the warm-started tiny Janus (built once in ~3 min, then loaded from ~/.cache/corl))
	$(BIN)/corl warm --seed $(SEED)
	rm -rf checkpoints/demo exports/demo $(DEMO_SCORES)
	$(call phase,2/4,stage 1: unified RL on both tasks (configs/demo/s1.yaml))
	$(BIN)/corl fit -c configs/demo/s1.yaml $(DEMO_ARGS)
	$(call phase,3/4,stage 2: the T2I refinement (two processes) beside the MC then OE refinements and their merge)
	$(MAKE) --no-print-directory -j2 demo-t2i demo-mm2t
	$(call phase,4/4,the held-out table of every model and the image grid before / after the T2I refinement)
	$(BIN)/corl evaluate base=tiny-warm s1=checkpoints/demo/s1/last.ckpt s2_t2i=exports/demo/t2i \
		s2_mcq=checkpoints/demo/s2_mcq/last.ckpt s2_oe=checkpoints/demo/s2_oe/last.ckpt mm2t=exports/demo/mm2t $(EVAL_ARGS) \
		--scores $(DEMO_SCORES)/t2i.json $(DEMO_SCORES)/mm2t.json --json $(LOGDIR)/demo_eval.json
	$(BIN)/corl grid base=tiny-warm s1=checkpoints/demo/s1/last.ckpt s2_t2i=exports/demo/t2i -c configs/demo/s1.yaml \
		--model.seed $(SEED) --out $(LOGDIR)/demo_grid.png

# The demo's stage 2, two chains side by side from stage 1's weights. A tiny model's run keeps one core busy
# however many threads it may use, so the T2I run, the longer, is two processes (DDP over gloo, see
# configs/demo/s2_t2i.yaml) of one thread each beside the MC + OE chain's one: both cores stay busy until
# the T2I run ends. The MC + OE chain also scores stage 1's model and the warm base while the T2I run
# trains, and runs without a progress bar, so that the terminal shows one bar, the T2I run's.
demo-t2i:
	OMP_NUM_THREADS=1 $(BIN)/corl fit -c configs/demo/s2_t2i.yaml $(DEMO_ARGS)
	$(BIN)/corl export checkpoints/demo/s2_t2i/last.ckpt exports/demo/t2i
	$(BIN)/corl evaluate s2_t2i=exports/demo/t2i $(EVAL_ARGS) --json $(DEMO_SCORES)/t2i.json

demo-mm2t:
	OMP_NUM_THREADS=1 $(BIN)/corl fit -c configs/demo/s2_mcq.yaml $(DEMO_ARGS) $(QUIET_FIT)
	OMP_NUM_THREADS=1 $(BIN)/corl fit -c configs/demo/s2_oe.yaml $(DEMO_ARGS) $(QUIET_FIT)
	$(BIN)/corl merge checkpoints/demo/s2_mcq/last.ckpt checkpoints/demo/s2_oe/last.ckpt --method gaussian \
		--base checkpoints/demo/s1/last.ckpt --out exports/demo/mm2t
	OMP_NUM_THREADS=1 $(BIN)/corl evaluate base=tiny-warm s1=checkpoints/demo/s1/last.ckpt \
		s2_mcq=checkpoints/demo/s2_mcq/last.ckpt s2_oe=checkpoints/demo/s2_oe/last.ckpt mm2t=exports/demo/mm2t \
		$(EVAL_ARGS) --json $(DEMO_SCORES)/mm2t.json
QUIET_FIT = --trainer.enable_progress_bar false --trainer.enable_model_summary false

# More options for every `corl fit` of stage1/stage2, e.g. FIT_ARGS="-c configs/fsdp.yaml".
FIT_ARGS ?=

stage1: install  ## stage 1 with the paper's settings on real weights and data
	$(BIN)/corl fit -c configs/s1.yaml --model.model $(MODEL) --data.source $(DATA) $(FIT_ARGS)

S1_CKPT ?= checkpoints/s1/last.ckpt
DATA_T2I ?= data/x2x_rft_16k
DATA_MCQ ?= data/mcot_r1_mcq_66k
DATA_OE ?= data/mcot_r1_vqa_66k

stage2: install  ## the three refined runs from stage 1's final checkpoint, MC + OE merged as the paper does, both layouts
	$(BIN)/corl fit -c configs/s2_t2i.yaml --model.model $(MODEL) --model.init_from $(S1_CKPT) --data.source $(DATA_T2I) $(FIT_ARGS)
	$(BIN)/corl fit -c configs/s2_mcq.yaml --model.model $(MODEL) --model.init_from $(S1_CKPT) --data.source $(DATA_MCQ) $(FIT_ARGS)
	$(BIN)/corl fit -c configs/s2_oe.yaml --model.model $(MODEL) --model.init_from $(S1_CKPT) --data.source $(DATA_OE) $(FIT_ARGS)
	$(BIN)/corl merge checkpoints/s2_mcq/last.ckpt checkpoints/s2_oe/last.ckpt --method gaussian --base $(S1_CKPT) \
		--out exports/s2_mm2t
	$(BIN)/corl export checkpoints/s2_t2i/last.ckpt exports/s2_t2i
	$(BIN)/corl export exports/s2_mm2t exports/s2_mm2t_deepseek --format deepseek --dtype bfloat16  # VLMEvalKit
	$(BIN)/corl export exports/s2_t2i exports/s2_t2i_deepseek --format deepseek --dtype bfloat16

# The pilot study (paper §3.2): the four RL paradigms from Janus-Pro-1B on x2x_rft_16k with CLIP Score for images;
# RL-Merging is the two RL-Sep models merged with the paper's Gaussian merge, from the model they started from.
DATA_PILOT ?= data/x2x_rft_16k

pilot: install  ## the pilot study's paradigms: RL-Sep (both tasks), RL-Merging, RL-Cycle, RL-Unified
	$(BIN)/corl fit -c configs/pilot/sep_t2i.yaml --model.model $(MODEL) --data.source $(DATA_PILOT) $(FIT_ARGS)
	$(BIN)/corl fit -c configs/pilot/sep_mm2t.yaml --model.model $(MODEL) --data.source $(DATA_PILOT) $(FIT_ARGS)
	$(BIN)/corl merge checkpoints/pilot_sep_t2i/last.ckpt checkpoints/pilot_sep_mm2t/last.ckpt --method gaussian \
		--base $(MODEL) --out exports/pilot_merging
	$(BIN)/corl fit -c configs/pilot/cycle.yaml --model.model $(MODEL) --data.source $(DATA_PILOT) $(FIT_ARGS)
	$(BIN)/corl fit -c configs/pilot/unified.yaml --model.model $(MODEL) --data.source $(DATA_PILOT) $(FIT_ARGS)

# An air-gapped cluster: `make wheelhouse` here (online) gathers corl and its pure-Python dependencies beyond torch,
# torchvision and transformers; carry the folder over; `make install-offline WHEELS=DIR PY=python` there.
WHEELS ?= wheelhouse
WHEELHOUSE_LEAVE_OUT ?= pycocoevalcap  # the target has these or does without them (SPICE, CIDEr-D: 100 MB)

wheelhouse: install  ## corl and its pure-Python dependencies as wheels in WHEELS (WHEELHOUSE_LEAVE_OUT= to keep all)
	$(BIN)/python scripts/wheelhouse.py build $(WHEELS) --leave-out $(WHEELHOUSE_LEAVE_OUT)

install-offline:  ## install corl from WHEELS into the Python PY, without network (reports what is still missing)
	$(PY) scripts/wheelhouse.py install $(WHEELS)

tensorboard: install  ## watch runs
	$(BIN)/tensorboard --logdir $(LOGDIR)

clean:
	rm -rf $(LOGDIR) checkpoints/demo exports/demo .pytest_cache .ruff_cache

bench: install  ## rollout throughput against transformers' generate (BENCH_ARGS="--device cuda ...")
	$(BIN)/python benchmarks/rollout.py $(BENCH_ARGS)

spice: install  ## SPICE caption metric, once: CoreNLP 3.6.0 jars from Maven Central (SHA-1 checked) + the Java server
	$(BIN)/python -m corl.modules.rewards.spice setup
