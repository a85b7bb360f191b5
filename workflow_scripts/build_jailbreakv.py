"""RT and MR from JailbreakV-28K.  Rule `build_jailbreakv` (rules/datasets.smk)."""
from pathlib import Path

from icet.chain import Job
from icet.paper_jobs import build_jailbreakv

job = Job(snakemake)  # inputs checked; an error ends the job's log

build_jailbreakv(
    snakemake.input.jbv,
    Path(snakemake.output.rt).parent,
    seed=snakemake.params.seed,
    rt_size=snakemake.params.rt_size,
    images_dir=snakemake.params.images_dir,
    rt_images=snakemake.params.rt_images,
    coco_dir=snakemake.input.get("coco"),
    mr_missing_images=snakemake.params.mr_missing_images,
    log=snakemake.log[0],
)
job.done()  # links: what the outputs were made from (icet.chain)
