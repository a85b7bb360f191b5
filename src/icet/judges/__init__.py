"""Judges of VLM responses: guard (ASR), toxicity (TS), reward (TR), refusal keywords, the
HarmBench classifier (a second ASR) and the VQA utility judge.

Each module wraps one kind of model behind a loader that takes a local folder or file, so
the same code runs the real checkpoints and the toy judges built by `icet.toy.judges`, and
registers a plug-in (icet.judges.base) that the scorer, the workflow and the tables loop over.
"""
