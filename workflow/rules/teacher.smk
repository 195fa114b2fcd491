# One teacher per task, trained once and shared by every student and seed.


rule teacher:
    input:
        data=lambda w: str(data_file(RESULTS, w.task)),
    output:
        metrics=RUN_DIR + "/metrics.json",
        model=RUN_DIR + "/model.qda",
        history=RUN_DIR + "/history.csv",
    log:
        RUN_DIR + "/log.txt",
    wildcard_constraints:
        model="|".join(TEACHERS),
        method="fp",
        variant="fp32",
    params:
        spec=spec_json,
        out=lambda w, output: str(Path(output.metrics).parent),
    threads: CFG["train"]["threads"]
    shell:
        "qd train --spec {params.spec:q} --data {input.data} --out {params.out} > {log} 2>&1"
