#!/usr/bin/env bash
# On the GPU machine, from a checkout that carries .whl/ (made by `make gpu-bundle` where a registry is
# reachable): install the missing wheels offline into a scratch folder, then run the benchmark.
# The table goes to stdout and, when $OUT is set, to $OUT/gpu-bench.json. Arguments go to the benchmark
# (e.g. --steps 30, --presets full-t4 lora).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/dreambooth-bench-site}
WHEELS=${WHEELS:-.whl}
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "no wheels in $WHEELS/: run 'make gpu-bundle' where PyPI is reachable, and bring .whl/ along" >&2
    exit 2
fi
rm -rf "$SITE"
"$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" "${wheels[@]}"
export PYTHONPATH="$SITE:$PWD/trainer_image${PYTHONPATH:+:$PYTHONPATH}"
# diffusers 0.42 needs huggingface-hub >= 1.32; add the bundled one only when the machine's is too old.
probe='from diffusers import StableDiffusionPipeline, UNet2DConditionModel'
if ! "$PYTHON" -c "$probe" 2>/dev/null; then
    hub=("$WHEELS"/hub/*.whl)
    [ ${#hub[@]} -gt 0 ] && "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" "${hub[@]}"
    "$PYTHON" -c "$probe"
fi
exec "$PYTHON" -m dreambooth_trainer.bench "$@"
