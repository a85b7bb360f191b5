# The ICET sweep: every model x test set x encoder layer. A job takes a chunk of layers
# (sweep.layers_per_job: loading a model costs more than a layer) and writes one shard per
# layer, atomically, with a fingerprint: a killed job loses only the layer it was on, and
# a rerun keeps every finished shard (icet.shards). Greedy decoding; the image and prompt
# never change, only the encoder layer whose features go through the frozen projector.
# sweep.engine picks the fast engine (icet.engine) or the naive reference loop.


# Why: ICET-l responses of the original model for one (model, test set, chunk of layers).
rule sweep_shard:
    input:
        model=lambda w: model_dir(w.model),
        data=lambda w: dataset(w.testset),
        gate=data_gate(),
    output:
        f"{RUN}/sweep/{{model}}/original/{{testset}}/chunk-{{chunk}}.json",
    log:
        f"{LOGS}/sweep_shard/{{model}}/original/{{testset}}/chunk-{{chunk}}.log",
    benchmark:
        f"{LOGS}/sweep_shard/{{model}}/original/{{testset}}/chunk-{{chunk}}.benchmark.tsv"
    params:
        variant="original",
        layers=lambda w: chunk_layers(w.model, w.chunk),
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        generation=config["generation"],
        prompt_suffix=lambda w: config["prompt_suffix"].get(w.testset, ""),
        engine=config["sweep"]["engine"],
        batch_size=config["sweep"]["batch_size"],
        seed=config["seed"],
        device=lambda w: job_device(config["device"], model_resources(w.model, "gpu")),
        prompting=lambda w: prompting_of(MODELS[w.model]),
        code=SWEEP_CODE_HASH,
    threads: 1
    resources:
        gpu=lambda w: model_resources(w.model, "gpu"),
        mem_mb=lambda w: model_resources(w.model, "mem_mb"),
        runtime=lambda w: model_resources(w.model, "runtime"),
        cpus_per_task=lambda w: model_resources(w.model, "cpus"),
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/sweep_shard.py"


# Why: the same sweep with the L-PPO adapter loaded: the aligned rows of Table 2.
rule evaluate_sweep:
    input:
        model=lambda w: model_dir(w.model),
        data=lambda w: dataset(w.testset),
        adapter=f"{RUN}/lppo/{{model}}/adapter",
    output:
        f"{RUN}/sweep/{{model}}/aligned/{{testset}}/chunk-{{chunk}}.json",
    log:
        f"{LOGS}/evaluate_sweep/{{model}}/aligned/{{testset}}/chunk-{{chunk}}.log",
    benchmark:
        f"{LOGS}/evaluate_sweep/{{model}}/aligned/{{testset}}/chunk-{{chunk}}.benchmark.tsv"
    params:
        variant="aligned",
        layers=lambda w: chunk_layers(w.model, w.chunk),
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        generation=config["generation"],
        prompt_suffix=lambda w: config["prompt_suffix"].get(w.testset, ""),
        engine=config["sweep"]["engine"],
        batch_size=config["sweep"]["batch_size"],
        seed=config["seed"],
        device=lambda w: job_device(config["device"], model_resources(w.model, "gpu")),
        prompting=lambda w: prompting_of(MODELS[w.model]),
        code=SWEEP_CODE_HASH,
    threads: 1
    resources:
        gpu=lambda w: model_resources(w.model, "gpu"),
        mem_mb=lambda w: model_resources(w.model, "mem_mb"),
        runtime=lambda w: model_resources(w.model, "runtime"),
        cpus_per_task=lambda w: model_resources(w.model, "cpus"),
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/sweep_shard.py"
