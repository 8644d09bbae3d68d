"""scripts/extract_mm_projector.py: a full checkpoint's projector as a file the loaders take."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import make_tower, tiny_llava_config, tiny_llava_model

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "extract_mm_projector.py"


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("extract_mm_projector", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _adapter_args(tower: str, projector: str, adapter: Path) -> SimpleNamespace:
    return SimpleNamespace(vision_tower=tower, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                           mm_projector_type=projector, mm_patch_merge_type="flat", pretrain_mm_mlp_adapter=str(adapter))


@pytest.fixture(scope="module")
def delta_tower(tmp_path_factory) -> str:
    return make_tower(tmp_path_factory.mktemp("tower"), hidden_size=64)


def test_sharded_checkpoint_projector_starts_another_run(tmp_path, delta_tower, llama_tokenizer):
    model = tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", scale_factor=2))
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder, max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").is_file()

    out = tmp_path / "extracted" / "mm_projector.bin"
    result = subprocess.run([sys.executable, str(SCRIPT), "--model_name_or_path", str(folder), "--output", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {len(model.get_model().mm_projector.state_dict())} tensors")
    saved = torch.load(out, weights_only=True)
    expected = {f"model.mm_projector.{k}": v for k, v in model.get_model().mm_projector.state_dict().items()}
    assert saved.keys() == expected.keys()  # no embeddings: no start/end tokens were added
    for key, value in expected.items():
        assert torch.equal(saved[key], value)

    # the file is a --pretrain_mm_mlp_adapter: a fresh model gets the same projector and answers
    fresh = tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", scale_factor=2), seed=1)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if ".mm_projector." not in k}, strict=False)
    fresh.get_model().initialize_vision_modules(_adapter_args(delta_tower, "delta", out))
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_images(pixels), model.encode_images(pixels), atol=0, rtol=0)


def test_start_end_tokens_keep_the_embeddings_and_safetensors_output(tmp_path, tower_dir, llama_tokenizer):
    model = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer, mm_use_im_start_end=True))
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    out = tmp_path / "projector.safetensors"
    _module().main(["--model-path", str(folder), "--output", str(out)])
    saved = load_file(out)
    assert set(saved) == {"model.embed_tokens.weight", "model.mm_projector.0.weight", "model.mm_projector.0.bias",
                          "model.mm_projector.2.weight", "model.mm_projector.2.bias"}
    assert torch.equal(saved["model.embed_tokens.weight"], model.get_input_embeddings().weight)


def test_a_checkpoint_without_a_projector_is_named(tmp_path, tower_dir, llama_tokenizer):
    extract = _module().extract_projector
    model = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer))
    llm = tmp_path / "llm"
    model.save_pretrained(llm)
    config = json.loads((llm / "config.json").read_text())
    for key in [k for k in config if k.startswith("mm_")]:
        config.pop(key)
    (llm / "config.json").write_text(json.dumps(config))
    state = {k: v for k, v in model.state_dict().items() if ".mm_projector." not in k and ".vision_tower." not in k}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(llm / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"{llm} holds no mm_projector weights \(mm_projector_type None\): is it a "
                                         r"LLaVA checkpoint\?"):
        extract(str(llm), str(tmp_path / "x.bin"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{empty} has no model weights"):
        extract(str(empty), str(tmp_path / "x.bin"))
    with pytest.raises(FileNotFoundError, match="is not a local folder"):
        extract(str(tmp_path / "nowhere"), str(tmp_path / "x.bin"))
    assert not (tmp_path / "x.bin").exists()
