"""Tokenizers against the reference libraries on every GSM8K test question, and the prompt templates.

References: `sentencepiece` itself and transformers for the Llama 2 model; `tokenizers` itself
and transformers' fast tokenizer for Qwen2; transformers' apply_chat_template for Jinja rendering.
"""
import gzip
import json
import os
import random
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below loads local files only

import jinja2  # noqa: E402
import pytest  # noqa: E402
import sentencepiece as spm  # noqa: E402
import tokenizers  # noqa: E402

from r1jax import templates  # noqa: E402
from r1jax import tokenizer as tok_lib  # noqa: E402


@pytest.fixture(scope="module")
def questions(shared_data):
  with open(shared_data / "gsm8k_test.jsonl") as f:
    qs = [json.loads(line)["question"] for line in f]
  assert len(qs) == 1319
  return qs


@pytest.fixture(scope="module")
def llama_dir(shared_data):
  return shared_data / "tokenizers" / "llama2"


@pytest.fixture(scope="module")
def llama(llama_dir):
  return tok_lib.load_tokenizer(llama_dir)


@pytest.fixture(scope="module")
def qwen_json(shared_data):
  with gzip.open(shared_data / "tokenizers" / "qwen2" / "tokenizer.json.gz", "rt", encoding="utf-8") as f:
    return f.read()


@pytest.fixture(scope="module")
def qwen(shared_data):
  return tok_lib.load_tokenizer(shared_data / "tokenizers" / "qwen2" / "tokenizer.json.gz")


@pytest.fixture(scope="module")
def qwen_added(shared_data):
  return json.loads((shared_data / "tokenizers" / "qwen2" / "added_tokens.json").read_text())


# --- Llama 2 (SentencePiece) ------------------------------------------------------------------

def test_llama_ids_equal_sentencepiece(llama, llama_dir, questions):
  sp = spm.SentencePieceProcessor(model_file=str(llama_dir / "tokenizer.model"))
  ids = llama.encode_batch(questions)
  assert ids == sp.encode(questions)
  assert llama.encode(questions[0]) == sp.encode(questions[0])
  assert llama.encode_batch(questions[:5], add_bos=True) == sp.encode(questions[:5], add_bos=True)
  assert (llama.vocab_size, llama.bos_id, llama.eos_id, llama.pad_id) == (32000, 1, 2, 2)  # no pad: eos
  assert llama.decode_batch(ids) == questions
  assert llama.id_to_piece(15043) == sp.id_to_piece(15043) == "▁Hello"


def test_llama_ids_equal_transformers_sentencepiece_backend(llama, llama_dir, questions):
  from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
  hf = SentencePieceBackend(vocab_file=str(llama_dir / "tokenizer.model"), bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>")
  ids = llama.encode_batch(questions)
  assert ids == [hf.encode(q, add_special_tokens=False) for q in questions]
  assert [hf.decode(i) for i in ids[:50]] == [llama.decode(i) for i in ids[:50]]


def test_llama_ids_equal_transformers_llama_tokenizer(llama, llama_dir, questions):
  """transformers 5's LlamaTokenizer is `tokenizers`-backed, converted from tokenizer.model.

  Its Metaspace pre-tokenizer does not split at spaces, so a run of spaces becomes '▁▁' + 'How'
  where SentencePiece (and so the trained model) has '▁' + '▁How'. Ids must agree everywhere
  else; 338 of the 1319 questions hold a whitespace run.
  """
  from transformers import LlamaTokenizer
  hf = LlamaTokenizer.from_pretrained(str(llama_dir))
  ours = llama.encode_batch(questions)
  theirs = hf(questions, add_special_tokens=False)["input_ids"]
  plain = [i for i, q in enumerate(questions) if not re.search(r"\s\s", q)]
  assert len(plain) > 900
  assert [ours[i] for i in plain] == [theirs[i] for i in plain]
  assert hf.batch_decode(theirs) == llama.decode_batch(ours) == questions
  assert (hf.bos_token_id, hf.eos_token_id) == (llama.bos_id, llama.eos_id)


def test_sentencepiece_decode_special_and_out_of_range(llama):
  ids = llama.encode("Hello world", add_bos=True) + [llama.eos_id]
  assert ids[0] == 1
  assert llama.decode(ids) == "Hello world"
  assert llama.decode(ids, skip_special=False) == "<s>Hello world</s>"
  assert llama.decode(ids + [llama.vocab_size, llama.vocab_size + 7]) == "Hello world"
  with pytest.raises(IndexError, match="32000"):
    llama.id_to_piece(32000)
  assert llama.piece_to_id("▁Hello") == 15043 and llama.piece_to_id("no-such-piece") is None


# --- Qwen2 (Hugging Face tokenizer.json) ------------------------------------------------------

def test_qwen_ids_equal_tokenizers_library(qwen, qwen_json, questions):
  ref = tokenizers.Tokenizer.from_str(qwen_json)
  ids = qwen.encode_batch(questions)
  assert ids == [e.ids for e in ref.encode_batch(questions, add_special_tokens=False)]
  assert qwen.encode(questions[3]) == ref.encode(questions[3]).ids
  assert qwen.decode_batch(ids) == questions
  assert [qwen.decode(i) for i in ids[:20]] == questions[:20]


def test_qwen_ids_equal_transformers(qwen, qwen_json, questions, tmp_path):
  from transformers import PreTrainedTokenizerFast
  f = tmp_path / "tokenizer.json"
  f.write_text(qwen_json)
  ours = qwen.encode_batch(questions)
  for hf in (PreTrainedTokenizerFast(tokenizer_file=str(f)),
             PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(qwen_json))):
    theirs = hf(questions, add_special_tokens=False)["input_ids"]
    assert ours == theirs
    assert hf.batch_decode(theirs) == questions


def test_qwen_added_tokens(qwen, qwen_added, qwen_json):
  from transformers import AddedToken, PreTrainedTokenizerFast
  assert qwen.vocab_size == 151665 and len(qwen_added) == 22
  assert (qwen.bos_id, qwen.eos_id, qwen.pad_id) == (None, 151643, 151643)
  named = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
  assert {c: qwen.encode(c) for c in named} == {c: [i] for c, i in named.items()}
  for t in qwen_added:
    assert qwen.encode(t["content"]) == [t["id"]]
    assert qwen.id_to_piece(t["id"]) == t["content"]
    assert qwen.decode([t["id"]]) == ("" if t["special"] else t["content"])
    assert qwen.decode([t["id"]], skip_special=False) == t["content"]
  # transformers with the same tokens added gives the same ids on text that mixes them in.
  hf = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(qwen_json))
  new = [t for t in qwen_added if hf.convert_tokens_to_ids(t["content"]) in (None, hf.unk_token_id)]
  hf.add_special_tokens({"additional_special_tokens": [
      AddedToken(t["content"], special=True, normalized=False) for t in new if t["special"]]})
  hf.add_tokens([AddedToken(t["content"], special=False, normalized=False) for t in new if not t["special"]])
  text = ("<|im_start|>user\nCall <tool_call>f(x)</tool_call> on <|vision_start|>"
          "<|image_pad|><|vision_end|>.<|im_end|>\n<|im_start|>assistant\n<|fim_prefix|>x<|file_sep|>")
  assert qwen.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
  assert qwen.decode(qwen.encode(text), skip_special=False) == text
  assert qwen.decode(qwen.encode("Hi<|im_end|>") + [10 ** 6]) == "Hi"  # unknown ids dropped, as tokenizers does


def test_hf_directory_reads_config(qwen_json, qwen_added, tmp_path):
  (tmp_path / "tokenizer.json").write_text(qwen_json)
  (tmp_path / "added_tokens.json").write_text(json.dumps(qwen_added))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({
      "eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"}, "bos_token": None,
      "chat_template": templates.CHATML_TEMPLATE}))
  t = tok_lib.load_tokenizer(tmp_path)
  assert (t.bos_id, t.eos_id, t.pad_id, t.vocab_size) == (None, 151645, 151643, 151665)
  assert t.chat_template == templates.CHATML_TEMPLATE
  assert tok_lib.load_tokenizer(tmp_path, eos_token="<|endoftext|>").eos_id == 151643
  # An added token whose id is not the next free id must fail loudly, not shift every later id.
  (tmp_path / "added_tokens.json").write_text(json.dumps({"<|new|>": 151700}))
  with pytest.raises(ValueError, match="151700"):
    tok_lib.load_tokenizer(tmp_path)


def test_load_errors(tmp_path, shared_data):
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope")) + ".*tokenizer.model"):
    tok_lib.load_tokenizer(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="holds none of"):
    tok_lib.load_tokenizer(tmp_path)
  with pytest.raises(ValueError, match="README.md.*json.gz"):
    tok_lib.load_tokenizer(shared_data / "README.md")
  with pytest.raises(ValueError, match="eos_token='<nope>'"):
    tok_lib.load_tokenizer(shared_data / "tokenizers" / "llama2", eos_token="<nope>")


# --- train_sentencepiece ----------------------------------------------------------------------

def _corpus(seed: int, n: int) -> list[str]:
  rng = random.Random(seed)
  names = ["Janet", "Tom", "Ana", "Li", "Omar", "Sofia"]
  things = ["apples", "eggs", "books", "marbles", "dollars", "cookies"]
  out = []
  for _ in range(n):
    a, b = rng.randint(1, 999), rng.randint(1, 99)
    who, what = rng.choice(names), rng.choice(things)
    op, val = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
    out.append(f"{who} has {a} {what} and gets {b} more. How many {what} now?\n"
               f"<think> {a} {op} {b} = {val}. </think> <answer> {val} </answer>")
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  d = tmp_path_factory.mktemp("spm")
  corpus = _corpus(0, 3000)
  return (tok_lib.train_sentencepiece(corpus, 512, d / "a.model"),
          tok_lib.train_sentencepiece(corpus, 512, d / "b.model"), d)


def test_train_sentencepiece_deterministic(trained):
  a, b, d = trained
  assert (d / "a.model").read_bytes() == (d / "b.model").read_bytes()
  held_out = _corpus(1, 200)
  assert a.encode_batch(held_out) == b.encode_batch(held_out)
  assert 300 < a.vocab_size <= 512
  # The file on disk is a plain SentencePiece model.
  sp = spm.SentencePieceProcessor(model_file=str(d / "a.model"))
  assert sp.encode(held_out) == a.encode_batch(held_out)


def test_train_sentencepiece_tags_specials_round_trip(trained):
  t = trained[0]
  for tag in tok_lib.REASONING_TAGS:
    i = t.piece_to_id(tag)
    assert i is not None and t.encode(tag) == [i]
    assert i in t.encode(f"so{tag}x 12")
  ids = {t.pad_id, t.eos_id, t.bos_id, t.piece_to_id("<unk>")}
  assert ids == {0, 1, 2, 3}  # distinct and valid
  assert t.id_to_piece(t.eos_id) == "</s>" and t.id_to_piece(t.pad_id) == "<pad>"
  unseen = ["Zoë paid €3.50 (50% off!) for 12,345 ñandú eggs; 7/8 ≈ 0.875 ✓ 😀",
            "  two  spaces,\ttab\nnewline {braces} [x] <b> \\boxed{42} ",
            "<think>\n9*9=81\n</think>\n<answer>81</answer>", ""]
  for s in unseen:
    assert t.decode(t.encode(s)) == s
  a, b = "Tom has 5 <think>", " 5 + 1 = 6"
  assert t.decode(t.encode(a) + t.encode(b)) == a + b
  assert t.decode(t.encode("done") + [t.eos_id, t.pad_id]) == "done"
  assert t.decode(t.encode("done") + [t.eos_id], skip_special=False) == "done</s>"
  with pytest.raises(ValueError, match="vocab_size=200"):
    tok_lib.train_sentencepiece(["x"], 200, trained[2] / "c.model")


# --- templates --------------------------------------------------------------------------------

def test_r1_zero_prompt_exact():
  expected = (
      "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
      "assistant first thinks about the reasoning process in the mind and then provides the user with the "
      "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
      "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
      "User: Natalia sold 48 clips. How many in all?. Assistant:")
  q = "Natalia sold 48 clips. How many in all?"
  assert templates.format_prompt(q) == expected
  assert templates.format_prompt(q, templates.get_template("r1_zero")) == expected
  assert templates.get_template("r1_zero").render(q) == expected


def test_r1_zero_matches_reference_doc(shared_data):
  ref = shared_data.parent / "REFERENCE.md"
  if not ref.is_file():
    pytest.skip(f"{ref} not present")
  section = ref.read_text().split("## 2. R1-Zero", 1)[1]
  quoted = re.search(r'"(A conversation.*?Assistant:)"', section, re.S).group(1)
  assert " ".join(quoted.split()) == templates.R1_ZERO_TEMPLATE


def test_template_slot_errors_and_braces():
  with pytest.raises(ValueError, match=r"'Solve: \{question\}'.*\{prompt\}"):
    templates.format_prompt("1+1", "Solve: {question}")
  with pytest.raises(ValueError, match="'bad'.*{prompt}"):
    templates.Template("bad", prompt_format="no slot")
  with pytest.raises(ValueError, match="'nope'.*'chat'.*'r1_zero'"):
    templates.get_template("nope")
  # Substitution, not str.format: other braces in the template or question survive.
  assert templates.format_prompt("{x}?", "Q: {prompt} Put it in \\boxed{}.") == "Q: {x}? Put it in \\boxed{}."


QWEN_STYLE = """{% if messages[0]['role'] == 'system' %}
  {% set system = messages[0]['content'] %}
  {% set rest = messages[1:] %}
{% else %}
  {% set system = 'You are a helpful assistant.' %}
  {% set rest = messages %}
{% endif %}
<|im_start|>system
{{ system }}<|im_end|>
{% for message in rest %}
  {% if message['role'] not in ['user', 'assistant'] %}
    {{ raise_exception('Unknown role: ' + message['role']) }}
  {% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}{% if message.meta is defined %} {{ message.meta | tojson }}{% endif %}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}{{ eos_token if not add_generation_prompt else '' }}"""


def test_chat_template_matches_transformers(qwen_json, qwen):
  from transformers import PreTrainedTokenizerFast
  hf = PreTrainedTokenizerFast(tokenizer_object=tokenizers.Tokenizer.from_str(qwen_json))
  convs = [
      [{"role": "user", "content": "What is 2+2?"}],
      [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "Hi <b>&</b>"},
       {"role": "assistant", "content": "<think>x</think> 4"}, {"role": "user", "content": "Again", "meta": "é\"q"}],
  ]
  for messages in convs:
    for gen in (True, False):
      ours = templates.apply_chat_template(messages, QWEN_STYLE, add_generation_prompt=gen, eos_token="<|endoftext|>")
      theirs = hf.apply_chat_template(messages, chat_template=QWEN_STYLE, tokenize=False, add_generation_prompt=gen,
                                      eos_token="<|endoftext|>")
      assert ours == theirs
  # trim_blocks / lstrip_blocks: block tags leave no blank lines or indentation behind.
  assert templates.apply_chat_template(convs[0], QWEN_STYLE) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
  bad = [{"role": "tool", "content": "x"}]
  with pytest.raises(jinja2.TemplateError, match="Unknown role: tool"):
    templates.apply_chat_template(bad, QWEN_STYLE)
  with pytest.raises(jinja2.TemplateError, match="Unknown role: tool"):
    hf.apply_chat_template(bad, chat_template=QWEN_STYLE, tokenize=False)
  # The registered ChatML template renders the same as transformers, and tokenizes to Qwen's ids.
  chat = templates.get_template("chat")
  text = chat.render("What is 2+2?")
  assert text == hf.apply_chat_template(convs[0], chat_template=templates.CHATML_TEMPLATE, tokenize=False,
                                        add_generation_prompt=True)
  ids = qwen.encode(text)
  assert ids[0] == 151644 and ids.count(151645) == 1 and ids[-3:] == qwen.encode("<|im_start|>assistant\n")
