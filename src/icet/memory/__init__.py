"""GPU memory of the workflow's jobs, predicted without a GPU and checked against measurement.

- `arch`: shapes and parameter counts of the paper's architectures from a config.json dict;
- `paper`: the real full-size config.json values, with their sources;
- `model`: each job's phases as sums of the tensors its code holds (sweep, L-PPO, judges)
  and the fast engine's batch plan (`sweep_plan`);
- `jobs`: every GPU rule's jobs for a run config (the `icet memory` table, the rules'
  `gpu_mem_mb` floor) and the check a job runs before it loads;
- `measure`: the CPU allocator's peak, what tests/memory and `icet.bench memory` compare with.

Everything but `measure` imports neither torch nor transformers: the workflow uses it at
parse time. docs/performance.md has the table and the validation.
"""
