"""Mutation check of the RL core: plant one bug at a time in a copy of the repo, run the tests that
exercise that code, and report which bugs no test catches.

    python tests/mutation_check.py              # all mutations, one after another
    python tests/mutation_check.py -k top_p,kl  # those whose name contains 'top_p' or 'kl'
    python tests/mutation_check.py --list       # names, files and test selections only

Each mutation is (name, file, exact original snippet, replacement, tests). The snippet must occur
exactly once in its file (tests/test_mutation_check.py asserts this in the ordinary suite, so a
change of the code cannot silently turn a mutation into a no-op); the mutated copy is then tested
with `pytest -x -q` on the selection, and a mutation counts as caught when pytest fails. The
latest results are recorded in tests/README.md. Not collected by pytest (no test_ prefix).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str
  old: str
  new: str
  tests: tuple[str, ...]
  issue: bool = False
  """One of the bugs named in the issue that asked for this check."""


# Selections: the tests that exercise the mutated code, the most direct first (pytest -x stops at
# the first failure, so a caught mutation costs only the tests before it).
_T, _L, _S = "tests/test_train_step.py::test_", "tests/test_grpo_loop.py::test_", "tests/test_sampler.py::test_"
LORA = ("tests/test_lora.py",)
LORA_ROLLOUT = tuple("tests/test_lora.py::test_" + t for t in (
    "merge_combined_is_w_plus_scaled_a_b_on_the_combined_tree", "sampler_decodes_with_the_adapters_merged",
    "sampler_keeps_the_adapters_beside_an_int8_base"))
CONSISTENCY = _L + "sampled_logprobs_are_the_trainers_and_rows_keep_their_prompts"
LOOP = (_L + "loop_rewards_advantages_overlong_truncation_kl_and_minibatches",
        _L + "loop_dynamic_sampling_keeps_informative_groups_with_their_rewards")
LOOP_E2E = LOOP + ("tests/test_r1_zero.py::test_resume_is_bit_identical",
                   "tests/test_r1_zero.py::test_dapo_variant_runs_dynamic_sampling_mu_and_minibatches",
                   "tests/test_r1_zero.py::test_reference_reset_every_n_steps")
STEP = (_T + "one_step_follows_the_gradient_of_an_independent_loss", _T + "grpo_step_loss_matches_numpy_and_compiles_once",
        _T + "nonfinite_update_is_skipped", _T + "grpo_step_logs_the_scheduled_learning_rate",
        _T + "completion_logprobs_match_full_logits", _T + "grad_accum_equals_whole_batch", CONSISTENCY) + LOOP
MATH = ("tests/test_grpo_math.py", _T + "grpo_step_loss_matches_numpy_and_compiles_once",
        _T + "one_step_follows_the_gradient_of_an_independent_loss")
SAMPLER = (_S + "next_token_frequencies_match_truncated_softmax", _S + "greedy_next_token_is_the_argmax",
           _S + "generated_first_tokens_follow_the_model_distribution", _S + "greedy_equals_teacher_forced_argmax",
           _S + "sampled_logprobs_match_forward_with_temperature", _S + "tokens_after_eos_are_masked",
           _S + "deterministic_and_samples_differ", CONSISTENCY)
OPTIM = (_T + "optimizer_clips_decays_matrices_only_and_follows_the_schedule",
         _T + "schedule_warmup_then_cosine_to_ten_percent", _T + "grpo_step_logs_the_scheduled_learning_rate",
         _T + "one_step_follows_the_gradient_of_an_independent_loss")
OVERLONG = ("tests/test_rewards.py::test_soft_overlong_punishment_hand_values",) + LOOP
SFT = ("tests/test_sft.py",)
STAGES = ("tests/test_stages.py",)

_TRAIN, _STEP, _LOSS, _ADV = "r1jax/rl/loop.py", "r1jax/rl/step.py", "r1jax/rl/losses.py", "r1jax/rl/advantages.py"
_COLLECT, _UPDATE = "r1jax/rl/collect.py", "r1jax/rl/update.py"
_SAMPLER, _ROLLOUT, _DS = "r1jax/sampling/sampler.py", "r1jax/sampling/rollout.py", "r1jax/rl/dynamic_sampling.py"
_HEADS, _HEAD_STEP = "r1jax/model/heads.py", "r1jax/rl/head_step.py"

MUTATIONS = [
    # ---- the bugs named in the issue
    Mutation("step_policy_gradient_zero", _STEP,
             "logp, ent = completion_logprobs(policy, mb[\"tokens\"], mb[\"mask\"], P, cfg, temperature)\n",
             "logp, ent = completion_logprobs(policy, mb[\"tokens\"], mb[\"mask\"], P, cfg, temperature)\n"
             "    logp = jax.lax.stop_gradient(logp)\n", STEP, issue=True),
    Mutation("loop_rewards_grouping_swapped", _COLLECT, "exs = [examples[i] for i in idx for _ in range(G)]",
             "exs = [examples[i] for _ in range(G) for i in idx]", LOOP, issue=True),
    Mutation("loop_ref_logp_from_policy", _UPDATE, "batch[\"ref_logp\"] = ref_logp_fn(reference, batch)",
             "batch[\"ref_logp\"] = ref_logp_fn(state.policy(), batch)", LOOP_E2E, issue=True),
    Mutation("loop_ignores_scale_rewards", _UPDATE, "adv_lib.group_advantages(total, G, gcfg.scale_rewards)",
             "adv_lib.group_advantages(total, G)", LOOP_E2E, issue=True),
    Mutation("loop_ignores_mask_truncated", _UPDATE, "if gcfg.mask_truncated_completions:", "if False:", LOOP_E2E,
             issue=True),
    Mutation("loop_dynamic_sampling_off", _COLLECT,
             "buf = GroupBuffer(tcfg.prompts_per_step, G) if dynamic_sampling else None", "buf = None",
             LOOP_E2E, issue=True),
    Mutation("sampler_ignores_temperature", _SAMPLER, "logits = logits_RxV / scfg.temperature", "logits = logits_RxV",
             SAMPLER, issue=True),
    Mutation("sampler_top_p_off", _SAMPLER, "if scfg.top_p < 1.0:", "if False:", SAMPLER, issue=True),
    Mutation("optimizer_no_clipping", _STEP, "optax.clip_by_global_norm(cfg.max_grad_norm),", "optax.identity(),",
             OPTIM, issue=True),
    # ---- loss
    Mutation("loss_kl_sign", _LOSS, "loss_BxT = loss_BxT + cfg.beta * kl_BxT", "loss_BxT = loss_BxT - cfg.beta * kl_BxT",
             MATH),
    Mutation("loss_kl_direction", _LOSS, "ref_logp_BxT - logp_BxT, 0.0)", "logp_BxT - ref_logp_BxT, 0.0)", MATH),
    Mutation("loss_clip_removed", _LOSS, "clipped_rho_BxT = jnp.clip(rho_BxT, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)",
             "clipped_rho_BxT = rho_BxT", MATH),
    Mutation("loss_clip_low_uses_eps_high", _LOSS, "jnp.clip(rho_BxT, 1.0 - cfg.eps_low,",
             "jnp.clip(rho_BxT, 1.0 - cfg.eps_high,", MATH),
    Mutation("loss_ratio_inverted", _LOSS, "log_rho_BxT = jnp.where(valid_BxT, logp_BxT - old_logp_BxT, 0.0)",
             "log_rho_BxT = jnp.where(valid_BxT, old_logp_BxT - logp_BxT, 0.0)", MATH),
    Mutation("loss_grpo_aggregation_token_mean", _LOSS,
             "return jnp.sum(l_BxT.sum(axis=1) / jnp.maximum(m_BxT.sum(axis=1), 1.0)) / B",
             "return l_BxT.sum() / jnp.maximum(m_BxT.sum(), 1.0)", MATH),
    Mutation("loss_max_instead_of_min", _LOSS, "loss_BxT = -jnp.minimum(rho_BxT * adv_Bx1, clipped_rho_BxT * adv_Bx1)",
             "loss_BxT = -jnp.maximum(rho_BxT * adv_Bx1, clipped_rho_BxT * adv_Bx1)", MATH),
    # ---- advantages
    Mutation("adv_std_ddof0", _ADV, "STD_DDOF = 1\n", "STD_DDOF = 0\n", MATH + LOOP),
    Mutation("adv_mean_not_subtracted", _ADV, "centered_PxG = r_PxG - r_PxG.mean(axis=1, keepdims=True)",
             "centered_PxG = r_PxG", MATH + LOOP),
    Mutation("adv_batch_scale_uses_group_std", _ADV, "adv_PxG = centered_PxG / (r_B.std(ddof=STD_DDOF) + eps)",
             "adv_PxG = centered_PxG / (r_PxG.std(axis=1, ddof=STD_DDOF, keepdims=True) + eps)", MATH + LOOP),
    Mutation("adv_eps_larger", _ADV, "scale: str = \"group\", eps: float = 1e-4)", "scale: str = \"group\", eps: float = 1e-2)",
             MATH + LOOP),
    # ---- the update step
    Mutation("step_ratio_always_one", _STEP, "loss_lib.grpo_loss(logp, mb[\"old_logp\"],",
             "loss_lib.grpo_loss(logp, jax.lax.stop_gradient(logp),", STEP),
    Mutation("step_ignores_temperature", _STEP,
             "completion_logprobs(policy, mb[\"tokens\"], mb[\"mask\"], P, cfg, temperature)",
             "completion_logprobs(policy, mb[\"tokens\"], mb[\"mask\"], P, cfg)", STEP),
    Mutation("step_logs_next_learning_rate", _STEP,
             "metrics |= {\"loss\": loss, \"grad_norm\": gnorm, \"learning_rate\": lr(state.step),",
             "metrics |= {\"loss\": loss, \"grad_norm\": gnorm, \"learning_rate\": lr(state.step + 1),", STEP),
    Mutation("step_nonfinite_not_skipped", _STEP, "finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)",
             "finite = jnp.isfinite(gnorm) | True", STEP),
    Mutation("step_grad_accum_equal_weights", _STEP, "weights = tokens_j / jnp.maximum(jnp.sum(tokens_j), 1.0)",
             "weights = jnp.full((A,), 1.0 / A)", STEP),
    Mutation("step_completion_offset", _STEP, "return model_lib.token_logprobs(params, h[:, prompt_len - 1:],",
             "return model_lib.token_logprobs(params, jnp.roll(h, 1, axis=1)[:, prompt_len - 1:],", STEP),
    # ---- optimizer
    Mutation("optimizer_decay_mask_inverted", _STEP, "path[-1].key in _MATRICES", "path[-1].key not in _MATRICES",
             OPTIM),
    Mutation("optimizer_cosine_to_zero", _STEP, "max(cfg.total_steps - cfg.warmup_steps, 1), 0.1)",
             "max(cfg.total_steps - cfg.warmup_steps, 1), 0.0)", OPTIM),
    Mutation("optimizer_no_warmup", _STEP, "[cfg.warmup_steps]) if cfg.warmup_steps else rest",
             "[0]) if cfg.warmup_steps else rest", OPTIM),
    Mutation("optimizer_ignores_b2", _STEP, "b1=cfg.b1, b2=cfg.b2,", "b1=cfg.b1, b2=0.999,", OPTIM),
    Mutation("optimizer_weight_decay_ignored", _STEP, "weight_decay=cfg.weight_decay,", "weight_decay=0.0,", OPTIM),
    # ---- the loop
    Mutation("loop_ref_logp_wrong_temperature", _TRAIN,
             "train_step.make_logprob_fn(model_cfg, scfg.temperature or 1.0,",
             "train_step.make_logprob_fn(model_cfg, 1.0,", LOOP_E2E),
    Mutation("loop_update_wrong_temperature", _TRAIN, "make_grpo_step(model_cfg, gcfg, ocfg, scfg.temperature or 1.0,",
             "make_grpo_step(model_cfg, gcfg, ocfg, 1.0,", LOOP_E2E),
    Mutation("loop_minibatch_repeats_first", _UPDATE, "sel = np.sort(perm[j * mb:(j + 1) * mb])",
             "sel = np.sort(perm[:mb])", LOOP_E2E),
    Mutation("loop_minibatch_ref_logp_misaligned", _UPDATE,
             "host[\"ref_logp\"] = np.asarray(distributed.to_host(batch[\"ref_logp\"]))",
             "host[\"ref_logp\"] = np.asarray(distributed.to_host(batch[\"ref_logp\"]))[::-1]", LOOP_E2E),
    Mutation("loop_single_inner_iteration", _UPDATE, "for it_mu in range(gcfg.mu):", "for it_mu in range(1):",
             LOOP_E2E),
    Mutation("loop_adv_shifted_by_a_group", _UPDATE, "host = ro.train_batch(G) | {\"adv\": adv}",
             "host = ro.train_batch(G) | {\"adv\": np.roll(adv, G)}", LOOP_E2E),
    Mutation("loop_mask_truncated_inverted", _UPDATE, "* (~ro.truncated)[:, None]", "* ro.truncated[:, None]",
             LOOP_E2E),
    Mutation("loop_ref_never_reset", _UPDATE,
             "if gcfg.ref_reset_every and (step + 1) % gcfg.ref_reset_every == 0:", "if False:", LOOP_E2E),
    Mutation("loop_overlong_sign", _COLLECT, "total = total + tcfg.overlong_weight * per_fn[\"overlong\"]",
             "total = total - tcfg.overlong_weight * per_fn[\"overlong\"]", OVERLONG),
    Mutation("loop_overlong_wrong_max_length", _COLLECT,
             "soft_overlong_punishment(ro.length, self.max_completion_length,",
             "soft_overlong_punishment(ro.length, self.max_completion_length + tcfg.overlong_buffer,", OVERLONG),
    Mutation("overlong_ramp_normalizer", "r1jax/rewards/length.py", "inside = (max_length - buffer - L) / buffer",
             "inside = (max_length - buffer - L) / max_length", OVERLONG),
    # ---- dynamic sampling
    Mutation("loop_dynamic_sampling_stale_rewards", _COLLECT, "idx, total = list(rows[\"idx\"][::G]), rows[\"rewards\"]",
             "idx = list(rows[\"idx\"][::G])", LOOP_E2E),
    Mutation("dynamic_sampling_keeps_flat_groups", _DS, "return r_PxG.max(axis=1) > r_PxG.min(axis=1)",
             "return r_PxG.max(axis=1) >= r_PxG.min(axis=1)", ("tests/test_grpo_math.py",) + LOOP_E2E),
    Mutation("dynamic_sampling_takes_last_groups", _DS, "groups = self._kept[:self.num_groups]",
             "groups = self._kept[-self.num_groups:]", ("tests/test_grpo_math.py",) + LOOP_E2E),
    Mutation("loop_dynamic_sampling_ignores_ready", _COLLECT, "if buf.ready or rounds >= tcfg.max_sampling_rounds:",
             "if rounds >= tcfg.max_sampling_rounds:", LOOP_E2E),
    # ---- sampler and rollout
    Mutation("sampler_same_key_every_step", _SAMPLER,
             "jax.random.fold_in(jax.random.fold_in(key, r), t))(rows_R, t_R)",
             "jax.random.fold_in(key, r))(rows_R, t_R)", SAMPLER + (_S + "each_decode_step_draws_fresh_randomness",)),
    Mutation("sampler_prompts_right_padded", _SAMPLER, "toks[i, P - len(p):] = p\n      mask[i, P - len(p):] = True",
             "toks[i, :len(p)] = p\n      mask[i, :len(p)] = True", SAMPLER),
    Mutation("sampler_top_k_keeps_one_more", _SAMPLER, "kth = jax.lax.top_k(logits, scfg.top_k)[0][..., -1:]",
             "kth = jax.lax.top_k(logits, scfg.top_k + 1)[0][..., -1:]", SAMPLER),
    Mutation("sampler_top_p_drops_crossing_token", _SAMPLER,
             "inside = ~(jnp.sum(jnp.where(logits_xV > lx, p, 0.0), axis=-1) >= top_p)",
             "inside = ~(jnp.sum(jnp.where(logits_xV >= lx, p, 0.0), axis=-1) >= top_p)", SAMPLER),
    Mutation("sampler_top_p_noise_without_logits", _SAMPLER,
             "z = jax.random.gumbel(key, logits_xV.shape, logits_xV.dtype) + logits_xV",
             "z = jax.random.gumbel(key, logits_xV.shape, logits_xV.dtype)", SAMPLER),
    Mutation("sampler_top_k_skipped_with_top_p", _SAMPLER, "  if scfg.top_k:\n    kth",
             "  if scfg.top_k and scfg.top_p == 1.0:\n    kth", SAMPLER),
    Mutation("sampler_generate_ignores_temperature", _SAMPLER,
             "tok = jax.vmap(lambda l, k: next_token(l, k, scfg))(allowed, keys)",
             "tok = jax.vmap(lambda l, k: next_token(l, k, dataclasses.replace(scfg, temperature=1.0)))(allowed, keys)",
             SAMPLER),
    Mutation("sampler_logp_without_temperature", _SAMPLER, "return tok, _logp_of(logits, tok, scfg.temperature)",
             "return tok, _logp_of(logits, tok, 1.0)", SAMPLER),
    Mutation("sampler_mask_past_eos", _SAMPLER, "\"mask\": upd(s[\"mask\"], ~s[\"done\"])",
             "\"mask\": upd(s[\"mask\"], jnp.ones_like(s[\"done\"]))", SAMPLER),
    Mutation("sampler_truncated_flag_inverted", _SAMPLER, "\"truncated\": ~s[\"eos\"], \"steps\": s[\"step\"]",
             "\"truncated\": s[\"eos\"], \"steps\": s[\"step\"]", SAMPLER),
    # Issue 12: continuous batching, the rollout-vs-trainer mismatch and TIS.
    Mutation("sampler_continuous_keys_from_slot", _SAMPLER, "tok, lp = _pick(s[\"logits\"], row_offset + row, t, key, scfg)",
             "tok, lp = _pick(s[\"logits\"], row_offset + jnp.arange(M), t, key, scfg)",
             (_S + "continuous_batching_equals_static_generation",)),
    # Issue 30: the rollout planned against memory.
    Mutation("rollout_chunks_rows_from_zero", _SAMPLER, "rows_R = row_offset + jnp.arange(R)", "rows_R = jnp.arange(R)",
             ("tests/test_rollout_plan.py::test_a_chunked_rollout_draws_the_rows_of_the_whole_batch",)),
    Mutation("rollout_plan_too_frugal", "r1jax/memory_sampling.py",
             "lo, hi = (lo, mid) if peak(options[mid]) <= budget else (mid + 1, hi)",
             "lo, hi = (lo, mid) if peak(options[mid]) < budget / 2 else (mid + 1, hi)",
             ("tests/test_rollout_plan.py::test_the_plan_generates_in_the_fewest_chunks_that_fit_and_records_them",)),
    Mutation("sampler_continuous_refill_wrong_prompt", _SAMPLER, "src_b, dst = b[order], idx[order]",
             "src_b, dst = (order // n) % B, idx[order]", (_S + "continuous_batching_equals_static_generation",)),
    Mutation("tis_sequence_mean_not_sum", "r1jax/rl/rollout_mismatch.py",
             "jnp.sum(d_BxT, axis=1, keepdims=True)", "jnp.mean(d_BxT, axis=1, keepdims=True)",
             ("tests/test_grpo_math.py::test_tis_loss_grad_and_mismatch_match_numpy",)),
    Mutation("mismatch_k3_reversed", "r1jax/rl/rollout_mismatch.py", "k3_BxT = jnp.exp(d_BxT) - d_BxT - 1.0",
             "k3_BxT = jnp.exp(-d_BxT) + d_BxT - 1.0",
             ("tests/test_grpo_math.py::test_tis_loss_grad_and_mismatch_match_numpy",)),
    Mutation("loop_old_logp_from_reference", _UPDATE,
             "rollout_mismatch.with_trainer_old_logp(batch, ref_logp_fn(state.policy(), batch))",
             "rollout_mismatch.with_trainer_old_logp(batch, ref_logp_fn(reference, batch))", LOOP),
    Mutation("rollout_prompts_tiled_not_repeated", _ROLLOUT,
             "pt = np.repeat(self.prompt_tokens, n, axis=0)\n    pm = np.repeat(self.prompt_mask, n, axis=0)",
             "pt = np.tile(self.prompt_tokens, (n, 1))\n    pm = np.tile(self.prompt_mask, (n, 1))", (CONSISTENCY,) + LOOP),
    Mutation("rollout_old_logp_zero", _ROLLOUT, "\"old_logp\": self.logp}", "\"old_logp\": 0 * self.logp}",
             (CONSISTENCY,) + LOOP),
    # ---- SFT, reward model, stages and the pipeline
    Mutation("sft_loss_on_prompt_tokens", "r1jax/sft/step.py", "  w = lmask[:, 1:].astype(jnp.float32)",
             "  w = mask[:, 1:].astype(jnp.float32)", SFT),
    Mutation("sft_packed_examples_see_each_other", "r1jax/sft/step.py", "segments_BxT=None if seg is None else seg[:, :-1])",
             "segments_BxT=None)", SFT),
    Mutation("sft_resume_restarts_the_data", "r1jax/sft/loop.py",
             "data_lib.batches(R, cfg.batch_size, cfg.epochs, cfg.seed, start)",
             "data_lib.batches(R, cfg.batch_size, cfg.epochs, cfg.seed, 0)", SFT),
    Mutation("bradley_terry_sign", _HEAD_STEP, "jnp.mean(jax.nn.softplus(-margin))", "jnp.mean(jax.nn.softplus(margin))",
             SFT),
    Mutation("score_at_first_token", _HEADS, "last_B = T - 1 - jnp.argmax(mask_BxT[:, ::-1], axis=1)",
             "last_B = jnp.argmax(mask_BxT, axis=1)", SFT),
    Mutation("cold_start_not_ordered", "r1jax/stages/cold_start_data.py",
             "chosen = curation_selection.select(kept, rates, cs.max_examples, cs.per_prompt)",
             "chosen = kept[:cs.max_examples]", STAGES),
    Mutation("rejection_unfiltered", "r1jax/stages/rejection_sampling.py",
             "kept, counts = curation_filters.filter_samples(reasoning, fcfg)",
             "kept, counts = curation_filters.filter_samples(reasoning, fcfg, ('duplicate',))", STAGES),
    Mutation("sft_from_the_rl_policy", "r1jax/stages/__init__.py",
             "Stage(\"sft\", sft.run, \"sft\", {\"policy\": \"pretrain.policy\"",
             "Stage(\"sft\", sft.run, \"sft\", {\"policy\": \"reasoning_rl.policy\"", STAGES),
    Mutation("rl_all_reward_model_on_reasoning_rows", "r1jax/stages/rl_all.py",
             "return np.where([e.get(\"task\") == general.TASK for e in exs], s, 0.0)", "return s", STAGES),
    Mutation("pipeline_never_skips", "r1jax/pipeline.py", "if rec is not None and rec[\"fingerprint\"] == fp:",
             "if False:", STAGES),
    # ---- LoRA (r1jax/model/lora.py and its hooks)
    Mutation("lora_reference_is_the_adapted_policy", _UPDATE,
             "reference = state.frozen if state.frozen is not None and gcfg.beta > 0 else state.ref_params",
             "reference = state.policy() if state.frozen is not None and gcfg.beta > 0 else state.ref_params", LORA),
    Mutation("lora_scale_dropped_in_the_model", "r1jax/model/lora.py",
             "extra = {k: scaled(v) if k.endswith(\"_lora_b\") else v", "extra = {k: v if k.endswith(\"_lora_b\") else v",
             LORA),
    Mutation("lora_merge_drops_scale", "r1jax/model/lora.py",
             "w = w + scale * _low_rank(", "w = w + _low_rank(", LORA),
    Mutation("lora_int8_scale_not_applied", "r1jax/model/transformer.py", "    out = out * w[f\"{name}_qscale\"]", "    out = out",
             LORA),
    Mutation("lora_fused_decode_skips_adapters", "r1jax/model/transformer.py",
             "q, k, v = (x + _lora(h, w, n, \"btd,dnh->btnh\")", "q, k, v = (x + 0 * _lora(h, w, n, \"btd,dnh->btnh\")",
             LORA),
    Mutation("lora_rollout_merge_subtracts", "r1jax/model/lora.py",
             "out[name] = (layers[name].astype(jnp.float32) + _low_rank(", "out[name] = (layers[name].astype(jnp.float32) - _low_rank(",
             LORA_ROLLOUT),
    Mutation("lora_rollout_merges_only_q", "r1jax/model/lora.py",
             "if f\"{n}_lora_a\" in layers and f\"{n}_qscale\" not in layers]",
             "if f\"{n}_lora_a\" in layers and f\"{n}_qscale\" not in layers][:1]", LORA_ROLLOUT),
    Mutation("lora_rollout_merges_an_int8_base", "r1jax/model/lora.py",
             "if f\"{n}_lora_a\" in layers and f\"{n}_qscale\" not in layers]", "if f\"{n}_lora_a\" in layers]",
             LORA_ROLLOUT),
    Mutation("lora_rollout_never_merged", "r1jax/sampling/sampler.py", "  if scfg.merge_lora:\n", "  if False:\n",
             LORA_ROLLOUT),
]


# ---- sampling.rollout_weights: the rollout's 8-bit copy of the projections
ROLLOUT_W = ("tests/test_rollout_weights.py",)
MUTATIONS += [
    Mutation("rollout_weights_scale_forgotten", "r1jax/sampling/sampler.py",
             "layers[name], layers[f\"{name}_qscale\"] = lora.quantize(layers[name], in_dims, qdtype)",
             "layers[name], _ = lora.quantize(layers[name], in_dims, qdtype)", ROLLOUT_W),
    Mutation("rollout_weights_scale_wrong_axis", "r1jax/model/lora.py", "  axes = tuple(range(1, 1 + in_dims))\n  w32",
             "  axes = tuple(range(2, 2 + in_dims))\n  w32", ROLLOUT_W),
    Mutation("rollout_weights_fp8_scaled_to_127", "r1jax/model/lora.py",
             "qmax = float(jnp.iinfo(dtype).max if integer else jnp.finfo(dtype).max)", "qmax = 127.0", ROLLOUT_W),
    Mutation("rollout_weights_fp8_rounded_to_integers", "r1jax/model/lora.py",
             "jnp.clip(jnp.round(y) if integer else y,", "jnp.clip(jnp.round(y),", ROLLOUT_W),
    Mutation("rollout_weights_cast_back_in_decode_weights", "r1jax/sampling/sampler.py",
             "if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize > 1 else a, params)",
             "if jnp.issubdtype(a.dtype, jnp.number) else a, params)", ROLLOUT_W),
    Mutation("rollout_weights_cast_back_in_prefill", "r1jax/sampling/sampler.py",
             "  params = decode_weights(params, cfg, scfg)\n",
             "  params = jax.tree.map(lambda a: a.astype(cfg.compute_dtype), decode_weights(params, cfg, scfg))\n",
             ROLLOUT_W),
]


# ---- the embedded world of issue 14 (chains, traces, second language), behaviour metrics, sweeps
_CHAINS, _TRACES, _LANG2 = "r1jax/tasks/chains.py", "r1jax/tasks/traces.py", "r1jax/tasks/second_language.py"
_BEHAVIOUR, _SWEEP = "r1jax/evaluation/behaviour.py", "r1jax/sweep.py"
WORLD = ("tests/test_world.py",)
MUTATIONS += [
    Mutation("world_question_drops_last_step", _CHAINS, "for i, (op, b) in enumerate(ops):",
             "for i, (op, b) in enumerate(ops[:-1]):", WORLD),
    Mutation("world_splits_overlap", _CHAINS, "return ex[num_eval:], ex[:num_eval]",
             "return ex[num_eval:], ex[-num_eval:]", WORLD),
    Mutation("world_chain_values_reach_zero", _CHAINS, "for b in range(1, max_operand + 1) if b < v]",
             "for b in range(1, max_operand + 1) if b <= v]", WORLD),
    Mutation("traces_control_recomputes_right", _TRACES, "fix = _slip(steps, k, rng, avoid=(shown,)) if control else r",
             "fix = r", WORLD),
    Mutation("traces_rate_not_p", _TRACES, "if u < traces.reflect_rate:", "if u < 0.5 * traces.reflect_rate:", WORLD),
    Mutation("traces_restart_share_inverted", _TRACES, "kind = (\"restart\" if v < traces.restart_share else",
             "kind = (\"restart\" if v > traces.restart_share else", WORLD),
    Mutation("traces_confirm_slips", _TRACES, "shown = r if kind == \"confirm\" else _slip(steps, k, rng)",
             "shown = _slip(steps, k, rng)", WORLD),
    Mutation("traces_check_drops_a_step", _TRACES, "_say(fixed[1:])", "_say(fixed[2:])", WORLD),
    Mutation("traces_slip_not_carried", _TRACES, "first = steps[:k] + [(a, op, b, shown)] + _continue(steps, k, shown)",
             "first = steps[:k] + [(a, op, b, shown)] + steps[k + 1:]", WORLD),
    Mutation("traces_minority_language_inverted", _TRACES, "lang = \"el\" if rng.random() < traces.minority_share",
             "lang = \"el\" if rng.random() > traces.minority_share", WORLD),
    Mutation("second_language_capitals_stay_latin", _LANG2, "TO_GREEK.get(c.lower(), c) if c.isascii() else c",
             "TO_GREEK.get(c, c)", WORLD),
    Mutation("behaviour_conditional_swapped", _BEHAVIOUR, "f\"p_correct_given_{name}\": _mean(correct_N[flag_N])",
             "f\"p_correct_given_{name}\": _mean(correct_N[~flag_N])", ("tests/test_behaviour.py",) + WORLD),
    Mutation("behaviour_length_groups_swapped", _BEHAVIOUR, "\"mean_length_wrong\": _mean(lengths_N[~correct_N])",
             "\"mean_length_wrong\": _mean(lengths_N[correct_N])", ("tests/test_behaviour.py",)),
    Mutation("behaviour_no_words_off_target", _BEHAVIOUR, "[1.0 if s is None else s for s in shares]",
             "[0.0 if s is None else s for s in shares]", ("tests/test_behaviour.py",)),
    Mutation("behaviour_pure_counted_mixed", _BEHAVIOUR, "\"mixed_rate\": _mean((shares > 0) & (shares < 1))",
             "\"mixed_rate\": _mean((shares >= 0) & (shares < 1))", ("tests/test_behaviour.py",) + WORLD),
    Mutation("sweep_never_skips", _SWEEP, "  if (d / SUMMARY).exists():\n    return \"skipped\"",
             "  if False:\n    return \"skipped\"", ("tests/test_sweep.py",)),
    Mutation("sweep_index_runs_all", _SWEEP, "todo = range(len(sweep)) if index is None else [index]",
             "todo = range(len(sweep))", ("tests/test_sweep.py",)),
    Mutation("sweep_error_kept_after_retry", _SWEEP, "(d / ERROR).unlink(missing_ok=True)", "pass",
             ("tests/test_sweep.py",)),
    Mutation("sweep_report_before_all_done", _SWEEP,
             "if fresh and all(status(root, sweep, i) == \"done\" for i in range(len(sweep))):", "if fresh:",
             ("tests/test_sweep.py",)),
    Mutation("sweep_bools_tabulated", _SWEEP, "elif isinstance(v, (int, float)) and not isinstance(v, bool):",
             "elif isinstance(v, (int, float)):", ("tests/test_sweep.py",)),
]


# ---- issue 29: bad inputs, checkpoints that know their config, damaged checkpoints
_BAD = "tests/test_bad_inputs.py::test_"
TABLE = _BAD + "bad_input_is_one_line_naming_it_with_status_2"
_DAMAGED = ("tests/test_checkpoint.py::test_a_damaged_newest_step_falls_back_to_the_newest_intact_one",
            "tests/test_checkpoint.py::test_several_damaged_steps_and_none_readable")
MUTATIONS += [
    Mutation("bad_input_fingerprint_check_dropped", "r1jax/workdir.py", "  change = check(cfg)\n", "  change = None\n",
             (_BAD + "a_changed_config_is_refused_and_resume_weights_continues", TABLE)),
    Mutation("bad_input_nan_let_through", "r1jax/config_sections.py",
             "if isinstance(v, float) and not math.isfinite(v):", "if False:",
             (_BAD + "no_float_field_takes_nan_or_inf", TABLE)),
    Mutation("bad_input_damaged_step_taken", "r1jax/checkpoint.py", "for step in reversed(self.all_steps()):",
             "for step in reversed(self.all_steps()[-1:]):", _DAMAGED),
    Mutation("bad_input_logs_kept_past_the_restored_step", "r1jax/logger.py",
             "if isinstance(row, dict) and row.get(\"step\", 0) <= step:", "if isinstance(row, dict):",
             ("tests/test_checkpoint.py::test_a_resumed_run_logs_each_step_once",)),
    Mutation("bad_input_safetensors_size_unchecked", "r1jax/model/hf_files.py", "  if 8 + n + end > size:",
             "  if False:", (TABLE,)),
    Mutation("bad_input_gzip_magic_unchecked", "r1jax/datasets.py", "  if magic != b\"\\x1f\\x8b\":", "  if False:",
             (TABLE,)),
]


# ---- issue 30: evaluation you can publish, the grader's solution lists
_EVAL = "tests/test_evaluate.py::test_"
MUTATIONS += [
    Mutation("eval_too_long_problems_dropped", "r1jax/evaluation/harness.py",
             "      if i not in graded:  # longer than the model's context: wrong, counted\n",
             "      if i not in graded:  # longer than the model's context: wrong, counted\n        continue\n",
             (_EVAL + "no_problem_is_dropped",)),
    Mutation("eval_rows_shifted_between_problems", "r1jax/evaluation/harness.py",
             "rows_i = range(j * k, (j + 1) * k)", "rows_i = range(j, j + k)",
             (_EVAL + "rows_keep_their_problems_through_slots_and_calls",)),
    Mutation("grader_solution_list_keeps_the_variable", "r1jax/rewards/solutions.py", "    out.append(rest)\n",
             "    out.append(item)\n", ("tests/test_rewards.py::test_solution_lists_against_math_verify",)),
]

def check_snippets(root: pathlib.Path = REPO) -> list[str]:
  """Problems: snippets not found exactly once, replacements equal to the original, duplicate names."""
  problems = []
  names = [m.name for m in MUTATIONS]
  problems += [f"duplicate name {n}" for n in sorted({n for n in names if names.count(n) > 1})]
  for m in MUTATIONS:
    text = (root / m.path).read_text()
    if text.count(m.old) != 1:
      problems.append(f"{m.name}: snippet occurs {text.count(m.old)} times in {m.path}: {m.old!r}")
    if m.old == m.new:
      problems.append(f"{m.name}: replacement equals the original")
    for t in m.tests:
      file, _, test = t.partition("::")
      if not (root / file).is_file() or (test and f"def {test}(" not in (root / file).read_text()):
        problems.append(f"{m.name}: no test {t}")
  return problems


def _copy_repo(dst: pathlib.Path):
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split()
  for f in files:
    src = REPO / f
    if src.is_file() and (f.startswith(("r1jax/", "tests/", "experiments/")) or "/" not in f):
      (dst / f).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(src, dst / f)


def _pytest(root: pathlib.Path, tests, timeout_s: float, *flags) -> tuple[int | None, float, str]:
  """(return code or None on timeout, seconds, the first failing test or pytest's last line)."""
  env = dict(os.environ, PYTHONPATH=str(root),
             R1JAX_SHARED_DATA=os.environ.get("R1JAX_SHARED_DATA", str(REPO.parent / "shared" / "data")))
  t0 = time.perf_counter()
  try:
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *flags, *tests],
                         cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return None, time.perf_counter() - t0, ""
  lines = out.stdout.strip().splitlines()
  failed = [l for l in lines if l.startswith(("FAILED", "ERROR"))]
  return out.returncode, time.perf_counter() - t0, (failed[0] if failed else (lines[-1] if lines else ""))


def baseline(todo, timeout_s: float) -> None:
  """Every selected test passes on the unmutated code; otherwise a failure would count as a catch."""
  tests = sorted({t for m in todo for t in m.tests})
  with tempfile.TemporaryDirectory(prefix="mut_baseline_") as d:
    _copy_repo(pathlib.Path(d))
    rc, dt, last = _pytest(pathlib.Path(d), tests, timeout_s)
  if rc != 0:
    raise SystemExit(f"baseline: the selected tests do not pass on the unmutated code ({last}); fix that first")
  print(f"baseline  {dt:6.0f}s  {len(tests)} selections pass unmutated: {last}", flush=True)


def run(m: Mutation, timeout_s: float) -> tuple[str, float, str]:
  """('caught' | 'MISSED' | 'timeout', seconds, the first failing test or pytest's last line)."""
  with tempfile.TemporaryDirectory(prefix=f"mut_{m.name}_") as d:
    root = pathlib.Path(d)
    _copy_repo(root)
    target = root / m.path
    text = target.read_text()
    if text.count(m.old) != 1:
      raise SystemExit(f"{m.name}: snippet not found exactly once in {m.path}; update MUTATIONS")
    target.write_text(text.replace(m.old, m.new))
    rc, dt, first = _pytest(root, m.tests, timeout_s, "-x")
  return ("timeout" if rc is None else "caught" if rc != 0 else "MISSED"), dt, first


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("-k", default="", help="only mutations whose name contains one of these (comma-separated)")
  ap.add_argument("--list", action="store_true")
  ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation")
  ap.add_argument("--jobs", type=int, default=1, help="mutations tested at the same time")
  ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selections")
  args = ap.parse_args()
  problems = check_snippets()
  if problems:
    raise SystemExit("\n".join(problems))
  todo = [m for m in MUTATIONS if any(k in m.name for k in args.k.split(","))]
  if args.list:
    for m in todo:
      print(f"{m.name:40s} {m.path:32s} {' '.join(m.tests)}")
    return
  if not args.no_baseline:
    baseline(todo, args.timeout)
  results = []
  with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
    for m, (status, dt, first) in zip(todo, pool.map(lambda m: run(m, args.timeout), todo)):
      results.append((m, status, dt, first))
      print(f"{status:8s} {dt:6.0f}s  {m.name:40s} {first}", flush=True)
  caught = sum(s == "caught" for _, s, _, _ in results)
  print(f"\n| mutation | file | issue | result | first failing test |\n|---|---|---|---|---|")
  for m, s, dt, first in results:
    print(f"| {m.name} | {m.path} | {'yes' if m.issue else ''} | {s} | {first.removeprefix('FAILED ')[:110]} |")
  print(f"\n{caught} of {len(results)} caught, {len(results) - caught} missed")
  sys.exit(0 if caught == len(results) else 1)


if __name__ == "__main__":
  main()
