# Every target creates .venv on first use and installs the package editable with its dev extra.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= tiny
# Every notebook in the repository, outside the venv and the build folder.
NOTEBOOKS = $(shell find . -name '*.ipynb' -not -path './$(VENV)/*' -not -path './_build/*' \
              -not -path '*/.ipynb_checkpoints/*' | sort)

.PHONY: test book lab bench lint refresh guards colab release clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

## make test: unit tests and every notebook under nbval, in the tiny profile
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	DGM_PROFILE=tiny MPLBACKEND=Agg $(PY) -m pytest tests $(NOTEBOOKS) --ignore=tests/benchmarks \
	    --nbval-lax --nbval-current-env --durations=0 -q

## make book: execute every notebook in PROFILE (tiny|cpu|gpu) and render _build/PROFILE/html
book: $(VENV)/.installed
	$(PY) -m utils.book --profile $(PROFILE)

## make refresh: re-execute every notebook in the cpu profile and write the outputs back in place
refresh: $(VENV)/.installed
	$(PY) -m utils.book --profile cpu --in-place

## make guards: every notebook in tiny with fit cut to 2% of its steps; lists those that still pass
guards: $(VENV)/.installed
	MPLBACKEND=Agg $(PY) -m utils.guards --fraction 0.02

## make colab: write every notebook's Colab cell from the one template (pyproject's version and URL)
colab: $(VENV)/.installed
	$(PY) -m utils.colab

## make release VERSION=X.Y.Z: bump the version, rewrite the Colab cells, refresh the notebooks
## (cpu profile), run the tests, commit and tag vX.Y.Z; then push the branch and the tag
release:
	@test -n "$(VERSION)" || { echo "usage: make release VERSION=X.Y.Z"; exit 2; }
	@git diff --quiet && git diff --cached --quiet || { echo "commit or stash first"; exit 1; }
	@! git rev-parse -q --verify "refs/tags/v$(VERSION)" >/dev/null || \
	    { echo "tag v$(VERSION) exists"; exit 1; }
	$(MAKE) $(VENV)/.installed
	$(PY) -m utils.colab --set-version $(VERSION)
	$(MAKE) refresh
	$(MAKE) test
	git commit -qam "release v$(VERSION): version, Colab cells and notebooks refreshed"
	git tag -a "v$(VERSION)" -m "Deep Generative Models v$(VERSION)"
	@echo "tagged v$(VERSION); publish with: git push origin HEAD v$(VERSION)"

## make lab: Jupyter Lab on the repository
lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab

## make bench: the benchmarks in tests/benchmarks (each prints a ratio measured in one run)
bench: $(VENV)/.installed
	MPLBACKEND=Agg $(PY) -m pytest tests/benchmarks -q -s

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

clean:
	rm -rf _build
