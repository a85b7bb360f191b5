"""Benchmarks, run by hand (never a timed test); `python -m icet.bench --help` lists them.

- `gpu-sweep` (gpu_sweep): both engines on a random LLaVA-1.5-7B, tokens/s, peak memory and
  the decode step's HBM roofline fraction.
- `lppo-step` (lppo_step): one L-PPO step on the same model with LoRA, peak memory and time.
- `memory` (memory): icet.memory's predicted peaks beside measured ones, full size on a GPU
  (random LLaVA-1.5-7B and Llama-3.2-11B-Vision), scaled down on a CPU.

The GPU ones take `--size tiny` to run the same code on a CPU in seconds. Imports are lazy
(torch, transformers, peft, accelerate only): the device image has nothing else. The naive
vs fast engine on the toy organism, on a CPU, is the toy's own bench (icet.toy.bench).
"""
