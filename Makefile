# HLS Sentinel-2 link fetchers (Rust). `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help install lint format test bench soak fuzz

help:
	@echo "make install        moto_server and cfn-lint (PyPI), rustfmt/clippy, cargo-lambda, the infra npm packages"
	@echo "make test           every test against real Postgres (DATABASE_URL, or testcontainers) and moto SQS"
	@echo "make lint           cargo fmt --check and clippy -D warnings"
	@echo "make format         cargo fmt"
	@echo "make bench          benchmarks against Postgres and moto (see BENCHMARKS.md)"
	@echo "make soak           5 minutes of load while Postgres, the queue and the fetcher fail; checks the history (RELIABILITY.md; SOAK_ARGS=...)"
	@echo "make fuzz           the parsers' property tests with 100,000 inputs each (FUZZ_CASES=...)"
	@echo "make build          both functions for Lambda with cargo-lambda (ARCH=arm64|x86_64)"
	@echo "make synth          offline cdk synth (STAGE=dev)"
	@echo "make deploy         build and cdk deploy (STAGE=...)"
	@echo "make infra-test     CDK unit tests, offline synth, cfn-lint, scripts/backfill.sh tests"

install: install-lambda infra-install
	python3 -m pip install --quiet 'moto[server]' cfn-lint
	rustup component add rustfmt clippy

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

format:
	cargo fmt --all

test:
	scripts/test.sh

bench:
	scripts/bench.sh

soak:
	scripts/soak.sh $(SOAK_ARGS)

fuzz:
	scripts/fuzz.sh

include infra/infra.mk
