# One teacher per task, trained once and shared by every student and seed. The same rule as `student`
# (one command, one spec) under a name of its own only so that a cluster profile can give teachers
# their own resources (workflow/profiles/slurm: set-resources by rule name; teachers are the largest
# nets and train longest) and the log names teacher jobs as such.


use rule student as teacher with:
    wildcard_constraints:
        model=alternatives(TEACHERS),
        method="fp|pretrained",
        variant="fp32",


# The teacher's logits on K fixed crop + flip views of every training image (distill.teacher_views: K,
# qd/teacher_views.py): computed once per teacher, beside its model, and declared as an input of every
# run that reads it (run_inputs), so a retrained teacher or re-prepared data recomputes it.
rule teacher_views:
    input:
        model=RUN_DIR + "/model.qda",
        data=lambda w: str(data_file(RESULTS, w.task)),
    output:
        views=RUN_DIR + "/" + views_file("{views}"),
    log:
        RUN_DIR + "/" + views_file("{views}") + ".log",
    wildcard_constraints:
        model=alternatives(TEACHERS),
        method="fp|pretrained",
        variant="fp32",
        views=r"[1-9]\d*",
    params:
        spec=lambda w: SPEC_FILES[run_of(w)],
    threads: lambda w: SPECS[run_of(w)]["threads"]
    resources:
        gpu=lambda w: 0 if SPECS[run_of(w)]["device"] == "cpu" else 1,
    shell:
        "python -m qd.teacher_views --spec {params.spec} --teacher {input.model} --data {input.data} "
        "--views {wildcards.views} --out {output.views} > {log} 2>&1"
