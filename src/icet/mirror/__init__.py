"""A local mirror of every model, judge and data set config.yaml names, in the real layouts.

The rehearsal (`make rehearsal`, docs/rehearsal.md) runs the paper config end to end on a
CPU against it: the real download code reads the Hub-layout cache through
`snapshot_download` (HF_HUB_OFFLINE=1, HF_HOME pointed at the mirror) and fetches the URL
downloads from a local HTTP server. Weights are tiny and random but of each real
architecture; texts use a fictional vocabulary (no harmful text). One module per source
family: hub (the cache layout), data (data sets), models (the VLMs), judges (the judges);
server serves the URL files, build puts it all together, layout checks it against README.md
(beside this file), rehearse runs the DAG on it.
"""
