# glide-rs: `make serve` serves the web app on http://127.0.0.1:8080, `make test` runs every test.
# Both install what they need first (scripts/setup.sh is idempotent).
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: setup serve web test test-rust test-browser lint bench data train-smoke finetune-inpaint eval-inpaint distill eval-distill bench-browser

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

# The captioned emoji dataset (WebDataset shards) from the npm packages setup installs.
data: setup
	cargo run --release -p glide-cli -- data emoji --out data/emoji

# The smoke config on a small slice of the data (a few minutes on a CPU).
train-smoke: setup
	cargo run --release -p glide-cli -- data emoji --limit 40 --out data/emoji-smoke
	cargo run --release -p glide-cli -- train --config configs/smoke.json

bench: setup
	cargo run --release -p glide-cli -- bench --preset tiny --steps 5
	cargo run --release -p glide-cli -- bench --preset base --steps 2
	cargo run --release -p glide-cli -- data emoji --limit 40 --out data/emoji-smoke
	cargo run --release -p glide-cli -- bench-train --config configs/smoke.json --steps 5
	cargo run --release -p glide-cli -- bench-train --config configs/emoji32-cpu.json --steps 3 --data data/emoji-smoke

# The bundled inpainting model: the base model fine-tuned with mixed masks (40 min on a CPU).
finetune-inpaint: setup
	cargo run --release -p glide-cli -- finetune-inpaint --from www/models/base.safetensors --config configs/inpaint-emoji32-cpu.json

# Inpainting model vs the replacement trick on held-out images and masks (the model card's table).
eval-inpaint: setup
	cargo run --release -p glide-cli -- eval-inpaint --n 32 --steps 25 --out docs/samples/inpaint-compare.png

# The web page's default model: guidance, progressive distillation 64 → 4, then the teacher's chains.
distill: setup
	bash scripts/distill.sh

# The distillation table: students vs the teacher's own DDIM, against 100 guided teacher steps.
eval-distill: setup
	cargo run --release -p glide-cli -- eval-distill --student www/models/student.safetensors runs/distill/student-8.safetensors runs/distill/steps-4/ema.safetensors runs/distill/guidance/ema.safetensors --steps 64 --n 32 --out docs/samples/distill-compare.png

# Wall time per image in headless chromium, students vs teacher (after make web and make distill).
bench-browser: web
	node scripts/bench-browser.mjs 5
