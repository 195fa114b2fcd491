# Prepare each task's dataset once; every run of the task reads it.


rule data:
    output:
        manifest=str(data_file(RESULTS, "{task}")),
    log:
        RESULTS + "/{task}/data/log.txt",
    params:
        spec=lambda w: DATA_SPEC_FILES[w.task],
    shell:
        "qd data --spec {params.spec} --out {output.manifest} > {log} 2>&1"
