# The ICET sweep: every model x test set x encoder layer. A job takes a chunk of layers
# (sweep.layers_per_job: loading a model costs more than a layer) and writes one shard per
# layer, atomically, with a fingerprint: a killed job loses only the layer it was on, and
# a rerun keeps every finished shard (icet.shards). Greedy decoding; the image and prompt
# never change, only the encoder layer whose features go through the frozen projector.
# sweep.engine picks the fast engine (icet.engine) or the naive reference loop.


# Why: ICET-l responses for one (model, variant, test set, chunk of layers). The original
# variant is the checkpoint as released; aligned loads the L-PPO adapter on top of it (the
# aligned rows of Table 2).
rule sweep_shard:
    input:
        unpack(sweep_inputs),
    output:
        f"{RUN}/sweep/{{model}}/{{variant}}/{{testset}}/chunk-{{chunk}}.json",
    log:
        f"{LOGS}/sweep_shard/{{model}}/{{variant}}/{{testset}}/chunk-{{chunk}}.log",
    benchmark:
        f"{LOGS}/sweep_shard/{{model}}/{{variant}}/{{testset}}/chunk-{{chunk}}.benchmark.tsv"
    params:
        layers=lambda w: chunk_layers(w.model, w.chunk),
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        max_new_tokens=config["generation"]["max_new_tokens"],
        prompt_suffix=lambda w: prompt_suffix(w.testset),
        seed=config["seed"],
        prompting=lambda w: prompting_of(MODELS[w.model]),
        code=SWEEP_CODE_HASH,
        # speed and placement: no rerun (a shard's fingerprint records what changes bytes)
        tuning=tuning(lambda w: {"engine": config["sweep"]["engine"],
                                 "engine_batch_size": config["sweep"]["batch_size"],
                                 "batch_size": config["generation"]["batch_size"],
                                 "device": model_device(w.model)}),
    threads: 1
    resources:
        gpu=lambda w: model_resources(w.model, "gpu"),
        mem_mb=lambda w: model_resources(w.model, "mem_mb"),
        runtime=lambda w: model_resources(w.model, "runtime"),
        cpus_per_task=lambda w: model_resources(w.model, "cpus"),
        nodes=1,
        gpu_model=lambda w: gpu_placement(MODELS[w.model]["resources"], "gpu_model"),
        constraint=lambda w: gpu_placement(MODELS[w.model]["resources"], "constraint"),
        gpu_mem_mb=lambda w: gpu_floor_mb("sweep_shard", w.model),
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/sweep_shard.py"
