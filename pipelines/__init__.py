"""Config-driven jobs composed from the daskgmm library (read → fit → write → report).

Each pipeline is a plain function taking a validated job configuration; the job
runner and the registry of pipelines arrive with the job-runner work (issue 4).
"""
