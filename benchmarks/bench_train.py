"""Training-step throughput, side by side: fp32 vs bf16 autocast, with vs without gradient checkpointing, for the
synthetic_tiny and coca_ViT-B-32 configs; then the fraction of step time spent waiting for data (2 workers).

    python benchmarks/bench_train.py [--steps 5] [--b32-batch 8]

Peak memory is the growth of the process's peak RSS during each setting's steps (CPU), measured in a fresh
process per setting so one setting's peak does not hide another's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SETTING = r"""
import json, resource, sys, time, contextlib, torch
from coca_video import create_model
from coca_video.model.loss import CoCaLoss
name, batch, steps, precision, ckpt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
torch.manual_seed(0)
model = create_model(name).train()
model.set_grad_checkpointing(ckpt)
loss_fn = CoCaLoss(model.cfg.text.pad_id)
size, ctx = model.cfg.vision.image_size, model.cfg.text.context_length
images = torch.randn(batch, 3, size, size)
text = torch.randint(3, min(model.cfg.text.vocab_size, 400), (batch, ctx))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
def step():
    with autocast:
        loss = loss_fn(model(images, text))["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
step()  # warm-up (allocations, kernels)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = peak()
start = time.perf_counter()
for _ in range(steps):
    step()
seconds = time.perf_counter() - start
print(json.dumps({"samples_per_s": batch * steps / seconds, "peak_growth_mb": peak() - before}))
"""

DATA_WAIT = r"""
import json, sys, time, torch
from coca_video import create_model
from coca_video.data.image_text import ImageTextDataConfig, build_loader
from coca_video.model import get_tokenizer
from coca_video.model.loss import CoCaLoss
from coca_video.transforms import image_transform
workers, steps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = create_model("default").train()
loss_fn = CoCaLoss(model.cfg.text.pad_id)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
loader = build_loader(ImageTextDataConfig(kind="synthetic", workers=workers), image_transform(model, train=True),
                      get_tokenizer("default"), batch, 0, 1, 0, 0, model.cfg.vision.image_size)
batches = iter(loader)
next(batches)  # workers started, first batch ready
wait = compute = 0.0
for _ in range(steps):
    t0 = time.perf_counter()
    b = next(batches)
    t1 = time.perf_counter()
    loss = loss_fn(model(b["images"], b["text"]))["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    wait, compute = wait + t1 - t0, compute + time.perf_counter() - t1
print(json.dumps({"wait_fraction": wait / (wait + compute), "samples_per_s": batch * steps / (wait + compute)}))
"""


def run(code: str, *args) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tiny-batch", type=int, default=128)
    parser.add_argument("--b32-batch", type=int, default=8)
    parser.add_argument("--data-steps", type=int, default=30)
    args = parser.parse_args()
    for name, batch in (("synthetic_tiny", args.tiny_batch), ("coca_ViT-B-32", args.b32_batch)):
        print(f"{name} (batch {batch}, {args.steps} steps)")
        base = None
        for precision in ("fp32", "bf16"):
            for ckpt in (False, True):
                result = run(SETTING, name, batch, args.steps, precision, int(ckpt))
                base = base or result
                print(f"  {precision} checkpointing={'on ' if ckpt else 'off'}  {result['samples_per_s']:8.1f} "
                      f"samples/s ({result['samples_per_s'] / base['samples_per_s']:.2f}x)  "
                      f"peak +{result['peak_growth_mb']:.0f} MB "
                      f"({result['peak_growth_mb'] / max(base['peak_growth_mb'], 1):.2f}x)")
    started = time.perf_counter()
    result = run(DATA_WAIT, 2, args.data_steps, args.tiny_batch)
    print(f"default model on the synthetic stream, 2 workers: {100 * result['wait_fraction']:.1f}% of step time "
          f"waiting for data ({result['samples_per_s']:.0f} samples/s; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
