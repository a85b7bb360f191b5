"""A variant's training file.  Rule `study_data` (rules/organism_study.smk)."""
from icet.chain import Job
from icet.toy.study import derive_data

job = Job(snakemake)  # inputs checked; an error ends the job's log

derive_data(snakemake.input[0], snakemake.output[0], snakemake.params.transform,
            seed=snakemake.params.seed, log=snakemake.log[0])
job.done()  # links: what the outputs were made from (icet.chain)
