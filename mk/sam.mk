# SAM template checks, included by the Makefile. Everything here runs offline except the
# PyPI downloads of `sam-setup` and of `sam build` (the layer's requirements).
#
#   make sam-setup       create .venv-sam (SAM CLI, cfn-lint) and its nested checkov venv
#   make template-check  sam validate (+ --lint), cfn-lint, checkov, sam build
#
# The venvs are made by what needs them: `sam-cli-setup` (SAM CLI + cfn-lint: sam build,
# validate, cfn-lint; what `make build` needs) and `checkov-setup` (only the checkov scan,
# so `make build` never installs checkov). `sam-setup` makes both (what the template tests
# and `make test` need).
#
# Expects from the Makefile: SHELL/.SHELLFLAGS (bash, -eu -o pipefail), SAM_VENV, SAM_STAMP,
# PIP_FLAGS and the exported AWS_DEFAULT_REGION. Defaults below keep it usable on its own.

SAM_VENV   ?= .venv-sam
SAM_STAMP  ?= $(SAM_VENV)/.installed
PIP_FLAGS  ?= --disable-pip-version-check --no-input
SAM_BIN    := $(SAM_VENV)/bin
# checkov pins an exact boto3 that conflicts with SAM's exact pin: it gets a venv of its own,
# nested in .venv-sam so that one `rm -rf .venv-sam` (make clean) removes both.
CHECKOV_VENV := $(SAM_VENV)/checkov
CHECKOV_BIN  := $(CHECKOV_VENV)/bin
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
# Shell snippet: $$quiet is --quiet unless stdout is a terminal (there pip shows what it
# downloads and installs, with its progress bars; CI logs and pipes stay quiet).
PIP_QUIET_UNLESS_TTY ?= if [ -t 1 ]; then quiet=; else quiet=--quiet; fi
TEMPLATE   := template.yaml
SAM_BUILD_DIR := .aws-sam/build
export AWS_DEFAULT_REGION ?= eu-west-1

# SAM must never pick up real credentials or phone home: validation is offline by design.
SAM_ENV := env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
	AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
	SAM_CLI_TELEMETRY=0 SAM_CLI_CONTACT_SURVEY=0 BANDIT_DISABLE_UPDATE_CHECK=1

.PHONY: sam-setup sam-cli-setup checkov-setup template-check sam-validate sam-lint cfn-lint checkov \
	sam-build sam-compile

sam-setup: sam-cli-setup checkov-setup ## create .venv-sam (SAM CLI, cfn-lint) and its checkov venv with Python 3.13 (idempotent)

sam-cli-setup: $(SAM_STAMP)

checkov-setup: $(CHECKOV_STAMP)

$(SAM_STAMP): requirements-sam.txt scripts/find-python313
	@py313="$$(scripts/find-python313)"; \
	if [ ! -x $(SAM_BIN)/python ] || ! $(SAM_BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then \
	  echo "creating $(SAM_VENV) with $$py313"; rm -rf $(SAM_VENV); "$$py313" -m venv $(SAM_VENV); \
	fi
	@echo "installing SAM CLI and cfn-lint into $(SAM_VENV) (first run: about 1 minute)..."
	@start=$$SECONDS; $(PIP_QUIET_UNLESS_TTY); \
	$(SAM_BIN)/pip install $(PIP_FLAGS) $$quiet -r requirements-sam.txt 2> >(grep -v "is ignored: it is neither" >&2); \
	echo "$(SAM_VENV) ready in $$((SECONDS - start)) s"
	@touch $@

# Nested in .venv-sam (made first): recreating .venv-sam removes it, and its stamp, too.
$(CHECKOV_STAMP): $(SAM_STAMP) requirements-checkov.txt
	@py313="$$(scripts/find-python313)"; \
	if [ ! -x $(CHECKOV_BIN)/python ]; then "$$py313" -m venv $(CHECKOV_VENV); fi
	@echo "installing checkov into $(CHECKOV_VENV) (first run: about 1 minute)..."
	@start=$$SECONDS; $(PIP_QUIET_UNLESS_TTY); \
	$(CHECKOV_BIN)/pip install $(PIP_FLAGS) $$quiet -r requirements-checkov.txt 2> >(grep -v "is ignored: it is neither" >&2); \
	echo "$(CHECKOV_VENV) ready in $$((SECONDS - start)) s"
	@touch $@

# Prerequisites run in this order (make is serial unless -j).
template-check: sam-validate sam-lint cfn-lint checkov sam-build ## validate, lint and security-scan template.yaml, then sam build (no container)

sam-validate: sam-cli-setup
	$(SAM_ENV) $(SAM_BIN)/sam validate --template-file $(TEMPLATE) --region $(AWS_DEFAULT_REGION)

sam-lint: sam-cli-setup
	$(SAM_ENV) $(SAM_BIN)/sam validate --lint --template-file $(TEMPLATE) --region $(AWS_DEFAULT_REGION)

# Warnings fail too (cfn-lint exits 4 on a warning, 2 on an error; informational findings are
# not in its default set).
cfn-lint: sam-cli-setup
	$(SAM_ENV) $(SAM_BIN)/cfn-lint --regions $(AWS_DEFAULT_REGION) -- $(TEMPLATE)

# Every skipped check is suppressed inside template.yaml (resource Metadata.checkov.skip) with
# a written reason; no skips on the command line.
checkov: checkov-setup
	$(SAM_ENV) $(CHECKOV_BIN)/checkov --quiet --compact --framework cloudformation \
	  --skip-download --file $(TEMPLATE)

# Without a container; SAM looks for `python3.13` on PATH, so the interpreter that
# scripts/find-python313 prints goes first. Only the layer's requirements come from PyPI.
sam-build: sam-cli-setup
	@py313="$$(scripts/find-python313)"; \
	PATH="$$(dirname "$$py313"):$$PATH" $(SAM_ENV) $(SAM_BIN)/sam build --template-file $(TEMPLATE) \
	  --build-dir $(SAM_BUILD_DIR) --parallel --cached --cache-dir .aws-sam/cache
	$(MAKE) --no-print-directory sam-compile

# Lambda's /opt is read-only: a layer without .pyc files recompiles every module on each cold
# start (the bench measured ~2.5x slower imports). unchecked-hash .pyc files stay valid inside
# the zip, whatever the files' timestamps become; -j0 uses every core.
sam-compile:
	@py313="$$(scripts/find-python313)"; \
	for dir in $(SAM_BUILD_DIR)/*/python $(SAM_BUILD_DIR)/*Function; do \
	  [ -d "$$dir" ] && "$$py313" -m compileall -q -j0 --invalidation-mode unchecked-hash "$$dir"; \
	done; true
