"""Inference precisions against fp32 on the same weights: the fidelity gates each must pass to be offered.

Gates (the default model on the synthetic world's held-out images; coca_ViT-B-32 with random weights from a fixed
seed): min cosine of image embeddings, zero-shot top-1 agreement >= 99% of fp32's predictions, greedy captions
identical on >= 95% of images."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import coca_video
from coca_video.data.synthetic import zero_shot_image_set
from coca_video.model import precision as precision_module
from coca_video.model.precision import (MIN_COSINE, CpuKind, apply_precision, auto_precision, cpu_kind,
                                        fastest_precision, int8_engine, precision_of)
from coca_video.zero_shot import class_embeddings

AVX2 = CpuKind("AVX2", native_bf16=False, vnni=False)  # a 2-core EPYC without AVX-512, as issue #24 measured it
AVX512_BF16 = CpuKind("AVX512", native_bf16=True, vnni=True)


@pytest.fixture(scope="module")
def default_model_and_images():
    model = coca_video.create_model("default")
    images, _, names = zero_shot_image_set(200, model.cfg.vision.image_size, seed=3, attribute="colour")
    return model, coca_video.image_transform(model).frames(images), names


TEMPLATES = [f"a {{}} {shape}" for shape in ("circle", "square", "triangle", "star")]


@pytest.fixture(scope="module")
def fp32_answers(default_model_and_images):
    """The fp32 model's embeddings, class embeddings and greedy captions, computed once for every precision."""
    model, images, names = default_model_and_images
    with torch.no_grad():
        classes = class_embeddings(model, coca_video.get_tokenizer("default"), names, TEMPLATES)
        return model.encode_image(images), classes, model.generate(images[:100], method="greedy", max_len=12)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16", "int8"])  # fp16 checked on the CPU: the same numbers a GPU
def test_default_model_passes_the_gates(default_model_and_images, fp32_answers, precision):
    model, images, names = default_model_and_images
    reference, classes, captions = fp32_answers
    quick = apply_precision(copy.deepcopy(model), precision)
    with torch.no_grad():
        ours = quick.encode_image(images).float()
        assert torch.nn.functional.cosine_similarity(ours, reference).min() >= MIN_COSINE[precision]
        classes_quick = class_embeddings(quick, coca_video.get_tokenizer("default"), names, TEMPLATES)
        agreement = ((reference @ classes.T).argmax(-1) == (ours @ classes_quick.T).argmax(-1)).float().mean()
        assert agreement >= 0.99
        same = (captions == quick.generate(images[:100], method="greedy", max_len=12)).all(-1).float().mean()
        assert same >= 0.95


@pytest.fixture(scope="module")
def vit_b32_and_reference():
    """The full-size coca_ViT-B-32 (random weights: built once, it takes seconds) and its fp32 image embeddings."""
    torch.manual_seed(0)
    model = coca_video.create_model("coca_ViT-B-32")
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, images, model.encode_image(images)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16", "int8"])
def test_coca_vit_b32_embeddings_stay_close(vit_b32_and_reference, precision):
    model, images, reference = vit_b32_and_reference
    with torch.no_grad():
        ours = apply_precision(copy.deepcopy(model), precision).encode_image(images).float()
    assert torch.nn.functional.cosine_similarity(ours, reference).min() >= MIN_COSINE[precision]


def test_int8_leaves_the_fp32_model_alone_and_bf16_casts_every_weight(default_model_and_images):
    model = default_model_and_images[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantised = apply_precision(model, "int8")
    assert quantised is not model and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    halved = apply_precision(copy.deepcopy(model), "bf16")
    assert {p.dtype for p in halved.parameters()} == {torch.bfloat16}


def test_score_runs_in_each_precision_and_records_it(tmp_path):
    import numpy as np
    import pyarrow.parquet as pq

    from coca_video.config import load_config
    from coca_video.tasks import score
    from coca_video.video import write_video

    rng = np.random.default_rng(0)
    for i in range(2):
        write_video(tmp_path / f"v{i}.mp4", rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), fps=4)
    embeddings = {}
    for precision in ("fp32", "bf16", "int8"):
        out = tmp_path / f"{precision}.parquet"
        score.run(load_config(score.ScoreConfig, None, [f"videos={tmp_path}", f"out={out}", "decode.num_frames=2",
                                                        "decode.workers=0", f"model.precision={precision}"]))
        sidecar = pq.read_table(score.embeddings_path(out))
        assert sidecar.schema.metadata[b"precision"] == precision.encode()
        embeddings[precision] = torch.tensor(sidecar.column("video_embedding").to_pylist())
    for precision in ("bf16", "int8"):
        cosine = torch.nn.functional.cosine_similarity(embeddings[precision], embeddings["fp32"])
        assert cosine.min() >= MIN_COSINE[precision]


def test_int8_cannot_train():
    from coca_video.config import ModelConfig
    from coca_video.errors import ConfigError
    from coca_video.runtime import load_model

    with pytest.raises(ConfigError, match="int8 is for inference only"):
        load_model(ModelConfig(precision="int8"), training=True)


def test_fp16_is_for_accelerators_and_inference():
    from coca_video.config import load_config
    from coca_video.errors import ConfigError
    from coca_video.tasks import score

    with pytest.raises(ConfigError, match="precision must be fp32, bf16 or int8 on the CPU"):
        load_config(score.ScoreConfig, None, ["model.precision=fp16"])  # default device: cpu
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="precision must be fp32, bf16 or int8 on the CPU"):
            load_config(score.ScoreConfig, None, ["model.precision=fp16", "model.device=auto"])


def test_compile_defaults_to_the_accelerator_path_only():
    """model.compile null: compiled for CUDA inference in bf16/fp16, nowhere else; true/false decide alone."""
    from types import SimpleNamespace

    from coca_video.runtime import compiles

    def cfg(device, precision, compile=None):
        return SimpleNamespace(device=device, precision=precision, compile=compile)

    assert compiles(cfg("cuda", "bf16")) and compiles(cfg("cuda:1", "fp16"))
    assert not compiles(cfg("cuda", "fp32")) and not compiles(cfg("cpu", "bf16")) and not compiles(cfg("mps", "fp16"))
    assert not compiles(cfg("cuda", "bf16"), training=True)
    assert compiles(cfg("cpu", "fp32", compile=True)) and not compiles(cfg("cuda", "bf16", compile=False))


def test_patch_linear_equals_the_patch_convolution_it_replaces():
    from coca_video.model.precision import PatchLinear

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 4, stride=4, bias=True)
    images = torch.randn(2, 3, 12, 16)
    assert PatchLinear.fits(conv) and not PatchLinear.fits(torch.nn.Conv2d(3, 8, 4, stride=2))
    with torch.no_grad():
        torch.testing.assert_close(PatchLinear(conv)(images), conv(images), rtol=1e-5, atol=1e-5)


def test_int8_packs_for_onednn_without_changing_the_global_engine(default_model_and_images):
    before = torch.backends.quantized.engine
    quantised = apply_precision(default_model_and_images[0], "int8")
    assert torch.backends.quantized.engine == before
    assert type(quantised.image_encoder.vit.patch_embed.proj).__name__ == "PatchLinear"
    assert quantised.frames_per_forward == 16 and default_model_and_images[0].frames_per_forward == 64


def test_auto_on_a_cpu_without_native_bf16_never_takes_bf16_and_trains_in_fp32(default_model_and_images):
    model = default_model_and_images[0]
    chosen_model, chosen = fastest_precision(model, kind=AVX2)
    assert chosen in ("fp32", "int8") and precision_of(chosen_model) == chosen
    assert auto_precision("cpu", training=True, kind=AVX2) == "fp32"
    assert auto_precision("cpu", training=True, kind=AVX512_BF16) == "bf16"
    assert int8_engine(AVX2) == "x86" and int8_engine(AVX512_BF16) == "onednn"


def test_auto_skips_a_precision_that_fails_its_gate(default_model_and_images, monkeypatch):
    model = default_model_and_images[0]
    monkeypatch.setitem(MIN_COSINE, "int8", 1.01)  # no int8 embedding can be this close: int8 must not be chosen
    monkeypatch.setitem(MIN_COSINE, "bf16", 1.01)
    chosen_model, chosen = fastest_precision(model, kind=AVX512_BF16)
    assert chosen == "fp32" and chosen_model is model


def test_bf16_on_a_cpu_without_native_bf16_warns_once_in_one_line_with_the_slowdown(monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_kind", lambda: AVX2)
    monkeypatch.setattr(precision_module, "bf16_slowdown", lambda: 37.0)
    with caplog.at_level("WARNING", logger=precision_module.__name__):
        coca_video.create_model("default", precision="bf16")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no native bf16" in line and "37x slower than fp32" in line and "\n" not in line
    caplog.clear()
    monkeypatch.setattr(precision_module, "cpu_kind", lambda: AVX512_BF16)
    with caplog.at_level("WARNING", logger=precision_module.__name__):
        coca_video.create_model("default", precision="bf16")
    assert not caplog.records


def test_auto_is_written_back_so_outputs_record_the_precision_that_ran():
    from coca_video.config import ModelConfig
    from coca_video.runtime import load_model

    cfg = ModelConfig(precision="auto")
    model = load_model(cfg)
    assert cfg.precision in ("fp32", "int8", "bf16") and cfg.precision == precision_of(model)
    if not cpu_kind().native_bf16:
        assert cfg.precision != "bf16"
    training = ModelConfig(precision="auto")
    load_model(training, training=True)
    assert training.precision == ("bf16" if cpu_kind().native_bf16 else "fp32")


@pytest.mark.slow
def test_limiting_the_instruction_sets_turns_native_bf16_off_and_auto_away_from_bf16():
    """The environment that approximates an AVX2-only CPU on an AVX-512 one (bench_encode_image.py's docstring)
    really is seen as such: the CPU kind says so, and auto (measured) does not choose bf16."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = ("import coca_video; from coca_video.model.precision import cpu_kind, precision_of; "
            "m = coca_video.create_model('default', precision='auto'); print(cpu_kind(), '|', precision_of(m))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kind, chosen = out.stdout.strip().rsplit("|", 1)
    assert kind.startswith("AVX2 (no native bf16") and chosen.strip() in ("fp32", "int8")


RANKS_CHOOSE = """
import os, torch.distributed as dist
from coca_video.config import ModelConfig
from coca_video.distributed import init_distributed
from coca_video.model import precision
from coca_video.runtime import load_model

init_distributed()
rank = dist.get_rank()
measured = precision.fastest_precision
# the measurement differs between ranks (as it can on a busy machine): rank 0 says int8, rank 1 fp32
precision.fastest_precision = lambda model, kind=None: (
    (precision.apply_precision(model, "int8"), "int8") if rank == 0 else (model, "fp32"))
cfg = ModelConfig(precision="auto")
model = load_model(cfg)
print(rank, cfg.precision, precision.precision_of(model), flush=True)
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_under_torchrun_every_rank_computes_in_the_precision_rank_0_measured(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(tmp_path / "ranks.py")]
    (tmp_path / "ranks.py").write_text(RANKS_CHOOSE)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # the ranks' own messages come first, torchrun's summary last (a rank's SIGABRT on a loaded machine, seen once,
    # left only the summary in the last 2,000 characters)
    assert out.returncode == 0, out.stderr[:4000] + "\n...\n" + out.stderr[-1500:]
    lines = sorted(line.split() for line in out.stdout.splitlines() if line[:1] in "01")
    assert lines == [["0", "int8", "int8"], ["1", "int8", "int8"]], out.stdout


@pytest.mark.slow
def test_auto_measures_once_per_model_cpu_and_torch_version_then_reads_its_choice_back(default_model_and_images,
                                                                                      monkeypatch):
    model = default_model_and_images[0]
    measured = []
    real = precision_module.measure_fastest
    monkeypatch.setattr(precision_module, "measure_fastest",
                        lambda *args, **kwargs: measured.append(1) or real(*args, **kwargs))
    first_model, first = fastest_precision(model, kind=AVX2)
    again_model, again = fastest_precision(model, kind=AVX2)
    assert measured == [1] and again == first and precision_of(again_model) == first  # read back, not measured
    fastest_precision(model, kind=AVX512_BF16)  # another CPU
    monkeypatch.setattr(precision_module.torch, "__version__", "0.0.0")  # another torch
    fastest_precision(model, kind=AVX2)
    other = coca_video.CoCa(model.cfg).eval()  # another model: same architecture, other weights
    fastest_precision(other, kind=AVX2)
    assert measured == [1, 1, 1, 1]


def test_auto_measures_again_when_its_kept_choice_is_unreadable_or_foreign(default_model_and_images, monkeypatch):
    model = default_model_and_images[0]
    measured = []
    real = precision_module.measure_fastest
    monkeypatch.setattr(precision_module, "measure_fastest",
                        lambda *args, **kwargs: measured.append(1) or real(*args, **kwargs))
    cache = precision_module.choice_cache()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{not json")
    fastest_precision(model, kind=AVX2)
    key = precision_module.choice_key(model, AVX2)
    cache.write_text(json.dumps({key: "bf16"}))  # bf16 is never a candidate on a CPU without native bf16
    _, chosen = fastest_precision(model, kind=AVX2)
    assert measured == [1, 1] and chosen in ("fp32", "int8")
