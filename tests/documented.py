"""The commands the documentation prints, read from its text, and each as the process a test starts
(tests/test_docs.py: README and the experiments; tests/test_benchmarks.py: the benchmark scripts)."""
import re
import shlex
import sys

# A command line: `python` or `python3` first, behind any `VAR=value` settings.
_COMMAND = re.compile(r"([A-Za-z_]\w*=\S*\s+)*python3? ")


def module_docstring(text: str) -> str:
  """The docstring a module's source opens with ('' without one)."""
  doc = re.match(r'^r?"""(.*?)"""', text, re.S)
  return doc.group(1) if doc else ""


def commands_in(text: str) -> list[str]:
  """Every command line of `text`: continued (backslash) lines joined, a trailing `  # comment`
  dropped, runs of spaces made one."""
  out = []
  for line in re.sub(r"\\\n\s*", " ", text).splitlines():
    line = " ".join(line.split("  #")[0].split())
    if _COMMAND.match(line):
      out.append(line)
  return out


def split_command(cmd: str, out_dir=None) -> tuple[dict[str, str], list[str]]:
  """(the command's `VAR=value` settings, its argv) as a test runs it: this interpreter for python /
  python3, `$OUT` the test's folder."""
  words = shlex.split(cmd)
  env = {}
  while re.match(r"[A-Za-z_]\w*=", words[0]):
    k, v = words.pop(0).split("=", 1)
    env[k] = v
  if out_dir is not None:
    words = [w.replace("$OUT", str(out_dir)) for w in words]
  return env, [sys.executable if w in ("python", "python3") else w for w in words]
