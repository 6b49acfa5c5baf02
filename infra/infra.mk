# Lambda build and AWS CDK targets. Included by the top-level Makefile
# (`include infra/infra.mk`); every path below is absolute, so it works from
# whatever directory make runs in.
#
#   make install-lambda        cargo-lambda + zig (from PyPI) and the arm64 Rust target
#   make build                 cargo lambda build of both functions -> target/lambda/*/bootstrap.zip
#   make synth   [STAGE=dev]   offline cdk synth (no AWS credentials needed)
#   make deploy  [STAGE=dev]   build, then cdk deploy (needs AWS credentials)
#   make infra-install         npm ci in infra/
#   make infra-test            offline: tsc, jest, cdk synth against stand-in assets, cfn-lint,
#                              and scripts/backfill.sh against a stand-in aws CLI
#
# Variables: STAGE (dev), ARCH (arm64 | x86_64), CDK_CONTEXT (extra "-c key=value"
# flags, e.g. the DB secret ARN and VPC ids), CDK_DEPLOY_FLAGS (e.g.
# --require-approval never), LAMBDA_ASSETS_DIR (target/lambda), PYTHON (python3).

INFRA_DIR := $(abspath $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST)))))
INFRA_REPO_ROOT := $(abspath $(INFRA_DIR)/..)

STAGE ?= dev
ARCH ?= arm64
PYTHON ?= python3
CDK_CONTEXT ?=
CDK_DEPLOY_FLAGS ?=
LAMBDA_ASSETS_DIR ?= $(INFRA_REPO_ROOT)/target/lambda
LAMBDA_PACKAGES := link-fetcher link-subscription-handler

ifeq ($(ARCH),arm64)
CARGO_LAMBDA_ARCH := --arm64
else ifeq ($(ARCH),x86_64)
CARGO_LAMBDA_ARCH := --x86-64
else
$(error ARCH must be arm64 or x86_64, not "$(ARCH)")
endif

INFRA_NODE_MODULES := $(INFRA_DIR)/node_modules/.package-lock.json
INFRA_BIN := $(INFRA_DIR)/node_modules/.bin
# No telemetry and no notices: the CLI would otherwise call out to AWS endpoints.
INFRA_CDK := CDK_DISABLE_CLI_TELEMETRY=true $(INFRA_BIN)/cdk --no-notices
# Offline synth: no credentials (so nothing is looked up), no instance metadata
# probing, and a fixed region unless the caller chose one.
INFRA_OFFLINE := env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
	AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
	AWS_REGION=$(or $(AWS_REGION),$(AWS_DEFAULT_REGION),us-west-2)
INFRA_STAGE_CONTEXT = -c stage=$(STAGE) -c architecture=$(ARCH) -c assetsDir=$(abspath $(LAMBDA_ASSETS_DIR))

# cfn-lint through the interpreter (its console script may not be on PATH
# right after a pip install, e.g. behind pyenv shims).
INFRA_CFN_LINT := $(PYTHON) -c 'import sys; from cfnlint.runner import main; sys.argv[0] = "cfn-lint"; sys.exit(main())'

# What `make infra-test` synthesizes and lints: stand-in assets, made-up ids.
INFRA_TEST_OUT := $(INFRA_DIR)/cdk.out.test
INFRA_TEST_CONTEXT := -c assetsDir=$(INFRA_DIR)/test/fixtures/assets \
	-c dbSecretArn=arn:aws:secretsmanager:us-west-2:123456789012:secret:hls-s2-link-fetcher-db-AbC123
INFRA_TEST_DROP_IN_CONTEXT := -c stage=prod \
	-c toDownloadQueueArn=arn:aws:sqs:us-west-2:123456789012:hls-s2-downloader-serverless-prod-to-download \
	-c vpcId=vpc-0123abcd -c subnetIds=subnet-0a1b2c3d,subnet-0b2c3d4e -c securityGroupId=sg-0abc1234 \
	-c scheduleEnabled=false -c architecture=x86_64

.PHONY: install-lambda build lambda-build synth infra-synth deploy infra-deploy infra-install infra-test

# `build`, `synth` and `deploy` only name prerequisites, so another `build:` rule
# with a recipe in the including Makefile still works alongside these.
build: lambda-build
synth: infra-synth
deploy: infra-deploy

install-lambda:
	$(PYTHON) -m pip install cargo-lambda ziglang
	-command -v pyenv >/dev/null 2>&1 && pyenv rehash
	rustup target add aarch64-unknown-linux-gnu

lambda-build:
	cd $(INFRA_REPO_ROOT) && cargo lambda build --release $(CARGO_LAMBDA_ARCH) --output-format zip \
		$(addprefix -p ,$(LAMBDA_PACKAGES))

$(INFRA_NODE_MODULES): $(INFRA_DIR)/package.json $(INFRA_DIR)/package-lock.json
	cd $(INFRA_DIR) && npm ci --no-audit --no-fund

infra-install:
	cd $(INFRA_DIR) && npm ci --no-audit --no-fund

infra-synth: $(INFRA_NODE_MODULES)
	cd $(INFRA_DIR) && $(INFRA_OFFLINE) $(INFRA_CDK) synth --quiet $(INFRA_STAGE_CONTEXT) $(CDK_CONTEXT)

infra-deploy: lambda-build $(INFRA_NODE_MODULES)
	cd $(INFRA_DIR) && $(INFRA_BIN)/tsc --noEmit -p .
	cd $(INFRA_DIR) && $(INFRA_CDK) deploy $(INFRA_STAGE_CONTEXT) $(CDK_CONTEXT) $(CDK_DEPLOY_FLAGS)

infra-test: $(INFRA_NODE_MODULES)
	rm -rf $(INFRA_TEST_OUT) && mkdir -p $(INFRA_TEST_OUT)
	cd $(INFRA_DIR) && $(INFRA_BIN)/tsc --noEmit -p .
	cd $(INFRA_DIR) && $(INFRA_BIN)/jest --ci --json --outputFile=$(INFRA_TEST_OUT)/jest.json
	$(PYTHON) $(INFRA_REPO_ROOT)/scripts/backfill_test.py
	cd $(INFRA_DIR) && $(INFRA_OFFLINE) $(INFRA_CDK) synth --quiet -o $(INFRA_TEST_OUT)/fresh $(INFRA_TEST_CONTEXT)
	cd $(INFRA_DIR) && $(INFRA_OFFLINE) $(INFRA_CDK) synth --quiet -o $(INFRA_TEST_OUT)/drop-in \
		$(INFRA_TEST_CONTEXT) $(INFRA_TEST_DROP_IN_CONTEXT)
	$(PYTHON) -c 'import cfnlint' 2>/dev/null || $(PYTHON) -m pip install --quiet 'cfn-lint>=1.51,<2'
	cd $(INFRA_DIR) && $(INFRA_CFN_LINT) --config-file .cfnlintrc.yaml -- $(INFRA_TEST_OUT)/*/*.template.json
	@echo "cfn-lint: no findings in $$(ls $(INFRA_TEST_OUT)/*/*.template.json | wc -l) templates"
	@node -e 'const r = require("$(INFRA_TEST_OUT)/jest.json"); console.log(`infra: $${r.numPassedTests} passed, $${r.numFailedTests} failed`)'
