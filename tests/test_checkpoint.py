"""Checkpoint round trips, open_clip formats, hf-hub snapshots, and errors that name the file."""

from __future__ import annotations

import pytest
import torch
from helpers import DATA, OURS_TINY, open_clip_tiny, tiny_config

import coca_video
from coca_video.errors import CheckpointError
from coca_video.model.factory import resolve_pretrained
from coca_video.model.open_clip import convert_open_clip_state_dict, rename_open_clip_key

from coca_video.config import from_dict
from coca_video.model import CoCaConfig


@pytest.fixture(scope="module")
def open_clip_reference():
    return open_clip_tiny(pytest.importorskip("open_clip"), seed=11)


def ours_tiny() -> coca_video.CoCa:
    return coca_video.CoCa(from_dict(CoCaConfig, OURS_TINY)).eval()


def same_outputs(a: coca_video.CoCa, b: coca_video.CoCa) -> bool:
    images = torch.randn(2, 3, a.cfg.vision.image_size, a.cfg.vision.image_size, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(1, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return all(torch.equal(x, y) for x, y in zip(a(images, ids), b(images, ids)))


def test_round_trip_through_our_folder_format(tmp_path, tiny_model):
    folder = coca_video.save_pretrained(tiny_model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == [".coca-video", "config.json", "model.safetensors"]
    loaded = coca_video.create_model(str(folder))
    assert loaded.cfg == tiny_model.cfg
    assert same_outputs(loaded, tiny_model)


@pytest.mark.parametrize("layout", ["bin", "wrapped_bin", "safetensors", "folder"])
def test_open_clip_file_layouts_load_to_the_same_model(tmp_path, open_clip_reference, layout):
    from safetensors.torch import save_file

    state = open_clip_reference.state_dict()
    if layout == "bin":
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    elif layout == "wrapped_bin":  # open_clip training checkpoint: wrapper + DDP prefix + other entries
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout == "safetensors":
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "snapshot"
        path.mkdir()
        torch.save(state, path / "open_clip_pytorch_model.bin")
    reference = coca_video.load_weights(ours_tiny(), _bin(tmp_path, state))
    assert same_outputs(coca_video.load_weights(ours_tiny(), path), reference)


def _bin(tmp_path, state):
    path = tmp_path / "reference.bin"
    torch.save(state, path)
    return path


def test_hf_hub_snapshot_loads_through_huggingface_hub(tmp_path, monkeypatch, open_clip_reference):
    """`hf-hub:<repo>` goes through huggingface_hub; here from a local cache laid out as a hub snapshot."""
    import huggingface_hub.constants as hf_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hub" / "models--laion--CoCa-tiny"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    torch.save(open_clip_reference.state_dict(), snapshot / "open_clip_pytorch_model.bin")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    model = coca_video.load_weights(ours_tiny(), resolve_pretrained("x", "hf-hub:laion/CoCa-tiny"))
    reference = coca_video.load_weights(ours_tiny(), snapshot / "open_clip_pytorch_model.bin")
    assert same_outputs(model, reference)
    with pytest.raises(CheckpointError, match="hf-hub:laion/absent"):
        resolve_pretrained("x", "hf-hub:laion/absent")


@pytest.mark.slow
def test_every_reference_key_has_a_home():
    """All 629 keys of open_clip's coca_ViT-B-32 map onto ours with the right shapes (open_clip's key list, copied
    into tests/data from a state dict open_clip 3.3.0 printed)."""
    path = DATA / "coca_vitb32_keys.txt"
    shapes = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape, _dtype = line.split("\t")
            shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    assert len(shapes) == 629
    fake = {k: torch.zeros(s) for k, s in shapes.items()}
    converted = convert_open_clip_state_dict(fake, coca_video.get_model_config("coca_ViT-B-32"))
    expected = coca_video.CoCa(coca_video.get_model_config("coca_ViT-B-32")).state_dict()
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in expected.items()}


def test_rename_table_examples():
    assert rename_open_clip_key("visual.transformer.resblocks.3.mlp.c_fc.weight") == "image_encoder.vit.blocks.3.mlp.fc1.weight"
    assert rename_open_clip_key("text_decoder.cross_attn.5.ln_1_kv.bias") == "decoder.layers.5.cross_block.norm_context.bias"
    assert rename_open_clip_key("text_decoder.resblocks.0.attn.in_proj_weight") == "decoder.layers.0.self_block.attn.qkv.weight"


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.bin: no such file"):
        coca_video.create_model("tiny", pretrained=str(tmp_path / "nope.bin"))


def test_wrong_architecture_names_the_file_and_keys(tmp_path, tiny_model):
    folder = coca_video.save_pretrained(tiny_model, tmp_path / "tiny")
    with pytest.raises(CheckpointError) as err:
        coca_video.load_weights(ours_tiny(), folder)
    message = str(err.value)
    assert "model.safetensors" in message and "wrong shape" in message
    assert "image_encoder.vit.pos_embed" in message or "image_pooling.generative_pool.query" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_truncated_and_empty_files_are_clear_errors(tmp_path, tiny_model, suffix):
    from safetensors.torch import save_file

    full = tmp_path / f"full{suffix}"
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(state, str(full)) if suffix == ".safetensors" else torch.save(state, full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"cut{suffix}: unreadable or truncated"):
        coca_video.create_model("tiny", pretrained=str(cut))
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        coca_video.create_model("tiny", pretrained=str(empty))


class _Payload:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_loading_never_runs_pickled_code(tmp_path):
    _Payload.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.bin"
    torch.save({"state_dict": {"x": _Payload()}}, path)
    with pytest.raises(CheckpointError, match="evil.bin"):
        coca_video.create_model("tiny", pretrained=str(path))
    assert not (tmp_path / "pwned").exists()


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="coca_ViT-B-32"):
        coca_video.create_model("coca_ViT-H-99")


def test_every_shipped_architecture_builds_its_config():
    for name in coca_video.list_models():
        if name != "default":
            cfg = coca_video.get_model_config(name)
            assert cfg.vision.image_size % cfg.vision.patch_size == 0, name
    assert tiny_config().vision.image_size == 64
