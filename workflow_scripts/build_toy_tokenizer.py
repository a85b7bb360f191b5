"""The toy word-level tokenizer.  Rule `build_toy_tokenizer` (rules/toy.smk)."""
from icet.chain import Job
from icet.toy.tokenizer import build_word_tokenizer_from_file

job = Job(snakemake)  # inputs checked; an error ends the job's log

build_word_tokenizer_from_file(snakemake.input.vocabulary, snakemake.output[0], log=snakemake.log[0])
job.done()  # links: what the outputs were made from (icet.chain)
