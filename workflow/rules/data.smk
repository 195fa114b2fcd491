# Prepare each task's dataset once: train/val/test tensors every run of the task reads.


rule data:
    output:
        split=str(data_file(RESULTS, "{task}")),
        manifest=RESULTS + "/{task}/data/manifest.json",
    log:
        RESULTS + "/{task}/data/log.txt",
    params:
        spec=lambda w: json.dumps(CFG["tasks"][w.task]["dataset"], sort_keys=True),
    shell:
        "qd data --spec {params.spec:q} --out {output.split} > {log} 2>&1"
