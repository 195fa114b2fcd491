# Every student run: the baselines (fp, distill, pm), qt, qd, dq and any custom method. What a run
# reads (the teacher, a source student) comes from the method registry, so a new method needs no rule.


rule student:
    input:
        unpack(student_inputs),
    output:
        metrics=RUN_DIR + "/metrics.json",
        model=RUN_DIR + "/model.qda",
        history=RUN_DIR + "/history.csv",
    log:
        RUN_DIR + "/log.txt",
    wildcard_constraints:
        model="|".join(STUDENTS),
    params:
        spec=spec_json,
        out=lambda w, output: str(Path(output.metrics).parent),
        folders=lambda w, input: folder_args(input),
    threads: CFG["train"]["threads"]
    shell:
        "qd train --spec {params.spec:q} --data {input.data} --out {params.out} {params.folders} > {log} 2>&1"
