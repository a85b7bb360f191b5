# L-PPO: PPO whose rollouts and ratios use layer-l features (layer drawn per sample as the
# config says); encoder and projector frozen, LoRA on the LM. Resumes from its last
# checkpoint if the job is killed. One trainer process per GPU (resources.gpu > 1: torchrun,
# icet.lppo.launch); resources.processes overrides the count.


# Why: the paper's fix, trained on RT with the TR reward model minus a KL penalty.
rule lppo_train:
    input:
        model=lambda w: model_dir(w.model),
        data=dataset(config["train_set"]),
        reward=judge_path("reward"),
    output:
        adapter=directory(f"{RUN}/lppo/{{model}}/adapter"),
        metrics=f"{RUN}/lppo/{{model}}/metrics.csv",
    log:
        f"{LOGS}/lppo_train/{{model}}.log",
    benchmark:
        f"{LOGS}/lppo_train/{{model}}.benchmark.tsv"
    params:
        params=lambda w: lppo_params(w.model),
        reward=RESULT_CONFIG["judges"]["reward"],
        seed=lppo_seed(),
        workdir=lambda w: f"{RUN}/lppo/{w.model}",
        prompting=lambda w: prompting_of(MODELS[w.model]),
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        processes=lambda w: lppo_processes(w.model),
        # batch sizes, checkpointing, the device: no rerun, and a resume may change them
        tuning=tuning(lambda w: {"lppo": TUNING_CONFIG["lppo"],
                                 "reward": TUNING_CONFIG["judges"]["reward"],
                                 "device": model_device(w.model)}),
    threads: 1
    resources:
        gpu=lambda w: model_resources(w.model, "gpu"),
        # each trainer process loads its own model and reward model into host memory first
        mem_mb=lambda w: model_resources(w.model, "mem_mb") * lppo_processes(w.model),
        runtime=lambda w: 4 * model_resources(w.model, "runtime"),
        cpus_per_task=lambda w: model_resources(w.model, "cpus"),
        nodes=1,
        gpu_model=lambda w: gpu_placement(MODELS[w.model]["resources"], "gpu_model"),
        constraint=lambda w: gpu_placement(MODELS[w.model]["resources"], "constraint"),
        gpu_mem_mb=lambda w: gpu_floor_mb("lppo_train", w.model),
    conda:
        "../envs/torch.yaml"
    script:
        "../workflow_scripts/lppo_train.py"


# Why: the issue's proof that L-PPO learns: ASR at the layers it trained on, before vs after,
# with CIs. Run from the pre-safety toy (toy/presafety.yaml, target `learning`) it must fall
# by at least half; the safety-tuned toy has nothing to repair (it says so).
rule lppo_learning:
    input:
        scores=lambda w: safety_scores(w.model),
    output:
        md=f"{RUN}/lppo/{{model}}/learning.md",
        json=f"{RUN}/lppo/{{model}}/learning.json",
    log:
        f"{LOGS}/lppo_learning/{{model}}.log",
    params:
        params=lambda w: lppo_params(w.model),
        num_layers=lambda w: MODELS[w.model]["num_layers"],
        default_layer=lambda w: default_layer(w.model),
        report=report_params(),
    conda:
        "../envs/report.yaml"
    script:
        "../workflow_scripts/lppo_learning.py"
