"""Times diffusers' WanPipeline generating one segment, for replica/benches/wan.rs to compare
against: same model directory, resolution, frames, steps and thread count. Prints JSON.

    .venv/bin/python scripts/bench_wan_diffusers.py MODEL_DIR WIDTH HEIGHT FRAMES STEPS THREADS RUNS
"""

import json
import statistics
import sys
import time

import torch
from diffusers import WanPipeline


def main() -> None:
    model, width, height, frames, steps, threads, runs = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    pipe = WanPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    times = []
    with torch.inference_mode():
        for i in range(int(runs) + 1):
            started = time.perf_counter()
            pipe(
                prompt="a red fox runs through a snowy forest at dawn",
                height=int(height),
                width=int(width),
                num_frames=int(frames),
                num_inference_steps=int(steps),
                guidance_scale=1.0,
                generator=torch.Generator().manual_seed(i),
                output_type="np",
            )
            if i > 0:  # the first run warms up
                times.append(time.perf_counter() - started)
    print(json.dumps({"median_s": statistics.median(times), "runs": times}))


if __name__ == "__main__":
    main()
