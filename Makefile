# glide-rs: `make serve` serves the web app on http://127.0.0.1:8080, `make test` runs every test.
# Both install what they need first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup serve web test test-rust test-browser lint bench

setup:
	bash scripts/setup.sh

web: setup
	bash scripts/build-web.sh

serve: setup
	bash scripts/build-web.sh serve

lint: setup
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test-rust: setup
	cargo test --workspace

test-browser: web
	cargo build -p glide-cli
	node --test tests/browser.test.mjs

test: lint test-rust test-browser

bench: setup
	cargo run --release -p glide-cli -- bench --preset tiny --steps 5
	cargo run --release -p glide-cli -- bench --preset base --steps 2
