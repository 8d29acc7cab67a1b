"""Rule-based rewards, pure `fn(completion, example) -> float`, and the one answer grader.

answer      grading of final answers (numbers exactly, LaTeX via math-verify)
extraction  a completion's final answer (<answer>, \\boxed{}, or its last number)
normalize   an answer's exact number and the key majority voting groups by
solutions   one variable's solutions (equation lists, solution sets) as math-verify's sets
time_limit  calls under a wall-clock limit (a child process killed on overrun, or a timer)
format      R1 template format: strict, lenient, open-r1 tag count
language    language consistency of the chain of thought
length      DAPO soft overlong punishment (tokens)
aha         reflection / restart / uncertainty phrase rates
code        the code checker: a completion's program against its task's tests (passed / failed / ...)
sandbox     one fresh, limited, namespaced process per program (what each limit enforces: its docstring)
combine     the standard reward functions, RewardSpec, parallel time-limited compute_rewards
"""
