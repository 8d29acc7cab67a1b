"""The package's shape: every stage module is a leaf (it imports no other stage module; what
several stages share lives in library modules outside r1jax/stages). Read from the source with
`ast`, so the check needs no import and sees imports inside functions too."""
import ast
import pathlib

STAGES = pathlib.Path(__file__).resolve().parents[1] / "r1jax" / "stages"
PACKAGE = "r1jax.stages"


def stage_imports(path: pathlib.Path) -> set[str]:
  """The modules of r1jax/stages (or the package itself) that the file at `path` imports."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative to a module of r1jax/stages
        base = ".".join([PACKAGE.rsplit(".", node.level - 1)[0]] + ([base] if base else []))
      if base == PACKAGE:
        found |= {f"{PACKAGE}.{a.name}" for a in node.names}
      elif base.startswith(PACKAGE + "."):
        found.add(base)
      elif base == "r1jax":
        found |= {PACKAGE for a in node.names if a.name == "stages"}
  return found


def test_no_stage_module_imports_another_stage_module():
  modules = sorted(p for p in STAGES.glob("*.py") if p.name != "__init__.py")
  assert len(modules) >= 10
  offenders = {p.name: sorted(stage_imports(p)) for p in modules if stage_imports(p)}
  assert offenders == {}


def test_the_check_sees_every_form_of_a_stage_import(tmp_path):
  """The registry, r1jax/stages/__init__.py, imports the stages: the check finds them there, and
  finds each other spelling of an import of a stage module."""
  assert {f"{PACKAGE}.grpo", f"{PACKAGE}.sft", f"{PACKAGE}.reward_model"} <= stage_imports(STAGES / "__init__.py")
  forms = {"from r1jax.stages import grpo": {f"{PACKAGE}.grpo"},
           "from r1jax.stages.grpo import run": {f"{PACKAGE}.grpo"},
           "import r1jax.stages.sft as s": {f"{PACKAGE}.sft"},
           "from . import sft": {f"{PACKAGE}.sft"},
           "from .reward_model import load": {f"{PACKAGE}.reward_model"},
           "from r1jax import stages": {PACKAGE},
           "def f():\n  from r1jax.stages import mcts": {f"{PACKAGE}.mcts"},
           "from .. import stages": {PACKAGE},
           "from r1jax import scalar_model\nimport r1jax.sampler\nfrom .. import train": set()}
  for i, (src, want) in enumerate(forms.items()):
    (tmp_path / f"m{i}.py").write_text(src + "\n")
    assert stage_imports(tmp_path / f"m{i}.py") == want, src
