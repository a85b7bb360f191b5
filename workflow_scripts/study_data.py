"""A variant's training file.  Rule `study_data` (rules/organism_study.smk)."""
from icet.toy.study import derive_data

derive_data(snakemake.input[0], snakemake.output[0], snakemake.params.transform,
            seed=snakemake.params.seed, log=snakemake.log[0])
