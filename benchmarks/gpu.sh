#!/usr/bin/env bash
# Every GPU measurement of the fast-path issue in one command, on a CUDA machine with the repo's
# .venv (or any env with unlearn_guard installed): rows are appended to benchmarks/RESULTS.md.
#   bash benchmarks/gpu.sh            # about 10-20 minutes on one H100
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
py="${PYTHON:-../.venv/bin/python}"
"$py" kernel_bandwidth.py --batches 1,16,64,256 --autograd-max-batch 16
"$py" probe_throughput.py --model world --images 64 --presets mofc,fast --reference-images 4 --compile
"$py" probe_throughput.py --model sd14-shaped --images 8 --presets mofc,fast --reference-images 2 --compile
"$py" probe_throughput.py --model sd14-shaped --images 16 --presets fast --skip-reference-style --batch-size 16
# SDXL (issue 25): SDXL base's architecture at 1024 px (random weights), batched and fused + bf16.
"$py" probe_throughput.py --model sdxl-shaped --images 4 --presets fast --skip-reference-style --batch-size 4
"$py" probe_presets.py --model sd14-shaped --device cuda --dtype bfloat16 --images 16 --batch-sizes 4,8,16
# UnlearnDiffAtk (issue 24): seconds per prompt, batched vs batch 1, extrapolated to the 142-prompt nudity set.
"$py" adversarial_prompt_speed.py --model sd14-shaped --device cuda --dtype bfloat16 --prompts 8 --batch-size 8 --timesteps 10,510 --modes batched,batch1
# Data-parallel probing (issue 14): 1, 2, 4, ... processes, one GPU each, up to the GPUs present.
"$py" distributed_scaling.py --device cuda --dtype bfloat16 --model sd14-shaped --images 64 --world-sizes auto --repeats 3
