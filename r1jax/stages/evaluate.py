"""Stage `evaluate`: a policy on the held-out problems (pass@1, strict format rate, language
consistency, mean length, ...). Inputs: {'policy'}. Outputs: {'summary': <out>/summary.json} and
<out>/samples.jsonl."""
from __future__ import annotations

import pathlib

from r1jax.logger import format_table


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  model_cfg, params = ctx.load(run, inputs["policy"])
  summary = ctx.evaluate(run, params, model_cfg, out)
  print(format_table([(k, v) for k, v in summary.items() if not k.endswith("per_response")],
                     (f"{out.name} of {pathlib.Path(inputs['policy']).name}", "value")))
  return {"summary": str(out / "summary.json")}
